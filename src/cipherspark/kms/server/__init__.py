"""The cipherspark KMS server: the key service a cluster trusts.

A data directory holds everything the server needs::

    DIR/root.key    32 random bytes (mode 0600) sealing every primary key; never in the database
    DIR/kms.db      SQLite (WAL): apps (hashed API keys), keys, sealed key versions, settings
    DIR/audit.log   one HMAC-chained JSON line per key operation
    DIR/tls/        the self-signed certificate and key, when the operator brings none

:func:`init_data_dir` creates it and returns the admin token (shown once); :func:`plan_server`
resolves TLS; :func:`run_server` serves until SIGINT / SIGTERM (graceful shutdown).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from cipherspark.errors import KmsError, UsageError
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
    "run_server",
    "verify_audit",
]

ROOT_KEY = "root.key"
DATABASE = "kms.db"
AUDIT_LOG = "audit.log"


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


def open_service(directory: str | os.PathLike[str]) -> tuple[KeyService, SqliteStorage, AuditLog]:
    """Open an initialised data directory: the service and what to close afterwards."""
    data_dir = Path(directory).absolute()
    root = keyring.load_root_key(data_dir / ROOT_KEY)
    storage = SqliteStorage(data_dir / DATABASE)
    for name in (DATABASE, f"{DATABASE}-wal", f"{DATABASE}-shm"):
        path = data_dir / name
        if path.exists():
            path.chmod(0o600)
    audit = AuditLog(data_dir / AUDIT_LOG, root)
    return KeyService(storage, root, audit), storage, audit


def plan_server(directory: str | os.PathLike[str], *, host: str = "127.0.0.1", port: int = 8443,
                tls_cert: Path | None = None, tls_key: Path | None = None,
                unsafe_plaintext: bool = False) -> ServerPlan:
    """Check the data directory and settle TLS (creating a self-signed certificate if needed)."""
    data_dir = Path(directory).absolute()
    if not (data_dir / ROOT_KEY).exists():
        raise KmsError(f"{data_dir} is not a KMS data directory: run 'cipherspark kms init'")
    if not 0 <= port <= 65535:
        raise UsageError(f"port {port} is out of range")
    if (tls_cert is None) != (tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    if unsafe_plaintext:
        if tls_cert is not None:
            raise UsageError("--unsafe-plaintext cannot be combined with --tls-cert")
        return ServerPlan(data_dir, host, port, None, None, None, False)
    created = False
    if tls_cert is None or tls_key is None:
        tls_cert, tls_key, created = ensure_self_signed(data_dir / "tls", host)
    for path in (tls_cert, tls_key):
        if not path.is_file():
            raise UsageError(f"TLS file {path} does not exist")
    return ServerPlan(data_dir, host, port, tls_cert, tls_key,
                      certificate_fingerprint(tls_cert), created)


def run_server(plan: ServerPlan) -> None:
    """Serve until SIGINT / SIGTERM; in-flight requests finish first (graceful shutdown)."""
    import uvicorn

    from cipherspark.kms.server.app import create_app

    service, storage, audit = open_service(plan.data_dir)
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
