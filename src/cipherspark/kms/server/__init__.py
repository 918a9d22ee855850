"""The cipherspark KMS server: the key service a cluster trusts.

A data directory holds everything the server needs::

    DIR/root.key    32 random bytes (mode 0600) sealing every primary key; never in the database
    DIR/kms.db      SQLite (WAL): apps (hashed API keys), keys, sealed key versions, settings
    DIR/audit.log   one HMAC-chained JSON line per key operation
    DIR/tls/        the self-signed certificate and key, when the operator brings none

:func:`init_data_dir` creates it and returns the admin token (shown once); :func:`plan_server`
resolves TLS and the PCCS; :func:`run_server` serves until SIGINT / SIGTERM (graceful shutdown).
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

from cipherspark.attestation.dcap import CollateralSource, DcapVerifier
from cipherspark.attestation.pccs import PccsCollateral
from cipherspark.errors import AttestationError, KmsError, UsageError
from cipherspark.kms.server import keyring
from cipherspark.kms.server.audit import AuditLog, AuditReport, verify_audit_log
from cipherspark.kms.server.service import KeyService
from cipherspark.kms.server.storage import SqliteStorage
from cipherspark.kms.server.tls import certificate_fingerprint, ensure_self_signed

__all__ = [
    "InitResult",
    "ServerPlan",
    "backup_data_dir",
    "init_data_dir",
    "open_service",
    "plan_server",
    "restore_data_dir",
    "run_server",
    "verify_audit",
]

ROOT_KEY = "root.key"
DATABASE = "kms.db"
AUDIT_LOG = "audit.log"
# Held (flock, exclusive) by a serving process for its whole life: restore checks it. The kernel
# drops the lock when the process dies, even by SIGKILL, so a stale file never blocks anything.
SERVER_LOCK = "server.lock"


@contextmanager
def _data_dir_lock(data_dir: Path, purpose: str) -> Iterator[None]:
    """Hold the data directory's server lock, or :class:`KmsError` if a process holds it."""
    fd = os.open(data_dir / SERVER_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise KmsError(f"a KMS server is running on {data_dir}; stop it before {purpose}"
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
class ServerPlan:
    """Where and how the server will listen."""

    data_dir: Path
    host: str
    port: int
    cert_file: Path | None
    key_file: Path | None
    fingerprint: str | None
    created_certificate: bool
    #: Where DCAP collateral comes from; None: from each attested-unwrap request.
    pccs: PccsCollateral | None = None

    @property
    def url(self) -> str:
        """The base URL clients use."""
        scheme = "http" if self.cert_file is None else "https"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"


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
    service, storage, audit = open_service(data_dir)
    try:
        token = keyring.new_secret()
        service.set_admin_token(token)
    finally:
        storage.close()
        audit.close()
    return InitResult(data_dir=data_dir, admin_token=token)


def open_service(directory: str | os.PathLike[str], *, pccs: CollateralSource | None = None,
                 ) -> tuple[KeyService, SqliteStorage, AuditLog]:
    """Open an initialised data directory: the service and what to close afterwards.

    With ``pccs``, DCAP quotes are verified with collateral from it (never from the request).
    """
    data_dir = Path(directory).absolute()
    root = keyring.load_root_key(data_dir / ROOT_KEY)
    storage = SqliteStorage(data_dir / DATABASE)
    for name in (DATABASE, f"{DATABASE}-wal", f"{DATABASE}-shm"):
        path = data_dir / name
        if path.exists():
            path.chmod(0o600)
    audit = AuditLog(data_dir / AUDIT_LOG, root)
    dcap = None if pccs is None else DcapVerifier(pccs)
    return KeyService(storage, root, audit, dcap=dcap), storage, audit


def plan_server(directory: str | os.PathLike[str], *, host: str = "127.0.0.1", port: int = 8443,
                tls_cert: Path | None = None, tls_key: Path | None = None,
                unsafe_plaintext: bool = False, pccs_url: str | None = None,
                pccs_ca: Path | None = None) -> ServerPlan:
    """Check the data directory and settle TLS (creating a self-signed certificate if needed).

    ``pccs_url`` (https) names the PCCS DCAP collateral is fetched from, cached until it is due;
    ``pccs_ca`` pins the CA its certificate must chain to (default: the system's roots).
    """
    data_dir = Path(directory).absolute()
    if not (data_dir / ROOT_KEY).exists():
        raise KmsError(f"{data_dir} is not a KMS data directory: run 'cipherspark kms init'")
    if not 0 <= port <= 65535:
        raise UsageError(f"port {port} is out of range")
    if (tls_cert is None) != (tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    if pccs_ca is not None and not pccs_url:
        raise UsageError("--pccs-ca needs --pccs-url")
    try:
        pccs = PccsCollateral(pccs_url, ca_file=pccs_ca) if pccs_url else None
    except AttestationError as exc:
        raise UsageError(str(exc)) from exc
    if unsafe_plaintext:
        if tls_cert is not None:
            raise UsageError("--unsafe-plaintext cannot be combined with --tls-cert")
        return ServerPlan(data_dir, host, port, None, None, None, False, pccs)
    created = False
    if tls_cert is None or tls_key is None:
        tls_cert, tls_key, created = ensure_self_signed(data_dir / "tls", host)
    for path in (tls_cert, tls_key):
        if not path.is_file():
            raise UsageError(f"TLS file {path} does not exist")
    return ServerPlan(data_dir, host, port, tls_cert, tls_key,
                      certificate_fingerprint(tls_cert), created, pccs)


def run_server(plan: ServerPlan) -> None:
    """Serve until SIGINT / SIGTERM; in-flight requests finish first (graceful shutdown).

    One process per data directory: the audit chain and the attestation nonces live in this
    process, so a second server on the same directory is refused.
    """
    with _data_dir_lock(plan.data_dir, "starting another one (one process per data directory)"):
        _serve(plan)


def _serve(plan: ServerPlan) -> None:
    import uvicorn

    from cipherspark.kms.server._http import http_protocol
    from cipherspark.kms.server.app import create_app

    service, storage, audit = open_service(plan.data_dir, pccs=plan.pccs)
    try:
        service.purge_due_keys()
        config = uvicorn.Config(
            create_app(service), host=plan.host, port=plan.port,
            ssl_certfile=None if plan.cert_file is None else str(plan.cert_file),
            ssl_keyfile=None if plan.key_file is None else str(plan.key_file),
            # The audit log is the record of key operations; access lines would only add
            # per-request cost (and URLs never carry secrets anyway).
            access_log=False, server_header=False, timeout_graceful_shutdown=10,
            log_level="info", timeout_keep_alive=30,
            # Nothing uses the client address; do not trust or parse X-Forwarded-* headers.
            proxy_headers=False, http=http_protocol(),
        )
        uvicorn.Server(config).run()
    finally:
        storage.close()
        audit.close()


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
    from cipherspark.kms.server.storage import MIGRATIONS

    try:
        db = sqlite3.connect(f"{backup.absolute().as_uri()}?mode=ro", uri=True)
        try:
            if db.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                raise KmsError(f"{backup} fails SQLite's integrity check")
            version = db.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
            sample = db.execute("SELECT key_name, version, sealed FROM key_versions "
                                "ORDER BY key_name, version LIMIT 1").fetchone()
            has_admin = db.execute("SELECT 1 FROM settings WHERE name = 'admin_token'"
                                   ).fetchone()
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
            raise KmsError(f"{backup} was not sealed under this data directory's root key "
                           "(restore the matching root.key first)") from exc


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
        raise KmsError(f"{data_dir} has no root key: put the root.key that matches the backup "
                       "there first")
    if not backup.is_file():
        raise KmsError(f"{backup} does not exist")
    root = keyring.load_root_key(data_dir / ROOT_KEY)
    _check_backup(backup, root)
    with _data_dir_lock(data_dir, "restoring"):
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
            audit.record(request_id=f"restore-{int(time.time())}", app="admin",
                         op="kms.restore", key=None, version=None, result="ok")
        finally:
            audit.close()
    return kept
