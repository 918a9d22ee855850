"""The one exception tree of cipherspark.

Every error the library raises on purpose is a :class:`CipherSparkError`; third-party errors are
wrapped at the boundary (``raise ... from exc``) so callers catch one base class. The CLI turns any
of them into one line on stderr and a non-zero exit code; it never shows a traceback for them.

::

    CipherSparkError
    ├── UsageError              bad arguments or options (exit code 2)
    ├── InputError              an input is missing, unreadable, or not what it should be
    │   └── NotEncryptedError   the bytes are not a cipherspark container at all
    ├── OutputExistsError       the output exists and overwriting was not asked for
    ├── FormatError             a container header is malformed or of an unknown version
    ├── IntegrityError          authentication failed: tampered, truncated, reordered or wrong key
    ├── KmsError                anything the key management service refuses
    │   ├── CredentialsError    the APP ID / API KEY do not open this keystore
    │   ├── KeyNotFoundError    no primary key of that name
    │   ├── KeyExistsError      a primary key of that name exists already
    │   ├── PermissionDeniedError   not permitted to this credential (HTTP 403)
    │   ├── KeyStateError       the key is disabled, pending deletion, or the version is retired
    │   ├── RateLimitedError    the KMS throttles logins after too many failures (HTTP 429)
    │   ├── StoreChangedError   the KMS server's database or audit log was edited outside it
    │   ├── DatasetConflictError    the dataset registry changed since the writer read it
    │   └── KmsUnavailableError the KMS cannot be reached or is not supported here
    │       ├── KmsTlsError     the server's TLS certificate does not match the pinned CA
    │       └── KmsServerError  the KMS server failed (HTTP 5xx)
    ├── AttestationError        TEE evidence cannot be produced, parsed or verified
    │   └── PolicyDeniedError   verified evidence does not satisfy the key's release policy
    ├── JobError                a Spark job failed (the Spark message is summarised)
    ├── ClusterError            a standalone cluster could not be started, found or stopped
    └── VerificationError       a result did not match what it was checked against

Messages are meant for users: one sentence, naming the file or key concerned, never containing
key material.

An attestation failure carries a :class:`DenialReason` (``exc.reason``). It survives pickling, and
it is also written as a note (PEP 678) under the message, so that a process which only sees the
printed traceback of another one (a Spark driver reading a Python worker's failure) can get it
back with :meth:`AttestationError.reason_in`.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

__all__ = [
    "AttestationError",
    "CipherSparkError",
    "ClusterError",
    "CredentialsError",
    "DatasetConflictError",
    "DenialReason",
    "FormatError",
    "InputError",
    "IntegrityError",
    "JobError",
    "KeyExistsError",
    "KeyNotFoundError",
    "KeyStateError",
    "KmsError",
    "KmsServerError",
    "KmsTlsError",
    "KmsUnavailableError",
    "NotEncryptedError",
    "OutputExistsError",
    "PermissionDeniedError",
    "PolicyDeniedError",
    "RateLimitedError",
    "StoreChangedError",
    "UsageError",
    "VerificationError",
]


class CipherSparkError(Exception):
    """Base class of every error cipherspark raises on purpose."""

    exit_code: int = 1


class UsageError(CipherSparkError):
    """Arguments or options that cannot work together, or are out of range."""

    exit_code = 2


class InputError(CipherSparkError):
    """An input is missing, unreadable, or not of the expected kind."""


class NotEncryptedError(InputError):
    """The bytes do not start with the cipherspark container magic."""


class OutputExistsError(CipherSparkError):
    """The output path exists and overwriting was not requested."""


class FormatError(CipherSparkError):
    """A container header is malformed, or of a version or algorithm this build does not know."""


class IntegrityError(CipherSparkError):
    """Authenticated decryption failed.

    Raised for a flipped bit, truncation, extension, reordered, duplicated or dropped segments, an
    edited header, or the wrong key. No plaintext is released once this is raised.
    """


class KmsError(CipherSparkError):
    """The key management service refused or failed an operation."""


class CredentialsError(KmsError):
    """The APP ID / API KEY do not open the keystore (or are missing)."""


class KeyNotFoundError(KmsError):
    """No primary key has the requested name."""


class KeyExistsError(KmsError):
    """A primary key with the requested name exists already."""


class PermissionDeniedError(KmsError):
    """The credentials are valid but may not do this: the credential's role does not allow the
    operation, or the key is attested-only."""


class KeyStateError(KmsError):
    """The key cannot be used now: disabled, pending deletion, or the version is retired."""


class RateLimitedError(KmsError):
    """The KMS refuses logins for now (HTTP 429): too many failed logins from this source
    address or for this app id.

    ``retry_after`` is the number of seconds the server asked to wait (its ``Retry-After``), or
    ``None`` when it did not say. Not retried automatically: a client whose own logins fail
    would only keep the throttle closed.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt through __init__ with retry_after as an argument (pickling across Spark's
        # Python workers), like AttestationError's reason.
        message = str(self.args[0]) if self.args else ""
        return type(self), (message, self.retry_after), dict(self.__dict__)


class StoreChangedError(KmsError):
    """The KMS server's sealed store does not verify: a row fails its seal, the store seal does
    not match its rows, or the database and the audit log disagree (edited, mixed or rolled
    back outside the server). The server refuses to start, a restore is refused."""


class DatasetConflictError(KmsError):
    """A dataset registration lost its compare-and-swap: the record at the location is not the
    one the writer read (another writer committed first, or the record was moved), or the record
    would go back to an older generation. Nothing was registered."""


class KmsUnavailableError(KmsError):
    """The KMS cannot be reached, or its URL scheme is not supported."""


class KmsTlsError(KmsUnavailableError):
    """The KMS server's TLS certificate is not the one the client pins (or TLS failed)."""


class KmsServerError(KmsUnavailableError):
    """The KMS server answered with an internal error (HTTP 5xx)."""


class DenialReason(StrEnum):
    """Why TEE evidence was refused: the machine-readable part of an :class:`AttestationError`.

    A ``str`` enum, so ``exc.reason == "measurement"`` holds and the value is what the KMS server
    sends (``"reason"`` in its JSON answer) and writes to its audit log (``denied:<reason>``).
    """

    MEASUREMENT = "measurement"
    TCB_STATUS = "tcb_status"
    DEBUG = "debug"
    SVN = "svn"
    NONCE = "nonce"
    BINDING = "binding"
    TEE_TYPE = "tee_type"
    SIGNATURE = "signature"
    EXPIRED = "expired"
    NO_POLICY = "no_policy"
    #: No TEE (or no collateral source) is available here.
    UNAVAILABLE = "unavailable"


# The note under an attestation error's message (see the module docstring). It must not look like
# a "cipherspark.errors.X: message" line, which is what readers of tracebacks search for.
_REASON_NOTE = "attestation denial reason: "
_REASON_IN_TEXT = re.compile(re.escape(_REASON_NOTE) + r"([a-z_]+)")


class AttestationError(CipherSparkError):
    """TEE evidence could not be produced, parsed or verified, or a key release was refused.

    ``reason`` is a :class:`DenialReason` (given as one or as its string value). The default,
    ``signature``, is the most general refusal: evidence that does not verify.
    """

    def __init__(self, message: str, reason: DenialReason | str = DenialReason.SIGNATURE) -> None:
        super().__init__(message)
        self.reason = DenialReason(reason)
        self.add_note(_REASON_NOTE + self.reason.value)

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt through __init__ with the reason as an argument (not only as instance state),
        # so subclasses and any unpickler get a typed reason; the state keeps the notes.
        message = str(self.args[0]) if self.args else ""
        return type(self), (message, self.reason.value), dict(self.__dict__)

    @staticmethod
    def reason_in(text: str) -> DenialReason | None:
        """The reason noted in ``text`` (a printed traceback of this error), else ``None``.

        The last one counts, as in the traceback's last line. A value this build does not know
        gives ``None``.
        """
        found = _REASON_IN_TEXT.findall(text)
        if not found:
            return None
        try:
            return DenialReason(found[-1])
        except ValueError:
            return None


class PolicyDeniedError(AttestationError):
    """Evidence verified, but the key's release policy does not accept it (``reason`` says why)."""


class JobError(CipherSparkError):
    """A Spark job failed; the message carries Spark's reason, summarised."""


class ClusterError(CipherSparkError):
    """A standalone cluster could not be started, found, or stopped."""


class VerificationError(CipherSparkError):
    """A computed result did not match what it was checked against (e.g. the demo's check)."""
