"""Persistent state of the KMS server: apps and their credentials, primary keys (in each app's
namespace) and their sealed versions, release policies, and the simulated TEE platforms the
operator registered.

:class:`Storage` is what the service uses; :class:`SqliteStorage` is the embedded default
(SQLite in WAL mode). Every statement is parameterised: names from requests are bound as values,
never spliced into SQL. The schema evolves through numbered migrations (:data:`MIGRATIONS`)
recorded in ``schema_migrations``, so a PostgreSQL implementation only has to provide the same
methods. The rows are the frozen values of :mod:`cipherspark.kms.server.records`.

Key material is stored only *sealed* (encrypted under the root key by
:mod:`cipherspark.kms.server.keyring`), API keys only as salted hashes; this module never sees
plaintext keys or API keys.
"""

from __future__ import annotations

import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cipherspark.errors import KeyExistsError, KmsError
from cipherspark.kms.server._schema import (
    APP_COLUMNS,
    CREDENTIAL_COLUMNS,
    KEY_COLUMNS,
    MIGRATIONS,
    PLATFORM_COLUMNS,
    Row,
    app_row,
    credential_row,
    key_row,
    platform_row,
)
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
    "KeyRecord",
    "SimulatedPlatformRecord",
    "SqliteStorage",
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

    @abstractmethod
    def backup(self, destination: Path) -> None:
        """Write a consistent copy of the whole store to ``destination``."""


class SqliteStorage(Storage):
    """:class:`Storage` in one SQLite file (WAL mode, fsync on every commit).

    One connection serves the process; a lock serialises its use because the server may call in
    from worker threads.
    """

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        self._lock = threading.RLock()
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves so each write is exactly one
            # explicit transaction.
            self._db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: an acknowledged create or rotate survives a power cut, not just a crash.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._migrate()
        except sqlite3.Error as exc:
            raise KmsError(f"cannot open the KMS database {self._path}: {exc}") from exc

    @property
    def schema_version(self) -> int:
        """The highest migration applied."""
        row = self._db.execute("SELECT max(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0)

    def _migrate(self) -> None:
        with self._lock:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version INTEGER PRIMARY KEY, applied TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
            )
            current = self.schema_version
            known = MIGRATIONS[-1][0]
            if current > known:
                raise KmsError(
                    f"the KMS database {self._path} has schema version {current}, newer than "
                    f"this build knows ({known}); upgrade cipherspark"
                )
            for version, statements in MIGRATIONS:
                if version <= current:
                    continue
                with self._transaction() as db:
                    for statement in statements:
                        db.execute(statement)
                    db.execute("INSERT INTO schema_migrations(version) VALUES (?)", (version,))

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction under the lock: committed when the block ends, rolled back if
        it raises (the lock is re-entrant, so a caller may already hold it)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _write(self, sql: str, params: tuple[object, ...]) -> int:
        with self._lock:
            try:
                return self._db.execute(sql, params).rowcount
            except sqlite3.Error as exc:
                raise KmsError(f"the KMS database refused a write: {exc}") from exc

    def _one(self, sql: str, params: tuple[object, ...]) -> Row | None:
        with self._lock:
            row: Row | None = self._db.execute(sql, params).fetchone()
        return row

    def _all(self, sql: str, params: tuple[object, ...] = ()) -> list[Row]:
        with self._lock:
            rows: list[Row] = self._db.execute(sql, params).fetchall()
        return rows

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    def get_setting(self, name: str) -> bytes | None:
        """A stored setting."""
        row = self._one("SELECT value FROM settings WHERE name = ?", (name,))
        return None if row is None else bytes(row[0])  # type: ignore[call-overload]

    def put_setting(self, name: str, value: bytes) -> None:
        """Insert or replace a setting."""
        self._write(
            "INSERT INTO settings(name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            (name, value),
        )

    # -- apps and credentials ------------------------------------------------------------------

    @staticmethod
    def _insert_credential(db: sqlite3.Connection, c: CredentialRecord) -> None:
        db.execute(
            f"INSERT INTO credentials({CREDENTIAL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                c.credential_id,
                c.app_id,
                c.role.value,
                c.label,
                c.key_salt,
                c.key_hash,
                c.created,
                c.revoked,
                int(c.legacy),
            ),
        )

    def create_app(self, app: AppRecord, owner: CredentialRecord) -> None:
        """Insert an application and its owner credential in one transaction."""
        try:
            with self._transaction() as db:
                db.execute(
                    f"INSERT INTO apps({APP_COLUMNS}) VALUES (?, ?, ?, ?)",
                    (app.app_id, app.name, app.created, int(app.enabled)),
                )
                self._insert_credential(db, owner)
        except sqlite3.Error as exc:
            raise KmsError(f"the KMS database refused a write: {exc}") from exc

    def get_app(self, app_id: str) -> AppRecord | None:
        """One application."""
        row = self._one(f"SELECT {APP_COLUMNS} FROM apps WHERE app_id = ?", (app_id,))
        return None if row is None else app_row(row)

    def set_app_enabled(self, app_id: str, enabled: bool) -> AppRecord | None:
        """Enable or disable an app."""
        with self._lock:
            self._write("UPDATE apps SET enabled = ? WHERE app_id = ?", (int(enabled), app_id))
            return self.get_app(app_id)

    def add_credential(self, credential: CredentialRecord) -> None:
        """Insert a credential."""
        try:
            with self._transaction() as db:
                self._insert_credential(db, credential)
        except sqlite3.Error as exc:
            raise KmsError(f"the KMS database refused a write: {exc}") from exc

    def get_credential(self, credential_id: str) -> CredentialRecord | None:
        """One credential."""
        row = self._one(
            f"SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE credential_id = ?",
            (credential_id,),
        )
        return None if row is None else credential_row(row)

    def legacy_credential(self, app_id: str) -> CredentialRecord | None:
        """The app's migrated owner credential (unique index on ``app_id WHERE legacy``)."""
        row = self._one(
            f"SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE app_id = ? AND legacy = 1",
            (app_id,),
        )
        return None if row is None else credential_row(row)

    def list_credentials(self, app_id: str) -> list[CredentialRecord]:
        """An app's credentials, oldest first."""
        rows = self._all(
            f"SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE app_id = ? "
            "ORDER BY created, credential_id",
            (app_id,),
        )
        return [credential_row(row) for row in rows]

    def revoke_credential(
        self, app_id: str, credential_id: str, when: str
    ) -> CredentialRecord | None:
        """Set ``revoked`` once (a second revocation keeps the first time)."""
        with self._lock:
            self._write(
                "UPDATE credentials SET revoked = ? "
                "WHERE app_id = ? AND credential_id = ? AND revoked IS NULL",
                (when, app_id, credential_id),
            )
            found = self.get_credential(credential_id)
        return found if found is not None and found.app_id == app_id else None

    def active_role(self, app_id: str, credential_id: str) -> Role | None:
        """Two primary-key lookups: the credential, and its app."""
        row = self._one(
            "SELECT c.role FROM credentials c JOIN apps a ON a.app_id = c.app_id "
            "WHERE c.credential_id = ? AND c.app_id = ? AND c.revoked IS NULL "
            "AND a.enabled = 1",
            (credential_id, app_id),
        )
        return None if row is None else Role(str(row[0]))

    # -- keys ----------------------------------------------------------------------------------

    def create_key(self, key: KeyRecord, sealed_v1: bytes) -> None:
        """Insert a key and its version 1 in one transaction."""
        try:
            with self._transaction() as db:
                db.execute(
                    "INSERT INTO keys(app_id, name, created, current_version, "
                    "min_decryption_version, enabled) VALUES (?, ?, ?, 1, 1, 1)",
                    (key.app_id, key.name, key.created),
                )
                db.execute(
                    "INSERT INTO key_versions(app_id, key_name, version, sealed, created) "
                    "VALUES (?, ?, 1, ?, ?)",
                    (key.app_id, key.name, sealed_v1, key.created),
                )
        except sqlite3.IntegrityError as exc:
            raise KeyExistsError(f"a primary key named {key.name!r} exists already") from exc

    def get_key(self, app_id: str, name: str) -> KeyRecord | None:
        """One key's metadata, and whether it has a policy (one indexed read)."""
        row = self._one(
            f"SELECT {KEY_COLUMNS} FROM keys k WHERE k.app_id = ? AND k.name = ?",
            (app_id, name),
        )
        return None if row is None else key_row(row)

    def list_keys(self, app_id: str) -> list[KeyRecord]:
        """An app's keys."""
        rows = self._all(
            f"SELECT {KEY_COLUMNS} FROM keys k WHERE k.app_id = ? ORDER BY k.name", (app_id,)
        )
        return [key_row(row) for row in rows]

    def get_version(self, app_id: str, name: str, version: int) -> bytes | None:
        """One sealed key version."""
        row = self._one(
            "SELECT sealed FROM key_versions WHERE app_id = ? AND key_name = ? AND version = ?",
            (app_id, name, version),
        )
        return None if row is None else bytes(row[0])  # type: ignore[call-overload]

    def add_version(
        self, app_id: str, name: str, version: int, sealed: bytes, created: str
    ) -> None:
        """Append a version; fails if another rotation got there first."""
        with self._transaction() as db:
            changed = db.execute(
                "UPDATE keys SET current_version = ? "
                "WHERE app_id = ? AND name = ? AND current_version = ?",
                (version, app_id, name, version - 1),
            ).rowcount
            if changed != 1:
                raise KmsError(f"key {name!r} changed during rotation; try again")
            db.execute(
                "INSERT INTO key_versions(app_id, key_name, version, sealed, created) "
                "VALUES (?, ?, ?, ?, ?)",
                (app_id, name, version, sealed, created),
            )

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
        """Update state fields; the column names are fixed here, only values are bound."""
        where = " WHERE app_id = ? AND name = ?"
        if enabled is not None:
            self._write("UPDATE keys SET enabled = ?" + where, (int(enabled), app_id, name))
        if min_decryption_version is not None:
            self._write(
                "UPDATE keys SET min_decryption_version = ?" + where,
                (min_decryption_version, app_id, name),
            )
        if deletion_date is not None:
            self._write("UPDATE keys SET deletion_date = ?" + where, (deletion_date, app_id, name))
        if clear_deletion:
            self._write("UPDATE keys SET deletion_date = NULL" + where, (app_id, name))

    def delete_key(self, app_id: str, name: str) -> None:
        """Delete a key; its versions and policy go with it (ON DELETE CASCADE)."""
        self._write("DELETE FROM keys WHERE app_id = ? AND name = ?", (app_id, name))

    def get_policy(self, app_id: str, name: str) -> str | None:
        """Key ``name``'s release policy (JSON), or ``None``."""
        row = self._one(
            "SELECT policy FROM key_policies WHERE app_id = ? AND key_name = ?", (app_id, name)
        )
        return None if row is None else str(row[0])

    def put_policy(self, app_id: str, name: str, policy: str, updated: str) -> str | None:
        """Insert or replace key ``name``'s release policy; the previous one, read in the same
        transaction (so the audit line names what this write replaced)."""
        try:
            with self._transaction() as db:
                row = db.execute(
                    "SELECT policy FROM key_policies WHERE app_id = ? AND key_name = ?",
                    (app_id, name),
                ).fetchone()
                db.execute(
                    "INSERT INTO key_policies(app_id, key_name, policy, updated) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT(app_id, key_name) DO UPDATE SET "
                    "policy = excluded.policy, updated = excluded.updated",
                    (app_id, name, policy, updated),
                )
        except sqlite3.Error as exc:
            raise KmsError(f"the KMS database refused a write: {exc}") from exc
        return None if row is None else str(row[0])

    def keys_due_for_deletion(self, now: str) -> list[tuple[str, str]]:
        """Keys whose grace period has ended."""
        rows = self._all(
            "SELECT app_id, name FROM keys WHERE deletion_date IS NOT NULL AND deletion_date <= ?",
            (now,),
        )
        return [(str(row[0]), str(row[1])) for row in rows]

    # -- simulated platforms -------------------------------------------------------------------

    def add_simulated_platform(
        self, platform: SimulatedPlatformRecord
    ) -> tuple[SimulatedPlatformRecord, bool]:
        """Insert, or update the label of an existing registration, in one transaction."""
        try:
            with self._transaction() as db:
                found = db.execute(
                    f"SELECT {PLATFORM_COLUMNS} FROM simulated_platforms WHERE public_key = ?",
                    (platform.public_key,),
                ).fetchone()
                if found is None:
                    db.execute(
                        "INSERT INTO simulated_platforms(public_key, label, created) "
                        "VALUES (?, ?, ?)",
                        (platform.public_key, platform.label, platform.created),
                    )
                    stored = platform
                else:
                    db.execute(
                        "UPDATE simulated_platforms SET label = ? WHERE public_key = ?",
                        (platform.label, platform.public_key),
                    )
                    stored = SimulatedPlatformRecord(
                        platform.public_key, platform.label, str(found[2])
                    )
        except sqlite3.Error as exc:
            raise KmsError(f"the KMS database refused a write: {exc}") from exc
        return stored, found is None

    def list_simulated_platforms(self) -> list[SimulatedPlatformRecord]:
        """Every registration, oldest first."""
        rows = self._all(
            f"SELECT {PLATFORM_COLUMNS} FROM simulated_platforms ORDER BY created, public_key"
        )
        return [platform_row(row) for row in rows]

    def remove_simulated_platform(self, public_key: str) -> SimulatedPlatformRecord | None:
        """Delete one registration; the record as it was, or ``None``."""
        try:
            with self._transaction() as db:
                row = db.execute(
                    f"SELECT {PLATFORM_COLUMNS} FROM simulated_platforms WHERE public_key = ?",
                    (public_key,),
                ).fetchone()
                if row is not None:
                    db.execute(
                        "DELETE FROM simulated_platforms WHERE public_key = ?", (public_key,)
                    )
        except sqlite3.Error as exc:
            raise KmsError(f"the KMS database refused a write: {exc}") from exc
        return None if row is None else platform_row(row)

    def backup(self, destination: Path) -> None:
        """Online backup through SQLite's backup API (consistent while the server runs)."""
        try:
            target = sqlite3.connect(destination)
            try:
                with self._lock:
                    self._db.backup(target)
            finally:
                target.close()
        except sqlite3.Error as exc:
            raise KmsError(f"cannot back up the KMS database to {destination}: {exc}") from exc

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check`` answer (``"ok"`` when consistent)."""
        row = self._one("PRAGMA integrity_check", ())
        return "" if row is None else str(row[0])
