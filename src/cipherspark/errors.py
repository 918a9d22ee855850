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
    │   ├── PermissionDeniedError   the key belongs to another application (HTTP 403)
    │   ├── KeyStateError       the key is disabled, pending deletion, or the version is retired
    │   └── KmsUnavailableError the KMS cannot be reached or is not supported here
    │       ├── KmsTlsError     the server's TLS certificate does not match the pinned CA
    │       └── KmsServerError  the KMS server failed (HTTP 5xx)
    ├── AttestationError        TEE evidence cannot be produced, parsed or verified
    │   └── PolicyDeniedError   verified evidence does not satisfy the key's release policy
    ├── JobError                a Spark job failed (the Spark message is summarised)
    └── VerificationError       a result did not match what it was checked against

Messages are meant for users: one sentence, naming the file or key concerned, never containing
key material.
"""

from __future__ import annotations

__all__ = [
    "AttestationError",
    "CipherSparkError",
    "CredentialsError",
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
    """The credentials are valid but the key belongs to another application."""


class KeyStateError(KmsError):
    """The key cannot be used now: disabled, pending deletion, or the version is retired."""


class KmsUnavailableError(KmsError):
    """The KMS cannot be reached, or its URL scheme is not supported."""


class KmsTlsError(KmsUnavailableError):
    """The KMS server's TLS certificate is not the one the client pins (or TLS failed)."""


class KmsServerError(KmsUnavailableError):
    """The KMS server answered with an internal error (HTTP 5xx)."""


class AttestationError(CipherSparkError):
    """TEE evidence could not be produced, parsed or verified, or a key release was refused.

    ``reason`` is a short machine-readable code (see :mod:`cipherspark.attestation`):
    ``measurement``, ``tcb_status``, ``debug``, ``svn``, ``nonce``, ``binding``, ``tee_type``,
    ``signature``, ``expired``, ``no_policy`` or ``unavailable`` (no TEE here).
    """

    def __init__(self, message: str, reason: str = "signature") -> None:
        super().__init__(message)
        self.reason = reason


class PolicyDeniedError(AttestationError):
    """Evidence verified, but the key's release policy does not accept it (``reason`` says why)."""


class JobError(CipherSparkError):
    """A Spark job failed; the message carries Spark's reason, summarised."""


class VerificationError(CipherSparkError):
    """A computed result did not match what it was checked against (e.g. the demo's check)."""
