"""The embedded :class:`~cipherspark.kms.server.storage.Storage`: one SQLite file in WAL mode,
its rows sealed under the root key (:mod:`._seal`), its transactions and audit outbox
(:mod:`._store`). Every statement is parameterised: names from requests are bound as values,
never spliced into SQL.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import AbstractContextManager
from pathlib import Path

from cipherspark.errors import KeyExistsError, KmsError
from cipherspark.kms.registry import DatasetRecord
from cipherspark.kms.server._schema import (
    MIGRATIONS,
    Row,
    app_row,
    credential_row,
    dataset_row,
    platform_row,
)
from cipherspark.kms.server._store import SealedDb
from cipherspark.kms.server.audit import AuditLog
from cipherspark.kms.server.permissions import Role
from cipherspark.kms.server.records import (
    AppRecord,
    CredentialRecord,
    KeyRecord,
    SimulatedPlatformRecord,
)
from cipherspark.kms.server.storage import Storage

__all__ = ["SqliteStorage"]


class SqliteStorage(Storage):
    """:class:`Storage` in one SQLite file (WAL mode, fsync on every commit), sealed under the
    root key and linked to the audit log.

    One connection serves the process; a re-entrant lock serialises its use because the server
    may call in from worker threads. Opening verifies every row seal and the store seal (or
    seals a database from before sealed stores, once), appends the audit outbox and checks the
    database against the log (``restoring``: the database may be older than the log;
    ``new_log``: a restore that starts a new log, see :meth:`SealedDb.open`).
    """

    def __init__(
        self,
        path: str | Path,
        root: bytes,
        audit: AuditLog,
        *,
        restoring: bool = False,
        new_log: bool = False,
    ) -> None:
        self._path = Path(path)
        self._lock = threading.RLock()
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves so each write is exactly one
            # explicit transaction.
            self._db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise KmsError(f"cannot open the KMS database {self._path}: {exc}") from exc
        self._sealed = SealedDb(self._db, self._lock, root, audit)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: an acknowledged create or rotate survives a power cut, not just a crash.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._sealed.migrate(self._path, MIGRATIONS)
            self._sealed.open(restoring=restoring, new_log=new_log)
        except sqlite3.Error as exc:
            self._db.close()
            raise KmsError(f"cannot open the KMS database {self._path}: {exc}") from exc
        except BaseException:
            self._db.close()
            raise

    @property
    def schema_version(self) -> int:
        """The highest migration applied."""
        return self._sealed.schema_version()

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """One write transaction, re-entrant (see :class:`SealedDb`)."""
        return self._sealed.transaction()

    @property
    def in_transaction(self) -> bool:
        """Whether this thread is inside :meth:`transaction`."""
        return self._sealed.in_transaction

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
        """Stage the transaction's audit entry in the outbox."""
        self._sealed.stage(
            request_id=request_id,
            app=app,
            op=op,
            key=key,
            version=version,
            credential=credential,
            detail=detail,
        )

    def store_head(self) -> tuple[int, str]:
        """The audit head (seq, mac) the store seal names."""
        row = self._db.execute("SELECT audit_seq, audit_mac FROM store_seal").fetchone()
        return (0, "") if row is None else (int(row[0]), str(row[1]))

    @property
    def sealed_rows(self) -> int:
        """How many sealed rows the store holds."""
        return self._sealed.row_count()

    def _write(self, fn: str, sql: str, params: tuple[object, ...], *seal: tuple[str, Row]) -> int:
        """One statement in a transaction, then re-seal the ``(table, primary key)`` rows."""
        try:
            with self._sealed.transaction() as db:
                changed = db.execute(sql, params).rowcount
                for table, pk in seal:
                    self._sealed.reseal(table, pk)
                return changed
        except sqlite3.Error as exc:
            raise KmsError(f"the KMS database refused a write ({fn}): {exc}") from exc

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    def get_setting(self, name: str) -> bytes | None:
        """A stored setting (its seal checked)."""
        row = self._sealed.read("settings", (name,))
        return None if row is None else bytes(row[1])  # type: ignore[call-overload]

    def put_setting(self, name: str, value: bytes) -> None:
        """Insert or replace a setting."""
        self._write(
            "setting",
            "INSERT INTO settings(name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            (name, value),
            ("settings", (name,)),
        )

    # -- apps and credentials ------------------------------------------------------------------

    def _insert_credential(self, c: CredentialRecord) -> None:
        self._write(
            "credential",
            "INSERT INTO credentials(credential_id, app_id, role, label, key_salt, key_hash, "
            "created, revoked, legacy) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            ("credentials", (c.credential_id,)),
        )

    def create_app(self, app: AppRecord, owner: CredentialRecord) -> None:
        """Insert an application and its owner credential in one transaction."""
        try:
            with self._sealed.transaction():
                self._write(
                    "app",
                    "INSERT INTO apps(app_id, name, created, enabled) VALUES (?, ?, ?, ?)",
                    (app.app_id, app.name, app.created, int(app.enabled)),
                    ("apps", (app.app_id,)),
                )
                self._insert_credential(owner)
        except sqlite3.Error as exc:
            raise KmsError(f"the KMS database refused a write: {exc}") from exc

    def get_app(self, app_id: str) -> AppRecord | None:
        """One application."""
        row = self._sealed.read("apps", (app_id,))
        return None if row is None else app_row(row)

    def set_app_enabled(self, app_id: str, enabled: bool) -> AppRecord | None:
        """Enable or disable an app."""
        with self._sealed.transaction():
            self._write(
                "app",
                "UPDATE apps SET enabled = ? WHERE app_id = ?",
                (int(enabled), app_id),
                ("apps", (app_id,)),
            )
            return self.get_app(app_id)

    def add_credential(self, credential: CredentialRecord) -> None:
        """Insert a credential."""
        try:
            self._insert_credential(credential)
        except sqlite3.Error as exc:
            raise KmsError(f"the KMS database refused a write: {exc}") from exc

    def get_credential(self, credential_id: str) -> CredentialRecord | None:
        """One credential (its seal checked)."""
        row = self._sealed.read("credentials", (credential_id,))
        return None if row is None else credential_row(row)

    def legacy_credential(self, app_id: str) -> CredentialRecord | None:
        """The app's migrated owner credential (unique index on ``app_id WHERE legacy``)."""
        rows = self._sealed.select("credentials", "WHERE t.app_id = ? AND t.legacy = 1", (app_id,))
        return credential_row(rows[0]) if rows else None

    def list_credentials(self, app_id: str) -> list[CredentialRecord]:
        """An app's credentials, oldest first."""
        rows = self._sealed.select(
            "credentials", "WHERE t.app_id = ? ORDER BY t.created, t.credential_id", (app_id,)
        )
        return [credential_row(row) for row in rows]

    def revoke_credential(
        self, app_id: str, credential_id: str, when: str
    ) -> CredentialRecord | None:
        """Set ``revoked`` once (a second revocation keeps the first time)."""
        with self._sealed.transaction():
            self._write(
                "credential",
                "UPDATE credentials SET revoked = ? "
                "WHERE app_id = ? AND credential_id = ? AND revoked IS NULL",
                (when, app_id, credential_id),
                ("credentials", (credential_id,)),
            )
            found = self.get_credential(credential_id)
        return found if found is not None and found.app_id == app_id else None

    def active_role(self, app_id: str, credential_id: str) -> Role | None:
        """Two primary-key lookups, each row's seal checked: the credential, and its app."""
        credential = self.get_credential(credential_id)
        if credential is None or credential.app_id != app_id or credential.revoked is not None:
            return None
        app = self.get_app(app_id)
        return credential.role if app is not None and app.enabled else None

    # -- keys ----------------------------------------------------------------------------------

    @staticmethod
    def _key_record(row: Row) -> KeyRecord:
        # The sealed select of keys: app_id, name, created, current, min, enabled, deletion,
        # the policy text (or NULL), seal.
        return KeyRecord(
            name=str(row[1]),
            app_id=str(row[0]),
            created=str(row[2]),
            current_version=int(row[3]),  # type: ignore[call-overload]
            min_decryption_version=int(row[4]),  # type: ignore[call-overload]
            enabled=bool(row[5]),
            deletion_date=None if row[6] is None else str(row[6]),
            has_policy=row[7] is not None,
        )

    def create_key(self, key: KeyRecord, sealed_v1: bytes) -> None:
        """Insert a key and its version 1 in one transaction."""
        with self._sealed.transaction() as db:
            # Inside the (immediate) transaction, so nobody can create it in between.
            found = db.execute(
                "SELECT 1 FROM keys WHERE app_id = ? AND name = ?", (key.app_id, key.name)
            ).fetchone()
            if found is not None:
                raise KeyExistsError(f"a primary key named {key.name!r} exists already")
            self._write(
                "key",
                "INSERT INTO keys(app_id, name, created, current_version, "
                "min_decryption_version, enabled) VALUES (?, ?, ?, 1, 1, 1)",
                (key.app_id, key.name, key.created),
                ("keys", (key.app_id, key.name)),
            )
            self._write(
                "key",
                "INSERT INTO key_versions(app_id, key_name, version, sealed, created) "
                "VALUES (?, ?, 1, ?, ?)",
                (key.app_id, key.name, sealed_v1, key.created),
                ("key_versions", (key.app_id, key.name, 1)),
            )

    def get_key(self, app_id: str, name: str) -> KeyRecord | None:
        """One key's metadata and whether it has a policy (one indexed read, seal checked: it
        covers the policy's digest, so a deleted policy row fails here)."""
        row = self._sealed.read("keys", (app_id, name))
        return None if row is None else self._key_record(row)

    def list_keys(self, app_id: str) -> list[KeyRecord]:
        """An app's keys."""
        rows = self._sealed.select("keys", "WHERE t.app_id = ? ORDER BY t.name", (app_id,))
        return [self._key_record(row) for row in rows]

    def get_version(self, app_id: str, name: str, version: int) -> bytes | None:
        """One sealed key version."""
        row = self._sealed.read("key_versions", (app_id, name, version))
        return None if row is None else bytes(row[3])  # type: ignore[call-overload]

    def add_version(
        self, app_id: str, name: str, version: int, sealed: bytes, created: str
    ) -> None:
        """Append a version; fails if another rotation got there first."""
        with self._sealed.transaction():
            changed = self._write(
                "rotate",
                "UPDATE keys SET current_version = ? "
                "WHERE app_id = ? AND name = ? AND current_version = ?",
                (version, app_id, name, version - 1),
            )
            if changed != 1:
                raise KmsError(f"key {name!r} changed during rotation; try again")
            self._write(
                "rotate",
                "INSERT INTO key_versions(app_id, key_name, version, sealed, created) "
                "VALUES (?, ?, ?, ?, ?)",
                (app_id, name, version, sealed, created),
                ("key_versions", (app_id, name, version)),
                ("keys", (app_id, name)),
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
        changes: list[tuple[str, object]] = []
        if enabled is not None:
            changes.append(("enabled", int(enabled)))
        if min_decryption_version is not None:
            changes.append(("min_decryption_version", min_decryption_version))
        if deletion_date is not None:
            changes.append(("deletion_date", deletion_date))
        if clear_deletion:
            changes.append(("deletion_date", None))
        if changes:
            self._write(
                "key",
                "UPDATE keys SET "
                + ", ".join(f"{column} = ?" for column, _ in changes)
                + " WHERE app_id = ? AND name = ?",
                (*(value for _, value in changes), app_id, name),
                ("keys", (app_id, name)),
            )

    def delete_key(self, app_id: str, name: str) -> None:
        """Delete a key; its versions and policy go with it (ON DELETE CASCADE), and so do
        their seals."""
        with self._sealed.transaction() as db:
            versions = db.execute(
                "SELECT version FROM key_versions WHERE app_id = ? AND key_name = ?",
                (app_id, name),
            ).fetchall()
            self._write(
                "delete",
                "DELETE FROM keys WHERE app_id = ? AND name = ?",
                (app_id, name),
                ("keys", (app_id, name)),
                ("key_policies", (app_id, name)),
                *(("key_versions", (app_id, name, int(v[0]))) for v in versions),
            )

    def get_policy(self, app_id: str, name: str) -> str | None:
        """Key ``name``'s release policy (JSON, seal checked), or ``None``."""
        row = self._sealed.read("key_policies", (app_id, name))
        return None if row is None else str(row[2])

    def put_policy(self, app_id: str, name: str, policy: str, updated: str) -> str | None:
        """Insert or replace key ``name``'s release policy; the previous one, read in the same
        transaction (so the audit line names what this write replaced). The key row is
        re-sealed too: its seal covers the policy's digest."""
        with self._sealed.transaction():
            old = self.get_policy(app_id, name)
            self._write(
                "policy",
                "INSERT INTO key_policies(app_id, key_name, policy, updated) "
                "VALUES (?, ?, ?, ?) ON CONFLICT(app_id, key_name) DO UPDATE SET "
                "policy = excluded.policy, updated = excluded.updated",
                (app_id, name, policy, updated),
                ("key_policies", (app_id, name)),
                ("keys", (app_id, name)),
            )
        return old

    def keys_due_for_deletion(self, now: str) -> list[tuple[str, str]]:
        """Keys whose grace period has ended (each is read again, checked, before it goes)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT app_id, name FROM keys "
                "WHERE deletion_date IS NOT NULL AND deletion_date <= ?",
                (now,),
            ).fetchall()
        return [(str(row[0]), str(row[1])) for row in rows]

    # -- simulated platforms -------------------------------------------------------------------

    def add_simulated_platform(
        self, platform: SimulatedPlatformRecord
    ) -> tuple[SimulatedPlatformRecord, bool]:
        """Insert, or update the label of an existing registration, in one transaction."""
        pk = ("simulated_platforms", (platform.public_key,))
        with self._sealed.transaction():
            found = self._sealed.read("simulated_platforms", (platform.public_key,))
            if found is None:
                self._write(
                    "platform",
                    "INSERT INTO simulated_platforms(public_key, label, created) VALUES (?, ?, ?)",
                    (platform.public_key, platform.label, platform.created),
                    pk,
                )
                stored = platform
            else:
                self._write(
                    "platform",
                    "UPDATE simulated_platforms SET label = ? WHERE public_key = ?",
                    (platform.label, platform.public_key),
                    pk,
                )
                stored = SimulatedPlatformRecord(platform.public_key, platform.label, str(found[2]))
        return stored, found is None

    def list_simulated_platforms(self) -> list[SimulatedPlatformRecord]:
        """Every registration, oldest first (seals checked: an inserted row is refused)."""
        rows = self._sealed.select("simulated_platforms", "ORDER BY t.created, t.public_key", ())
        return [platform_row(row) for row in rows]

    def remove_simulated_platform(self, public_key: str) -> SimulatedPlatformRecord | None:
        """Delete one registration; the record as it was, or ``None``."""
        with self._sealed.transaction():
            row = self._sealed.read("simulated_platforms", (public_key,))
            if row is not None:
                self._write(
                    "platform",
                    "DELETE FROM simulated_platforms WHERE public_key = ?",
                    (public_key,),
                    ("simulated_platforms", (public_key,)),
                )
        return None if row is None else platform_row(row)

    # -- the dataset registry ------------------------------------------------------------------

    def get_dataset(self, app_id: str, location: str) -> DatasetRecord | None:
        """One record (seal checked; a sealed row deleted outside the server is refused)."""
        row = self._sealed.read("datasets", (app_id, location), missing_is_changed=True)
        return None if row is None else dataset_row(row)

    def find_datasets(self, app_id: str, dataset_id: str) -> list[DatasetRecord]:
        """The app's records of one dataset (index ``datasets_by_id``), seals checked."""
        rows = self._sealed.select(
            "datasets",
            "WHERE t.app_id = ? AND t.dataset_id = ? ORDER BY t.location",
            (app_id, dataset_id),
        )
        return [dataset_row(row) for row in rows]

    def put_dataset(self, app_id: str, record: DatasetRecord, updated: str) -> None:
        """Insert or replace one record and re-seal it."""
        self._write(
            "dataset",
            "INSERT INTO datasets(app_id, location, dataset_id, key_name, generation, "
            "manifest_sha256, wrapped_key_sha256, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(app_id, location) DO UPDATE SET dataset_id = excluded.dataset_id, "
            "key_name = excluded.key_name, generation = excluded.generation, "
            "manifest_sha256 = excluded.manifest_sha256, "
            "wrapped_key_sha256 = excluded.wrapped_key_sha256, updated = excluded.updated",
            (
                app_id,
                record.location,
                record.dataset_id,
                record.key_id,
                record.generation,
                record.manifest_sha256,
                record.wrapped_key_sha256,
                updated,
            ),
            ("datasets", (app_id, record.location)),
        )

    def delete_dataset(self, app_id: str, location: str) -> None:
        """Delete one record and forget its seal."""
        self._write(
            "dataset",
            "DELETE FROM datasets WHERE app_id = ? AND location = ?",
            (app_id, location),
            ("datasets", (app_id, location)),
        )

    def backup(self, destination: Path) -> None:
        """Online backup through SQLite's backup API into ``destination`` (an empty file the
        caller created exclusively, or a new path)."""
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
        return "" if row is None else str(row[0])
