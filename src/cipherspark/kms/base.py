"""The key management service interface every backend implements.

Envelope encryption: a *primary key* lives only inside the KMS; each file or dataset gets a fresh
256-bit *data key*, and only the data key wrapped by the primary key is stored (in the container
header) or travels (in Spark options and task closures). Backends are chosen by URL scheme with
:func:`cipherspark.kms.open_kms`.

:class:`KeyManagementService` declares everything callers use. What not every backend can do
(release policies, attested unwrap) are methods with a default that raises
:class:`~cipherspark.errors.KmsUnavailableError` saying a KMS server (``https://``) is needed;
backends override what they support. Every service is closable and a context manager.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Self

from cipherspark.errors import KmsUnavailableError, UsageError

if TYPE_CHECKING:
    from cipherspark.attestation import AttestationPolicy, EvidenceProvider
    from cipherspark.kms.registry import DatasetRecord

__all__ = [
    "Credentials",
    "DataKey",
    "KeyInfo",
    "KeyManagementService",
    "validate_key_name",
]

_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def validate_key_name(name: str) -> str:
    """Return ``name`` if it is a valid primary-key name, else raise :class:`UsageError`."""
    if not _KEY_NAME.fullmatch(name):
        raise UsageError(
            f"invalid key name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class Credentials:
    """An application's identity at the KMS: the APP ID and its API KEY (never printed)."""

    app_id: str
    api_key: str = field(repr=False)

    def __post_init__(self) -> None:
        if not self.app_id or not self.api_key:
            raise UsageError("both an APP ID and an API KEY are required")


@dataclass(frozen=True)
class KeyInfo:
    """Public facts about a primary key (never its bytes)."""

    name: str
    version: int
    created: str


@dataclass(frozen=True)
class DataKey:
    """A fresh data key: the plaintext (kept out of ``repr``) and its wrapped form."""

    key_id: str
    plaintext: bytes = field(repr=False)
    wrapped: bytes = field(repr=False)


class KeyManagementService(ABC):
    """Creates primary keys and wraps / unwraps data keys under them.

    Use it as a context manager, or call :meth:`close`, to release what the backend holds
    (connections of a server client).
    """

    @property
    @abstractmethod
    def url(self) -> str:
        """The URL that selects this KMS (no credentials in it)."""

    @abstractmethod
    def create_key(self, name: str) -> KeyInfo:
        """Create a new 256-bit primary key called ``name``."""

    @abstractmethod
    def list_keys(self) -> list[KeyInfo]:
        """All primary keys, sorted by name."""

    @abstractmethod
    def describe_key(self, name: str) -> KeyInfo:
        """Facts about primary key ``name``; :class:`KeyNotFoundError` if absent."""

    @abstractmethod
    def generate_data_key(self, key_id: str) -> DataKey:
        """A fresh random data key, with its wrapping under primary key ``key_id``."""

    def generate_wrapped_data_key(self, key_id: str) -> bytes:
        """Only the wrapped form of a fresh data key, for callers that must not see it.

        The Spark writer's driver side uses this: the plaintext is needed only by the tasks,
        which unwrap (or, with attested release, obtain) it themselves. A backend that can mint
        wrapped keys without revealing them overrides this.
        """
        return self.generate_data_key(key_id).wrapped

    @abstractmethod
    def unwrap_data_key(self, key_id: str, wrapped: bytes) -> bytes:
        """The data key inside ``wrapped``; :class:`IntegrityError` if it does not authenticate."""

    # -- closing --------------------------------------------------------------------------------

    def close(self) -> None:
        """Release what the backend holds; nothing by default. Closing twice is harmless."""
        # Not abstract on purpose: a backend holding nothing (the local keystore) needs no code.
        return None

    def __enter__(self) -> Self:
        """The service itself; :meth:`close` runs when the ``with`` block ends."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close on leaving the ``with`` block."""
        self.close()

    # -- optional capabilities: attested key release ------------------------------------------

    def _needs_server(self, what: str) -> KmsUnavailableError:
        return KmsUnavailableError(
            f"{what} needs a KMS server (https://); {self.url} does not support it"
        )

    def get_policy(self, key_id: str) -> AttestationPolicy | None:
        """``key_id``'s release policy, or ``None`` (none: attested unwraps are denied).

        :class:`KmsUnavailableError` where the backend keeps no release policies.
        """
        raise self._needs_server("a key release policy")

    def set_policy(self, key_id: str, policy: AttestationPolicy) -> AttestationPolicy:
        """Set ``key_id``'s release policy (replacing any); the backend's normalised copy.

        :class:`KmsUnavailableError` where the backend keeps no release policies.
        """
        raise self._needs_server("a key release policy")

    def check_attested_release(self, tee: str) -> None:
        """Refuse, before any evidence is made, what :meth:`attested_unwrap` would refuse for
        evidence from ``tee`` (a provider name such as ``gramine-sgx``, ``tdx``, ``auto`` or
        ``simulated``): :class:`KmsUnavailableError` where the backend cannot release keys to it.

        Opening a TEE's evidence source can fail, or create files (the simulated platform key),
        so callers ask this first.
        """
        raise self._needs_server("attested key release")

    def attested_unwrap(
        self,
        key_id: str,
        wrapped: bytes,
        provider: EvidenceProvider,
        *,
        collateral: str | None = None,
    ) -> bytes:
        """The data key in ``wrapped``, released only to TEE evidence ``key_id``'s policy accepts.

        ``provider`` makes the evidence, bound to a fresh nonce and ephemeral key; ``collateral``
        (DCAP, JSON) is passed to a verifier that takes it from the request. A refusal is
        :class:`~cipherspark.errors.PolicyDeniedError` with its reason;
        :class:`KmsUnavailableError` where the backend cannot release keys to TEEs.
        """
        raise self._needs_server("attested key release")

    # -- the dataset registry (cipherspark.kms.registry) ------------------------------------------

    def dataset_at(self, location: str) -> DatasetRecord | None:
        """The registered record at ``location`` (see :func:`~cipherspark.kms.registry.
        dataset_location`), or ``None`` when nothing is registered there."""
        raise self._needs_server("the dataset registry")

    def find_dataset(self, dataset_id: str) -> list[DatasetRecord]:
        """Every location where dataset ``dataset_id`` is registered (for messages: "it is
        registered at ..."), sorted by location; empty when nowhere."""
        raise self._needs_server("the dataset registry")

    def register_dataset(
        self,
        record: DatasetRecord,
        *,
        previous: DatasetRecord | None,
        wrapped_key: bytes,
        proof: bytes,
    ) -> None:
        """Make ``record`` the current one at ``record.location``, if the record there now is
        exactly ``previous`` (``None``: nothing is registered there); compare-and-swap.

        ``wrapped_key`` is the dataset's wrapped data key (its SHA-256 must be
        ``record.wrapped_key_sha256``) and ``proof`` its
        :func:`~cipherspark.kms.registry.registration_proof` over ``record`` and ``previous``:
        the backend unwraps the key itself and checks the proof. Refused with
        :class:`~cipherspark.errors.DatasetConflictError` when the record there is not
        ``previous``, or when ``record`` has the same dataset id as ``previous`` and a generation
        lower than its; :class:`~cipherspark.errors.IntegrityError` for a bad proof.
        """
        raise self._needs_server("the dataset registry")

    def move_dataset(
        self,
        source: DatasetRecord,
        target: DatasetRecord,
        *,
        wrapped_key: bytes,
        proof: bytes,
    ) -> None:
        """Move the registered record ``source`` to ``target.location`` in one step: ``target``
        is ``source`` with another location, nothing may be registered at the target, and
        ``proof`` is the registration proof of ``target`` over ``source``. The same refusals as
        :meth:`register_dataset`."""
        raise self._needs_server("the dataset registry")
