"""The KMS server's data directory: its layout, lock, creation, opening, backup and restore.

::

    DIR/root.key     32 random bytes (mode 0600) sealing every primary key; never in the database
    DIR/kms.db       SQLite (WAL): apps, credentials (hashed API keys), keys, sealed versions;
                     every security row sealed, one store seal linking it to the audit log
    DIR/audit.log    one HMAC-chained JSON line per key operation
    DIR/server.lock  held by the serving process (one process per data directory)
    DIR/tls/         the self-signed certificate and key, when the operator brings none

:func:`init_data_dir` creates it and returns the admin token (shown once); :func:`open_service`
opens it as one closable :class:`OpenedService` (repairing a torn last audit line, then verifying
the sealed store against the audit log: see :mod:`._store`); :func:`backup_data_dir` and
:func:`restore_data_dir` copy the database out and back, verified and audited;
:func:`verify_audit` checks the audit chain.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

from cipherspark.attestation.dcap import CollateralSource, DcapVerifier
from cipherspark.errors import KmsError
from cipherspark.kms.server import keyring
from cipherspark.kms.server._seal import TABLES, Sealer
from cipherspark.kms.server.audit import AuditLog, AuditReport, verify_audit_log
from cipherspark.kms.server.service import KeyService
from cipherspark.kms.server.sqlite import SqliteStorage
from cipherspark.kms.server.storage import MIGRATIONS

__all__ = [
    "AUDIT_LOG",
    "DATABASE",
    "ROOT_KEY",
    "SERVER_LOCK",
    "BackupReport",
    "InitResult",
    "OpenedService",
    "backup_data_dir",
    "data_dir_lock",
    "init_data_dir",
    "open_service",
    "restore_data_dir",
    "verify_audit",
]

ROOT_KEY = "root.key"
DATABASE = "kms.db"
AUDIT_LOG = "audit.log"
# Held (flock, exclusive) by a serving process for its whole life: restore checks it. The kernel
# drops the lock when the process dies, even by SIGKILL, so a stale file never blocks anything.
SERVER_LOCK = "server.lock"


@contextmanager
def data_dir_lock(data_dir: Path, purpose: str) -> Iterator[None]:
    """Hold the data directory's server lock, or :class:`KmsError` if a process holds it.

    ``purpose`` completes the refusal: "a KMS server is running on DIR; stop it before ...".
    """
    fd = os.open(data_dir / SERVER_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise KmsError(
                f"a KMS server is running on {data_dir}; stop it before {purpose}"
            ) from exc
        yield
    finally:
        os.close(fd)


@dataclass(frozen=True)
class InitResult:
    """A new data directory and its admin token (printed once, stored only hashed)."""

    data_dir: Path
    admin_token: str = field(repr=False)


@dataclass(frozen=True)
class OpenedService:
    """An opened data directory: the key service and what it runs on, closed together.

    ``storage`` and ``audit`` are there for callers that build a :class:`KeyService` of their
    own over the same directory (other clocks or verifiers, in tests); ``root`` is the root key.
    """

    service: KeyService
    storage: SqliteStorage
    audit: AuditLog
    root: bytes = field(repr=False)

    def close(self) -> None:
        """Close the database and the audit log."""
        try:
            self.storage.close()
        finally:
            self.audit.close()

    def __enter__(self) -> Self:
        """The opened directory; closed when the ``with`` block ends."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close on leaving the ``with`` block."""
        self.close()


@dataclass(frozen=True)
class BackupReport:
    """A backup written by :func:`backup_data_dir`: the file, its SHA-256 and the audit head
    its store seal names (keep these off the box, with the root key's backup)."""

    path: Path
    digest: str
    audit_seq: int
    audit_mac: str


def init_data_dir(directory: str | os.PathLike[str]) -> InitResult:
    """Create the root key, the database and the admin token in a new (or empty) directory."""
    data_dir = Path(directory).absolute()
    if (data_dir / ROOT_KEY).exists() or (data_dir / DATABASE).exists():
        raise KmsError(f"{data_dir} is already a KMS data directory")
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise KmsError(f"cannot create {data_dir}: {exc.strerror}") from exc
    keyring.create_root_key(data_dir / ROOT_KEY)
    with open_service(data_dir) as opened:
        # Audited (in the transaction that stores its hash) like every later rotation.
        token = opened.service.accounts.rotate_admin_token("init")
    return InitResult(data_dir=data_dir, admin_token=token)


def _chmod_database(data_dir: Path) -> None:
    for name in (DATABASE, f"{DATABASE}-wal", f"{DATABASE}-shm"):
        path = data_dir / name
        if path.exists():
            path.chmod(0o600)


def open_service(
    directory: str | os.PathLike[str], *, pccs: CollateralSource | None = None
) -> OpenedService:
    """Open an initialised data directory: the service, to be closed after use.

    The audit log is opened first (a torn last line is cut off once the rest verifies), then
    the database is verified against it (refused with one message naming the table and row if
    it was changed outside the server); a repair is audited as ``audit_repair``. With
    ``pccs``, DCAP quotes are verified with collateral from it (never from the request).
    """
    data_dir = Path(directory).absolute()
    root = keyring.load_root_key(data_dir / ROOT_KEY)
    if not (data_dir / DATABASE).exists() and (data_dir / AUDIT_LOG).exists():
        raise KmsError(f"{data_dir} has an audit log but no database {DATABASE}: restore it first")
    audit = AuditLog(data_dir / AUDIT_LOG, root)
    try:
        storage = SqliteStorage(data_dir / DATABASE, root, audit)
    except BaseException:
        audit.close()
        raise
    _chmod_database(data_dir)
    if audit.repaired is not None:
        audit.record(
            request_id="audit-repair",
            app="admin",
            op="audit_repair",
            key=None,
            version=None,
            result="ok",
            detail=audit.repaired,
        )
    dcap = None if pccs is None else DcapVerifier(pccs)
    return OpenedService(KeyService(storage, root, audit, dcap=dcap), storage, audit, root)


def verify_audit(directory: str | os.PathLike[str]) -> AuditReport:
    """Verify the data directory's audit chain (needs the root key)."""
    data_dir = Path(directory).absolute()
    root = keyring.load_root_key(data_dir / ROOT_KEY)
    return verify_audit_log(data_dir / AUDIT_LOG, root)


def _create_exclusive(path: Path) -> None:
    # 0600 from the moment the file exists, and never a file that was there before (a
    # pre-existing name could be a link to, or a file readable by, someone else).
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    except FileExistsError as exc:
        raise KmsError(f"{path} exists already") from exc
    except OSError as exc:
        raise KmsError(f"cannot create {path}: {exc.strerror}") from exc


def _copy_database(source: Path, destination: Path, *, read_only: bool) -> None:
    """SQLite's online backup of ``source`` into ``destination`` (an empty file of ours)."""
    uri = f"{source.absolute().as_uri()}?mode=ro" if read_only else source.absolute().as_uri()
    try:
        src = sqlite3.connect(uri, uri=True)
        target = sqlite3.connect(destination)
        try:
            src.backup(target)
        finally:
            src.close()
            target.close()
    except sqlite3.Error as exc:
        raise KmsError(f"cannot copy the KMS database {source} to {destination}: {exc}") from exc


def _file_digest(path: Path) -> str:
    with open(path, "rb") as f:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()


def _store_head(path: Path) -> tuple[int, str]:
    db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT audit_seq, audit_mac FROM store_seal WHERE id = 1").fetchone()
    except sqlite3.Error:
        row = None
    finally:
        db.close()
    return (0, "none") if row is None else (int(row[0]), str(row[1]))


def backup_data_dir(directory: str | os.PathLike[str], destination: Path) -> BackupReport:
    """A consistent copy of the database (safe while the server runs), created exclusively with
    mode 0600 and audited as ``backup`` (its digest and store-seal head, never a secret). The
    root key is not included: back it up separately, and never next to the database."""
    data_dir = Path(directory).absolute()
    if not (data_dir / DATABASE).exists():
        raise KmsError(f"{data_dir} is not a KMS data directory")
    root = keyring.load_root_key(data_dir / ROOT_KEY)
    _create_exclusive(destination)
    try:
        _copy_database(data_dir / DATABASE, destination, read_only=False)
        digest = _file_digest(destination)
        seq, mac = _store_head(destination)
        audit = AuditLog(data_dir / AUDIT_LOG, root)
        try:
            audit.record(
                request_id="backup",
                app="admin",
                op="backup",
                key=None,
                version=None,
                result="ok",
                detail={"destination_digest": digest, "store_seq": str(seq), "store_mac": mac},
            )
        finally:
            audit.close()
    except BaseException:
        destination.unlink(missing_ok=True)
        raise
    return BackupReport(destination, digest, seq, mac)


def _check_backup(backup: Path, root: bytes) -> None:
    """Refuse a file that is not a sound KMS database sealed under ``root`` (the full
    verification follows, on a copy, before anything is replaced)."""
    try:
        db = sqlite3.connect(f"{backup.absolute().as_uri()}?mode=ro", uri=True)
        try:
            if db.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                raise KmsError(f"{backup} fails SQLite's integrity check")
            version = db.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
            admin = (
                db.execute(f"{TABLES['settings'].select} WHERE t.name = 'admin_token'").fetchone()
                if isinstance(version, int) and version >= 6
                else None
            )
            has_admin = db.execute("SELECT 1 FROM settings WHERE name = 'admin_token'").fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise KmsError(f"{backup} is not a KMS database backup: {exc}") from exc
    if not isinstance(version, int) or version > MIGRATIONS[-1][0]:
        raise KmsError(f"{backup} has schema version {version}, which this build cannot use")
    if has_admin is None:
        raise KmsError(f"{backup} is not a KMS database backup: it has no admin token")
    if admin is not None and not (
        isinstance(admin[-1], bytes)
        and hmac.compare_digest(admin[-1], Sealer(root).row_mac(TABLES["settings"], admin))
    ):
        raise KmsError(
            f"{backup} was not sealed under this data directory's root key (restore the "
            "matching root.key first), or it was edited"
        )


def restore_data_dir(directory: str | os.PathLike[str], backup: Path) -> Path | None:
    """Replace the data directory's database with ``backup`` (made by :func:`backup_data_dir`).

    Refuses while a server runs on the directory, and refuses a backup that is damaged, from a
    newer build, sealed under another root key, edited (any row or the store fails its seal),
    or whose audit head is not in this directory's audit log. The backup is copied to a new
    file beside the database and verified there, so a refusal changes nothing; the database it
    replaces is kept next to it first; the restore is audited (``restore``: the source's digest
    and its store-seal head) in the restored database's own outbox, and its store seal then
    names that entry. Answers the path of the kept database (``None`` when there was none).
    """
    data_dir = Path(directory).absolute()
    if not (data_dir / ROOT_KEY).exists():
        raise KmsError(
            f"{data_dir} has no root key: put the root.key that matches the backup there first"
        )
    if not backup.is_file():
        raise KmsError(f"{backup} does not exist")
    root = keyring.load_root_key(data_dir / ROOT_KEY)
    _check_backup(backup, root)
    with data_dir_lock(data_dir, "restoring"):
        staging = data_dir / f"{DATABASE}.restoring-{os.getpid()}"
        _create_exclusive(staging)
        try:
            _copy_database(backup, staging, read_only=True)
            kept = _restore_verified(data_dir, backup, staging, root)
        finally:
            staging.unlink(missing_ok=True)
    return kept


def _restore_verified(data_dir: Path, backup: Path, staging: Path, root: bytes) -> Path | None:
    digest = _file_digest(backup)
    # A directory without an audit log is being rebuilt from the backup and its root key: the
    # new log starts with the restore's entry. (At start-up a missing log is refused.)
    new_log = not (data_dir / AUDIT_LOG).exists() and not (data_dir / DATABASE).exists()
    audit = AuditLog(data_dir / AUDIT_LOG, root)
    try:
        # Verified against this directory's log (the backup may be older than the log).
        storage = SqliteStorage(staging, root, audit, restoring=True, new_log=new_log)
        try:
            if storage.integrity_check() != "ok":
                raise KmsError(f"the restored database {backup} fails its integrity check")
            seq, mac = storage.store_head()
            kept = None
            if (data_dir / DATABASE).exists():
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
                kept = data_dir / f"{DATABASE}.pre-restore-{stamp}-{os.getpid()}"
                _create_exclusive(kept)
                _copy_database(data_dir / DATABASE, kept, read_only=False)
            with storage.transaction():
                storage.stage_audit(
                    request_id="restore",
                    app="admin",
                    op="restore",
                    key=None,
                    version=None,
                    credential=None,
                    detail={
                        "source_digest": digest,
                        "store_seq": str(seq),
                        "store_mac": mac,
                        **({"audit_log": "new"} if new_log else {}),
                    },
                )
        finally:
            storage.close()
    finally:
        audit.close()
    # The old database's WAL must not be applied to the new file: remove it first.
    for name in (f"{DATABASE}-wal", f"{DATABASE}-shm"):
        (data_dir / name).unlink(missing_ok=True)
    os.replace(staging, data_dir / DATABASE)
    _chmod_database(data_dir)
    return kept
