"""Persistent state of the KMS server: apps and their credentials, primary keys (in each app's
namespace) and their sealed versions, release policies, the simulated TEE platforms the
operator registered, and each app's dataset registry (:mod:`cipherspark.kms.registry`).

:class:`Storage` is what the service uses;
:class:`~cipherspark.kms.server.sqlite.SqliteStorage` is the embedded default (SQLite in WAL
mode). Every statement is parameterised: names from requests are bound as values, never
spliced into SQL. The schema evolves through numbered migrations (:data:`MIGRATIONS`)
recorded in ``schema_migrations``, so a PostgreSQL implementation only has to provide the same
methods. The rows are the frozen values of :mod:`cipherspark.kms.server.records`.

Key material is stored only *sealed* (encrypted under the root key by
:mod:`cipherspark.kms.server.keyring`), API keys only as salted hashes; this module never sees
plaintext keys or API keys. Every security-relevant row is *sealed* (an HMAC under a key derived
from the root key, :mod:`._seal`), the store as a whole too, and opening a database verifies
them all; its transactions and audit outbox are :mod:`._store`'s.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from pathlib import Path

from cipherspark.kms.registry import DatasetRecord
from cipherspark.kms.server._schema import MIGRATIONS
from cipherspark.kms.server.permissions import Role
from cipherspark.kms.server.records import (
    AppRecord,
    CredentialRecord,
    KeyRecord,
    SimulatedPlatformRecord,
)

__all__ = [
    "MIGRATIONS",
    "AppRecord",
    "CredentialRecord",
    "DatasetRecord",
    "KeyRecord",
    "SimulatedPlatformRecord",
    "Storage",
]


class Storage(ABC):
    """The server's persistent state; implementations must make each method atomic.

    Keys are addressed by ``(app_id, name)``: names live in each app's namespace.
    """

    @abstractmethod
    def close(self) -> None:
        """Release the connection."""

    @abstractmethod
    def transaction(self) -> AbstractContextManager[object]:
        """One write transaction: the methods called inside it join it, and commit or roll
        back together when the block ends (re-entrant)."""

    @property
    @abstractmethod
    def in_transaction(self) -> bool:
        """Whether the calling thread is inside :meth:`transaction`."""

    @abstractmethod
    def stage_audit(
        self,
        *,
        request_id: str,
        app: str | None,
        op: str,
        key: str | None,
        version: int | None,
        credential: str | None,
        detail: dict[str, str] | None,
    ) -> None:
        """Stage the current transaction's ``ok`` audit entry: written with its change, in
        the same commit, and appended to the audit log after it."""

    @abstractmethod
    def get_setting(self, name: str) -> bytes | None:
        """A server setting (e.g. the admin token's hash), or ``None``."""

    @abstractmethod
    def put_setting(self, name: str, value: bytes) -> None:
        """Store a server setting, replacing any previous value."""

    # -- apps and credentials ------------------------------------------------------------------

    @abstractmethod
    def create_app(self, app: AppRecord, owner: CredentialRecord) -> None:
        """Store a new application with its first (owner) credential, in one transaction."""

    @abstractmethod
    def get_app(self, app_id: str) -> AppRecord | None:
        """The application ``app_id``, or ``None``."""

    @abstractmethod
    def set_app_enabled(self, app_id: str, enabled: bool) -> AppRecord | None:
        """Enable or disable an app; the updated record, or ``None`` if there is no such app."""

    @abstractmethod
    def add_credential(self, credential: CredentialRecord) -> None:
        """Store a new credential of an existing app."""

    @abstractmethod
    def get_credential(self, credential_id: str) -> CredentialRecord | None:
        """One credential (revoked or not), or ``None``."""

    @abstractmethod
    def legacy_credential(self, app_id: str) -> CredentialRecord | None:
        """The app's migrated owner credential whose API key carries no id, or ``None``."""

    @abstractmethod
    def list_credentials(self, app_id: str) -> list[CredentialRecord]:
        """An app's credentials, revoked ones included, oldest first."""

    @abstractmethod
    def revoke_credential(
        self, app_id: str, credential_id: str, when: str
    ) -> CredentialRecord | None:
        """Mark a credential of ``app_id`` revoked at ``when`` (kept if it was already); the
        record afterwards, or ``None`` if the app has no such credential."""

    @abstractmethod
    def active_role(self, app_id: str, credential_id: str) -> Role | None:
        """The role of ``credential_id`` if it belongs to ``app_id``, is not revoked and the
        app exists and is enabled; otherwise ``None``. Read on every request: keep it cheap."""

    # -- keys ----------------------------------------------------------------------------------

    @abstractmethod
    def create_key(self, key: KeyRecord, sealed_v1: bytes) -> None:
        """Store a new key with version 1; :class:`KeyExistsError` if the app has that name."""

    @abstractmethod
    def get_key(self, app_id: str, name: str) -> KeyRecord | None:
        """Metadata of app ``app_id``'s key ``name``, or ``None``."""

    @abstractmethod
    def list_keys(self, app_id: str) -> list[KeyRecord]:
        """The keys of application ``app_id``, by name."""

    @abstractmethod
    def get_version(self, app_id: str, name: str, version: int) -> bytes | None:
        """The sealed bytes of ``name`` version ``version``, or ``None``."""

    @abstractmethod
    def add_version(
        self, app_id: str, name: str, version: int, sealed: bytes, created: str
    ) -> None:
        """Append ``version`` (must be current + 1) and make it current, atomically."""

    @abstractmethod
    def update_key(
        self,
        app_id: str,
        name: str,
        *,
        enabled: bool | None = None,
        min_decryption_version: int | None = None,
        deletion_date: str | None = None,
        clear_deletion: bool = False,
    ) -> None:
        """Change a key's state fields (``None`` leaves a field unchanged)."""

    @abstractmethod
    def delete_key(self, app_id: str, name: str) -> None:
        """Remove a key, all its versions and its policy."""

    @abstractmethod
    def get_policy(self, app_id: str, name: str) -> str | None:
        """Key ``name``'s release policy (JSON), or ``None``."""

    @abstractmethod
    def put_policy(self, app_id: str, name: str, policy: str, updated: str) -> str | None:
        """Store key ``name``'s release policy (JSON); the one it replaced, or ``None``."""

    @abstractmethod
    def keys_due_for_deletion(self, now: str) -> list[tuple[str, str]]:
        """(app id, name) of keys whose deletion date is at or before ``now`` (ISO 8601)."""

    # -- simulated platforms -------------------------------------------------------------------

    @abstractmethod
    def add_simulated_platform(
        self, platform: SimulatedPlatformRecord
    ) -> tuple[SimulatedPlatformRecord, bool]:
        """Register a simulated platform; if its key is registered already, only the label
        changes. Answers the stored record (with the first registration's ``created``) and
        whether it is new."""

    @abstractmethod
    def list_simulated_platforms(self) -> list[SimulatedPlatformRecord]:
        """The registered simulated platforms, oldest first."""

    @abstractmethod
    def remove_simulated_platform(self, public_key: str) -> SimulatedPlatformRecord | None:
        """Unregister ``public_key``; the record removed, or ``None`` if it was not there."""

    # -- the dataset registry ------------------------------------------------------------------

    @abstractmethod
    def get_dataset(self, app_id: str, location: str) -> DatasetRecord | None:
        """App ``app_id``'s record at ``location``, or ``None``; a sealed record that is gone
        is :class:`~cipherspark.errors.StoreChangedError`, never ``None``."""

    @abstractmethod
    def find_datasets(self, app_id: str, dataset_id: str) -> list[DatasetRecord]:
        """App ``app_id``'s records of dataset ``dataset_id``, by location."""

    @abstractmethod
    def put_dataset(self, app_id: str, record: DatasetRecord, updated: str) -> None:
        """Insert or replace the record at ``record.location`` (the caller's transaction did
        the compare-and-swap)."""

    @abstractmethod
    def delete_dataset(self, app_id: str, location: str) -> None:
        """Remove the record at ``location`` (nothing if there is none)."""

    @abstractmethod
    def backup(self, destination: Path) -> None:
        """Write a consistent copy of the whole store to ``destination``."""
