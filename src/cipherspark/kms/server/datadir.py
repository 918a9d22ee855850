"""The KMS server's data directory: its layout, lock, creation, opening, backup and restore.

::

    DIR/root.key     32 random bytes (mode 0600) sealing every primary key; never in the database
    DIR/kms.db       SQLite (WAL): apps, credentials (hashed API keys), keys, sealed versions
    DIR/audit.log    one HMAC-chained JSON line per key operation
    DIR/server.lock  held by the serving process (one process per data directory)
    DIR/tls/         the self-signed certificate and key, when the operator brings none

:func:`init_data_dir` creates it and returns the admin token (shown once); :func:`open_service`
opens it as one closable :class:`OpenedService`; :func:`backup_data_dir` and
:func:`restore_data_dir` copy the database out and back; :func:`verify_audit` checks the audit
chain.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

from cipherspark.attestation.dcap import CollateralSource, DcapVerifier
from cipherspark.errors import KmsError
from cipherspark.kms.server import keyring
from cipherspark.kms.server.audit import AuditLog, AuditReport, verify_audit_log
from cipherspark.kms.server.service import KeyService
from cipherspark.kms.server.storage import MIGRATIONS, SqliteStorage

__all__ = [
    "AUDIT_LOG",
    "DATABASE",
    "ROOT_KEY",
    "SERVER_LOCK",
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
        token = keyring.new_secret()
        opened.service.set_admin_token(token)
    return InitResult(data_dir=data_dir, admin_token=token)


def open_service(
    directory: str | os.PathLike[str], *, pccs: CollateralSource | None = None
) -> OpenedService:
    """Open an initialised data directory: the service, to be closed after use.

    With ``pccs``, DCAP quotes are verified with collateral from it (never from the request).
    """
    data_dir = Path(directory).absolute()
    root = keyring.load_root_key(data_dir / ROOT_KEY)
    storage = SqliteStorage(data_dir / DATABASE)
    for name in (DATABASE, f"{DATABASE}-wal", f"{DATABASE}-shm"):
        path = data_dir / name
        if path.exists():
            path.chmod(0o600)
    try:
        audit = AuditLog(data_dir / AUDIT_LOG, root)
    except BaseException:
        storage.close()
        raise
    dcap = None if pccs is None else DcapVerifier(pccs)
    return OpenedService(KeyService(storage, root, audit, dcap=dcap), storage, audit, root)


def verify_audit(directory: str | os.PathLike[str]) -> AuditReport:
    """Verify the data directory's audit chain (needs the root key)."""
    data_dir = Path(directory).absolute()
    root = keyring.load_root_key(data_dir / ROOT_KEY)
    return verify_audit_log(data_dir / AUDIT_LOG, root)


def backup_data_dir(directory: str | os.PathLike[str], destination: Path) -> None:
    """A consistent copy of the database (safe while the server runs); the root key is not
    included: back it up separately, and never next to the database."""
    if destination.exists():
        raise KmsError(f"{destination} exists already")
    data_dir = Path(directory).absolute()
    if not (data_dir / DATABASE).exists():
        raise KmsError(f"{data_dir} is not a KMS data directory")
    storage = SqliteStorage(data_dir / DATABASE)
    try:
        storage.backup(destination)
        destination.chmod(0o600)
    finally:
        storage.close()


def _check_backup(backup: Path, root: bytes) -> None:
    """Refuse a file that is not a sound KMS database sealed under ``root``."""
    try:
        db = sqlite3.connect(f"{backup.absolute().as_uri()}?mode=ro", uri=True)
        try:
            if db.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                raise KmsError(f"{backup} fails SQLite's integrity check")
            version = db.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
            sample = db.execute(
                "SELECT key_name, version, sealed FROM key_versions "
                "ORDER BY key_name, version LIMIT 1"
            ).fetchone()
            has_admin = db.execute("SELECT 1 FROM settings WHERE name = 'admin_token'").fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise KmsError(f"{backup} is not a KMS database backup: {exc}") from exc
    if not isinstance(version, int) or version > MIGRATIONS[-1][0]:
        raise KmsError(f"{backup} has schema version {version}, which this build cannot use")
    if has_admin is None:
        raise KmsError(f"{backup} is not a KMS database backup: it has no admin token")
    if sample is not None:
        try:
            keyring.unseal_primary(root, str(sample[0]), int(sample[1]), bytes(sample[2]))
        except KmsError as exc:
            raise KmsError(
                f"{backup} was not sealed under this data directory's root key "
                "(restore the matching root.key first)"
            ) from exc


def restore_data_dir(directory: str | os.PathLike[str], backup: Path) -> Path | None:
    """Replace the data directory's database with ``backup`` (made by :func:`backup_data_dir`).

    Refuses while a server runs on the directory, and refuses a backup that is damaged, from a
    newer build, or sealed under another root key. The copy goes through SQLite's backup API
    into the live database file, so its WAL stays consistent; the database it replaces is kept
    next to it first. The restore is recorded in the audit log. Answers the path of the kept
    database (``None`` when there was none).
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
        kept = None
        if (data_dir / DATABASE).exists():
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            kept = data_dir / f"{DATABASE}.pre-restore-{stamp}-{os.getpid()}"
            backup_data_dir(data_dir, kept)
        try:
            source = sqlite3.connect(f"{backup.absolute().as_uri()}?mode=ro", uri=True)
            target = sqlite3.connect(data_dir / DATABASE)
            try:
                source.backup(target)
                target.execute("PRAGMA journal_mode=WAL")
                target.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                source.close()
                target.close()
        except sqlite3.Error as exc:
            raise KmsError(f"cannot restore {backup} into {data_dir}: {exc}") from exc
        (data_dir / DATABASE).chmod(0o600)
        # Re-open through the storage layer: migrations of an older backup, integrity check.
        storage = SqliteStorage(data_dir / DATABASE)
        try:
            if storage.integrity_check() != "ok":
                raise KmsError(f"the restored database in {data_dir} fails its integrity check")
        finally:
            storage.close()
        audit = AuditLog(data_dir / AUDIT_LOG, root)
        try:
            audit.record(
                request_id=f"restore-{int(time.time())}",
                app="admin",
                op="kms.restore",
                key=None,
                version=None,
                result="ok",
            )
        finally:
            audit.close()
    return kept
