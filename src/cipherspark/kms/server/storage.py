"""Persistent state of the KMS server: apps, primary keys and their sealed versions, release
policies, and the simulated TEE platforms the operator registered.

:class:`Storage` is what the API layer uses; :class:`SqliteStorage` is the embedded default
(SQLite in WAL mode). Every statement is parameterised: names from requests are bound as values,
never spliced into SQL. The schema evolves through numbered migrations recorded in
``schema_migrations``, so a PostgreSQL implementation only has to provide the same methods.

Key material is stored only *sealed* (encrypted under the root key by
:mod:`cipherspark.kms.server.keyring`); this module never sees plaintext keys.
"""

from __future__ import annotations

import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cipherspark.errors import KeyExistsError, KmsError

__all__ = [
    "MIGRATIONS",
    "AppRecord",
    "KeyRecord",
    "SimulatedPlatformRecord",
    "SqliteStorage",
    "Storage",
]

# Each entry is applied once, in order, inside one transaction; never edit a released entry,
# append a new one instead.
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            """CREATE TABLE settings (
               name TEXT PRIMARY KEY,
               value BLOB NOT NULL)""",
            """CREATE TABLE apps (
               app_id TEXT PRIMARY KEY,
               name TEXT NOT NULL,
               key_salt BLOB NOT NULL,
               key_hash BLOB NOT NULL,
               created TEXT NOT NULL)""",
            """CREATE TABLE keys (
               name TEXT PRIMARY KEY,
               app_id TEXT NOT NULL REFERENCES apps(app_id),
               created TEXT NOT NULL,
               current_version INTEGER NOT NULL CHECK (current_version >= 1),
               min_decryption_version INTEGER NOT NULL DEFAULT 1,
               enabled INTEGER NOT NULL DEFAULT 1,
               deletion_date TEXT)""",
            """CREATE TABLE key_versions (
               key_name TEXT NOT NULL REFERENCES keys(name) ON DELETE CASCADE,
               version INTEGER NOT NULL,
               sealed BLOB NOT NULL,
               created TEXT NOT NULL,
               PRIMARY KEY (key_name, version))""",
            "CREATE INDEX keys_by_app ON keys(app_id, name)",
        ),
    ),
    # Attested key release: one JSON release policy per primary key (deleted with the key).
    (
        2,
        (
            """CREATE TABLE key_policies (
               key_name TEXT PRIMARY KEY REFERENCES keys(name) ON DELETE CASCADE,
               policy TEXT NOT NULL,
               updated TEXT NOT NULL)""",
        ),
    ),
    # Simulated TEE platforms the operator trusts (admin token): a policy's
    # simulated.platform_keys only count where they are registered here too.
    (
        3,
        (
            """CREATE TABLE simulated_platforms (
               public_key TEXT PRIMARY KEY CHECK (length(public_key) = 64),
               label TEXT NOT NULL,
               created TEXT NOT NULL)""",
        ),
    ),
)


@dataclass(frozen=True)
class AppRecord:
    """An application: its id, display name and the salted scrypt hash of its API key."""

    app_id: str
    name: str
    key_salt: bytes
    key_hash: bytes
    created: str


@dataclass(frozen=True)
class KeyRecord:
    """Metadata of a primary key (its versions' sealed bytes are fetched separately)."""

    name: str
    app_id: str
    created: str
    current_version: int
    min_decryption_version: int
    enabled: bool
    deletion_date: str | None


@dataclass(frozen=True)
class SimulatedPlatformRecord:
    """A simulated TEE platform the operator registered: its Ed25519 public key (64 lowercase
    hex digits), a free-text label and when it was first registered (ISO 8601, UTC)."""

    public_key: str
    label: str
    created: str


class Storage(ABC):
    """The server's persistent state; implementations must make each method atomic."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection."""

    @abstractmethod
    def get_setting(self, name: str) -> bytes | None:
        """A server setting (e.g. the admin token's hash), or ``None``."""

    @abstractmethod
    def put_setting(self, name: str, value: bytes) -> None:
        """Store a server setting, replacing any previous value."""

    @abstractmethod
    def create_app(self, app: AppRecord) -> None:
        """Store a new application."""

    @abstractmethod
    def get_app(self, app_id: str) -> AppRecord | None:
        """The application ``app_id``, or ``None``."""

    @abstractmethod
    def create_key(self, key: KeyRecord, sealed_v1: bytes) -> None:
        """Store a new key with version 1; :class:`KeyExistsError` if the name is taken."""

    @abstractmethod
    def get_key(self, name: str) -> KeyRecord | None:
        """Metadata of key ``name``, or ``None``."""

    @abstractmethod
    def list_keys(self, app_id: str) -> list[KeyRecord]:
        """The keys of application ``app_id``, by name."""

    @abstractmethod
    def get_version(self, name: str, version: int) -> bytes | None:
        """The sealed bytes of ``name`` version ``version``, or ``None``."""

    @abstractmethod
    def add_version(self, name: str, version: int, sealed: bytes, created: str) -> None:
        """Append ``version`` (must be current + 1) and make it current, atomically."""

    @abstractmethod
    def update_key(
        self,
        name: str,
        *,
        enabled: bool | None = None,
        min_decryption_version: int | None = None,
        deletion_date: str | None = None,
        clear_deletion: bool = False,
    ) -> None:
        """Change a key's state fields (``None`` leaves a field unchanged)."""

    @abstractmethod
    def delete_key(self, name: str) -> None:
        """Remove a key and all its versions."""

    @abstractmethod
    def get_policy(self, name: str) -> str | None:
        """Key ``name``'s release policy (JSON), or ``None``."""

    @abstractmethod
    def put_policy(self, name: str, policy: str, updated: str) -> None:
        """Store key ``name``'s release policy (JSON), replacing any previous one."""

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
    def keys_due_for_deletion(self, now: str) -> list[str]:
        """Names of keys whose deletion date is at or before ``now`` (ISO 8601, UTC)."""

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

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    def get_setting(self, name: str) -> bytes | None:
        """A stored setting."""
        with self._lock:
            row = self._db.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
        return None if row is None else bytes(row[0])

    def put_setting(self, name: str, value: bytes) -> None:
        """Insert or replace a setting."""
        self._write(
            "INSERT INTO settings(name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            (name, value),
        )

    def create_app(self, app: AppRecord) -> None:
        """Insert an application."""
        self._write(
            "INSERT INTO apps(app_id, name, key_salt, key_hash, created) VALUES (?, ?, ?, ?, ?)",
            (app.app_id, app.name, app.key_salt, app.key_hash, app.created),
        )

    def get_app(self, app_id: str) -> AppRecord | None:
        """One application."""
        with self._lock:
            row = self._db.execute(
                "SELECT app_id, name, key_salt, key_hash, created FROM apps WHERE app_id = ?",
                (app_id,),
            ).fetchone()
        if row is None:
            return None
        return AppRecord(str(row[0]), str(row[1]), bytes(row[2]), bytes(row[3]), str(row[4]))

    @staticmethod
    def _key(row: tuple[object, ...]) -> KeyRecord:
        return KeyRecord(
            name=str(row[0]),
            app_id=str(row[1]),
            created=str(row[2]),
            current_version=int(row[3]),  # type: ignore[call-overload]
            min_decryption_version=int(row[4]),  # type: ignore[call-overload]
            enabled=bool(row[5]),
            deletion_date=None if row[6] is None else str(row[6]),
        )

    _KEY_COLUMNS = (
        "name, app_id, created, current_version, min_decryption_version, enabled, deletion_date"
    )

    def create_key(self, key: KeyRecord, sealed_v1: bytes) -> None:
        """Insert a key and its version 1 in one transaction."""
        try:
            with self._transaction() as db:
                db.execute(
                    "INSERT INTO keys(name, app_id, created, current_version, "
                    "min_decryption_version, enabled) VALUES (?, ?, ?, 1, 1, 1)",
                    (key.name, key.app_id, key.created),
                )
                db.execute(
                    "INSERT INTO key_versions(key_name, version, sealed, created) "
                    "VALUES (?, 1, ?, ?)",
                    (key.name, sealed_v1, key.created),
                )
        except sqlite3.IntegrityError as exc:
            raise KeyExistsError(f"a primary key named {key.name!r} exists already") from exc

    def get_key(self, name: str) -> KeyRecord | None:
        """One key's metadata."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {self._KEY_COLUMNS} FROM keys WHERE name = ?", (name,)
            ).fetchone()
        return None if row is None else self._key(row)

    def list_keys(self, app_id: str) -> list[KeyRecord]:
        """An app's keys."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {self._KEY_COLUMNS} FROM keys WHERE app_id = ? ORDER BY name", (app_id,)
            ).fetchall()
        return [self._key(row) for row in rows]

    def get_version(self, name: str, version: int) -> bytes | None:
        """One sealed key version."""
        with self._lock:
            row = self._db.execute(
                "SELECT sealed FROM key_versions WHERE key_name = ? AND version = ?",
                (name, version),
            ).fetchone()
        return None if row is None else bytes(row[0])

    def add_version(self, name: str, version: int, sealed: bytes, created: str) -> None:
        """Append a version; fails if another rotation got there first."""
        with self._transaction() as db:
            changed = db.execute(
                "UPDATE keys SET current_version = ? WHERE name = ? AND current_version = ?",
                (version, name, version - 1),
            ).rowcount
            if changed != 1:
                raise KmsError(f"key {name!r} changed during rotation; try again")
            db.execute(
                "INSERT INTO key_versions(key_name, version, sealed, created) VALUES (?, ?, ?, ?)",
                (name, version, sealed, created),
            )

    def update_key(
        self,
        name: str,
        *,
        enabled: bool | None = None,
        min_decryption_version: int | None = None,
        deletion_date: str | None = None,
        clear_deletion: bool = False,
    ) -> None:
        """Update state fields; the column names are fixed here, only values are bound."""
        if enabled is not None:
            self._write("UPDATE keys SET enabled = ? WHERE name = ?", (int(enabled), name))
        if min_decryption_version is not None:
            self._write(
                "UPDATE keys SET min_decryption_version = ? WHERE name = ?",
                (min_decryption_version, name),
            )
        if deletion_date is not None:
            self._write("UPDATE keys SET deletion_date = ? WHERE name = ?", (deletion_date, name))
        if clear_deletion:
            self._write("UPDATE keys SET deletion_date = NULL WHERE name = ?", (name,))

    def delete_key(self, name: str) -> None:
        """Delete a key; its versions go with it (ON DELETE CASCADE)."""
        self._write("DELETE FROM keys WHERE name = ?", (name,))

    def get_policy(self, name: str) -> str | None:
        """Key ``name``'s release policy (JSON), or ``None``."""
        with self._lock:
            row = self._db.execute(
                "SELECT policy FROM key_policies WHERE key_name = ?", (name,)
            ).fetchone()
        return None if row is None else str(row[0])

    def put_policy(self, name: str, policy: str, updated: str) -> None:
        """Insert or replace key ``name``'s release policy."""
        self._write(
            "INSERT INTO key_policies(key_name, policy, updated) VALUES (?, ?, ?) "
            "ON CONFLICT(key_name) DO UPDATE SET policy = excluded.policy, "
            "updated = excluded.updated",
            (name, policy, updated),
        )

    _PLATFORM_COLUMNS = "public_key, label, created"

    @staticmethod
    def _platform(row: tuple[object, ...]) -> SimulatedPlatformRecord:
        return SimulatedPlatformRecord(str(row[0]), str(row[1]), str(row[2]))

    def add_simulated_platform(
        self, platform: SimulatedPlatformRecord
    ) -> tuple[SimulatedPlatformRecord, bool]:
        """Insert, or update the label of an existing registration, in one transaction."""
        try:
            with self._transaction() as db:
                found = db.execute(
                    f"SELECT {self._PLATFORM_COLUMNS} FROM simulated_platforms "
                    "WHERE public_key = ?",
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
        with self._lock:
            rows = self._db.execute(
                f"SELECT {self._PLATFORM_COLUMNS} FROM simulated_platforms "
                "ORDER BY created, public_key"
            ).fetchall()
        return [self._platform(row) for row in rows]

    def remove_simulated_platform(self, public_key: str) -> SimulatedPlatformRecord | None:
        """Delete one registration; the record as it was, or ``None``."""
        try:
            with self._transaction() as db:
                row = db.execute(
                    f"SELECT {self._PLATFORM_COLUMNS} FROM simulated_platforms "
                    "WHERE public_key = ?",
                    (public_key,),
                ).fetchone()
                if row is not None:
                    db.execute(
                        "DELETE FROM simulated_platforms WHERE public_key = ?", (public_key,)
                    )
        except sqlite3.Error as exc:
            raise KmsError(f"the KMS database refused a write: {exc}") from exc
        return None if row is None else self._platform(row)

    def keys_due_for_deletion(self, now: str) -> list[str]:
        """Keys whose grace period has ended."""
        with self._lock:
            rows = self._db.execute(
                "SELECT name FROM keys WHERE deletion_date IS NOT NULL AND deletion_date <= ?",
                (now,),
            ).fetchall()
        return [str(row[0]) for row in rows]

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
        with self._lock:
            row = self._db.execute("PRAGMA integrity_check").fetchone()
        return str(row[0])
