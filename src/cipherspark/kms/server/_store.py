"""The sealed SQLite connection under :class:`~cipherspark.kms.server.storage.SqliteStorage`:
transactions that keep every row seal and the store seal current, the audit outbox, and the
checks made when a database is opened.

* **Transactions** are re-entrant: an inner :meth:`SealedDb.transaction` joins the outer one,
  so a service operation and the storage calls it makes commit (or roll back) together. The
  outermost one holds the audit log (:meth:`AuditLog.reserved`) from ``BEGIN`` to after the
  log append, so the entry it stages is the log's next line.
* **Seals** (:mod:`._seal`): each write re-reads the rows it changed and re-seals them; the
  current seals are also kept in memory, loaded when the database was verified at open. The
  store seal is computed from that memory, not from the database, and run-time reads compare a
  row with the seal in memory: a row edited (or rolled back to an older, validly sealed value)
  while the server runs is refused when it is read, and is not laundered into the next store
  seal.
* **Audit outbox**: a state-changing operation's audit entry (with its chain MAC) is inserted
  into ``audit_outbox`` in the same transaction as the change, and the store seal names it as
  the audit head; after ``COMMIT`` the line is appended to ``audit.log``. A crash in between
  leaves the entry in the outbox, and the next open appends it before anything else. Outbox
  rows already in the log are deleted at the start of the next transaction (no extra commit).
"""

from __future__ import annotations

import hmac
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from cipherspark.errors import KmsError, StoreChangedError
from cipherspark.kms.server import keyring
from cipherspark.kms.server._audited import MUTATING_OPS
from cipherspark.kms.server._seal import TABLES, Sealer, SealTable
from cipherspark.kms.server.audit import AuditLog

__all__ = ["CHANGED", "STORE_SEAL_OP", "SealedDb"]

#: How every refusal of an edited database starts.
CHANGED = "the KMS database was changed outside the server"
#: The audit operation of the one-time sealing of a database from before sealed stores.
STORE_SEAL_OP = "store.seal"
_RowId = tuple[str, tuple[object, ...]]


class SealedDb:
    """One SQLite connection with sealed rows, a store seal and an audit outbox."""

    def __init__(
        self, db: sqlite3.Connection, lock: threading.RLock, root: bytes, audit: AuditLog
    ) -> None:
        self._db = db
        self._lock = lock
        self._audit = audit
        self._sealer = Sealer(root)
        self._root = root
        self._seals: dict[_RowId, bytes] = {}
        # Rows already checked against the seal they had then: a read of the same row under
        # the same seal needs no HMAC (any change of either misses this cache).
        self._verified: dict[_RowId, tuple[tuple[object, ...], bytes]] = {}
        self._depth = 0
        self._journal: list[tuple[_RowId, bytes | None]] = []
        self._staged: tuple[int, str, bytes] | None = None
        self._changed = False
        self._outbox_pending = True
        #: False while the SQL migrations run (they predate the seals).
        self.sealing = False

    @property
    def audit(self) -> AuditLog:
        """The audit log this database is linked to."""
        return self._audit

    # -- transactions -------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (inner calls join the outermost): committed with fresh seals
        and its staged audit entry when the outermost block ends, rolled back if it raises."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self._db
                finally:
                    self._depth -= 1
                return
            with self._audit.reserved():
                try:
                    self._db.execute("BEGIN IMMEDIATE")
                except sqlite3.Error as exc:
                    raise KmsError(f"the KMS database refused a transaction: {exc}") from exc
                self._depth, self._journal, self._staged, self._changed = 1, [], None, False
                try:
                    if self.sealing and self._outbox_pending:
                        self._db.execute(
                            "DELETE FROM audit_outbox WHERE seq <= ?", (self._audit.head[0],)
                        )
                        self._outbox_pending = False
                    yield self._db
                    if self.sealing and (self._changed or self._staged):
                        self._seal_store()
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:  # a failed COMMIT may have rolled back already
                        self._db.execute("ROLLBACK")
                    for row_id, old in reversed(self._journal):
                        if old is None:
                            self._seals.pop(row_id, None)
                        else:
                            self._seals[row_id] = old
                    raise
                finally:
                    self._depth = 0
                    staged, self._staged = self._staged, None
                if staged is not None:
                    # Committed: the state change and its entry are both in the database; the
                    # log line follows (or, after a crash here, the next open appends it).
                    self._audit.append_line(*staged)
                    self._outbox_pending = True

    def stage(
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
        """Stage the current transaction's audit entry (result ``ok``; at most one)."""
        if not self._depth or self._staged is not None:
            raise KmsError("an audit entry is staged only once, inside a transaction")
        self._staged = self._audit.entry(
            request_id=request_id,
            app=app,
            op=op,
            key=key,
            version=version,
            result="ok",
            credential=credential,
            detail=detail,
        )

    def _seal_store(self) -> None:
        if self._staged is not None:
            seq, mac, line = self._staged
            self._db.execute("INSERT INTO audit_outbox(seq, line) VALUES (?, ?)", (seq, line))
        else:
            seq, mac = self._audit.head
        store = self._sealer.store_mac(seq, mac, self._seals.values())
        self._db.execute(
            "INSERT INTO store_seal(id, audit_seq, audit_mac, mac) VALUES (1, ?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET audit_seq = excluded.audit_seq, "
            "audit_mac = excluded.audit_mac, mac = excluded.mac",
            (seq, mac, store),
        )

    # -- row seals ----------------------------------------------------------------------------

    def _remember(self, row_id: _RowId, seal: bytes | None) -> None:
        self._journal.append((row_id, self._seals.get(row_id)))
        if seal is None:
            self._seals.pop(row_id, None)
        else:
            self._seals[row_id] = seal
        self._changed = True

    def reseal(self, table_name: str, pk: Sequence[object]) -> None:
        """Re-seal the row of ``table_name`` with primary key ``pk`` as it now is (forget it
        if it is gone); inside a transaction."""
        if not self.sealing:
            return
        table = TABLES[table_name]
        row = self._db.execute(table.select + table.where, tuple(pk)).fetchone()
        if row is None:
            self._remember(Sealer.row_id(table, tuple(pk)), None)
            return
        seal = self._sealer.row_mac(table, row)
        self._db.execute(
            f"UPDATE {table.name} SET seal = ?" + table.where.replace("t.", ""), (seal, *pk)
        )
        self._remember(Sealer.row_id(table, row), seal)

    def checked(self, table_name: str, row: Sequence[object]) -> tuple[object, ...]:
        """``row`` (read with the table's ``select``) if it is the row the server sealed last;
        :class:`KmsError` naming it otherwise (fail closed)."""
        if not self.sealing:
            return tuple(row)
        table = TABLES[table_name]
        values = tuple(row)
        row_id = Sealer.row_id(table, values)
        expected = self._seals.get(row_id)
        if expected is not None and self._verified.get(row_id) == (values, expected):
            return values
        if expected is None or not hmac.compare_digest(
            expected, self._sealer.row_mac(table, values)
        ):
            raise StoreChangedError(f"{CHANGED}: {table.label(values)} fails its seal")
        self._verified[row_id] = (values, expected)
        return values

    def read(
        self, table_name: str, pk: Sequence[object], *, missing_is_changed: bool = False
    ) -> tuple[object, ...] | None:
        """The checked row of ``table_name`` with primary key ``pk``, or ``None``.

        ``missing_is_changed``: a row that is absent although the server sealed it last is
        refused (:class:`StoreChangedError`) rather than answered as missing: where "nothing
        there" grants something (a compare-and-swap against nothing), a row deleted while the
        server runs must not read as never written."""
        table = TABLES[table_name]
        # Checked under the lock: a writer's commit between the read and the check would make
        # a sound row look edited.
        with self._lock:
            row = self._db.execute(table.select + table.where, tuple(pk)).fetchone()
            if row is None:
                if missing_is_changed and self.sealing:
                    row_id = (table.name, tuple(pk))
                    if row_id in self._seals:
                        raise StoreChangedError(f"{CHANGED}: {table.label(tuple(pk))} is missing")
                return None
            return self.checked(table_name, row)

    # -- opening ------------------------------------------------------------------------------

    def schema_version(self) -> int:
        """The highest migration applied."""
        with self._lock:
            row = self._db.execute("SELECT max(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0)

    def migrate(self, path: Path, migrations: tuple[tuple[int, tuple[str, ...]], ...]) -> None:
        """Apply the SQL migrations not applied yet, each in one (unsealed) transaction."""
        with self._lock:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version INTEGER PRIMARY KEY, applied TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
            )
            current = self.schema_version()
            known = migrations[-1][0]
            if current > known:
                raise KmsError(
                    f"the KMS database {path} has schema version {current}, newer than "
                    f"this build knows ({known}); upgrade cipherspark"
                )
            for version, statements in migrations:
                if version <= current:
                    continue
                with self.transaction() as db:
                    for statement in statements:
                        db.execute(statement)
                    db.execute("INSERT INTO schema_migrations(version) VALUES (?)", (version,))

    def _reseal_legacy_versions(self, db: sqlite3.Connection) -> int:
        # Rows sealed before the app id was in the seal's associated data are re-sealed once,
        # with the root key, when the database is first sealed: serving then accepts only the
        # app-bound form, with no "old AAD" path an attacker could steer a row into. (Before
        # this step a copied blob was not caught across apps with one key name: that is what
        # the app id in the AAD, and the row seals, stop from now on.)
        rows = db.execute("SELECT app_id, key_name, version, sealed FROM key_versions").fetchall()
        for app_id, name, version, sealed in rows:
            db.execute(
                "UPDATE key_versions SET sealed = ? WHERE app_id = ? AND key_name = ? "
                "AND version = ?",
                (
                    keyring.reseal_legacy_primary(self._root, app_id, name, version, sealed),
                    app_id,
                    name,
                    version,
                ),
            )
        return len(rows)

    def open(self, *, restoring: bool, new_log: bool = False) -> None:
        """Verify (or, once, seal) the database and link it to the audit log.

        An unsealed database (from before sealed stores) is sealed here, its primary-key
        versions re-sealed with the app id bound, unless the audit log says this
        data directory's store was sealed already: then it is an older or stripped copy, and
        is refused. A sealed one must verify row by row and as a whole; its audit outbox is
        appended to the log; its audit head must be in the log; and (unless ``restoring``) no
        state change the log records may be missing from it. ``new_log``: a restore into a
        directory that has no audit log (a lost data directory rebuilt from a backup and its
        root key): the log starts with the restore's own entry.
        """
        with self._lock, self._audit.reserved():
            store = self._db.execute(
                "SELECT audit_seq, audit_mac, mac FROM store_seal WHERE id = 1"
            ).fetchone()
            if store is None:
                self._adopt()
                return
            self._verify_rows(int(store[0]), str(store[1]), bytes(store[2]))
            self.sealing = True
            if new_log and restoring and self._audit.head[0] == 0:
                # The backup's pending entries belong to the lost log, not to the new one.
                self._db.execute("DELETE FROM audit_outbox")
                return
            for seq, line in self._db.execute(
                "SELECT seq, line FROM audit_outbox ORDER BY seq"
            ).fetchall():
                if int(seq) > self._audit.head[0] + 1:
                    raise KmsError(
                        f"the audit log ends at entry {self._audit.head[0]}, before the KMS "
                        f"database's audit entry {seq}: the log was truncated, or the database "
                        "belongs to another data directory"
                    )
                if int(seq) > self._audit.head[0]:
                    self._audit.replay(line if isinstance(line, bytes) else str(line).encode())
            self._check_head(int(store[0]), str(store[1]), restoring=restoring)

    def _adopt(self) -> None:
        if self._audit.has_op(STORE_SEAL_OP):
            raise StoreChangedError(
                f"{CHANGED}: it has no store seal, but this data directory's audit log records "
                "that its store was sealed (an older, stripped or edited copy replaced it)"
            )
        self.sealing = True
        with self.transaction() as db:
            resealed = self._reseal_legacy_versions(db)
            rows = 0
            for table in TABLES.values():
                for row in db.execute(table.select).fetchall():
                    self.reseal(table.name, row[: len(table.pk)])
                    rows += 1
            self.stage(
                request_id="store-seal",
                app="admin",
                op=STORE_SEAL_OP,
                key=None,
                version=None,
                credential=None,
                detail={"rows": str(rows), "resealed_versions": str(resealed)},
            )

    def _verify_rows(self, seq: int, mac: str, store: bytes) -> None:
        seals: dict[_RowId, bytes] = {}
        for table in TABLES.values():
            for row in self._db.execute(table.select):
                expected = self._sealer.row_mac(table, row)
                stored = row[-1]
                if not isinstance(stored, bytes) or not hmac.compare_digest(stored, expected):
                    raise StoreChangedError(f"{CHANGED}: {table.label(row)} fails its seal")
                seals[Sealer.row_id(table, row)] = expected
        if not hmac.compare_digest(store, self._sealer.store_mac(seq, mac, seals.values())):
            raise StoreChangedError(
                f"{CHANGED}: the store seal does not match its rows (a row was deleted, added "
                "or rolled back to an older copy, or rows come from different copies)"
            )
        self._seals = seals

    def _check_head(self, seq: int, mac: str, *, restoring: bool) -> None:
        found, later = self._audit.since(seq)
        if found is None:
            raise KmsError(
                f"the audit log ends at entry {self._audit.head[0]}, before the KMS database's "
                f"last change (entry {seq}): the log was truncated, or the database belongs to "
                "another data directory"
            )
        if not hmac.compare_digest(found, mac):
            raise KmsError(
                f"audit log entry {seq} is not the one the KMS database was sealed with: the "
                "database and the audit log do not belong together"
            )
        if restoring:
            return
        for doc in later:
            if doc.get("op") in MUTATING_OPS and doc.get("result") == "ok":
                raise KmsError(
                    f"the KMS database is older than its audit log: it lacks the change of audit "
                    f"entry {doc['seq']} ({doc['op']}); it was rolled back or replaced outside "
                    "'cipherspark kms restore'"
                )

    @property
    def in_transaction(self) -> bool:
        """Whether this thread is inside :meth:`transaction` (the lock is held)."""
        return self._depth > 0 and self._lock._is_owned()  # type: ignore[attr-defined]

    def select(
        self, table_name: str, where: str, params: tuple[object, ...]
    ) -> list[tuple[object, ...]]:
        """The checked rows of ``table_name`` matching ``where`` (SQL over alias ``t``)."""
        table = TABLES[table_name]
        with self._lock:
            rows = self._db.execute(f"{table.select} {where}", params).fetchall()
            return [self.checked(table_name, row) for row in rows]

    def row_count(self) -> int:
        """How many sealed rows the store holds."""
        return len(self._seals)

    def table(self, name: str) -> SealTable:
        """The sealed table ``name``."""
        return TABLES[name]
