"""The cipherspark KMS server: the key service a cluster trusts.

* :mod:`~cipherspark.kms.server.datadir`: the data directory (root key, SQLite database, audit
  log, lock) — :func:`init_data_dir` (prints the admin token once), :func:`open_service`,
  :func:`backup_data_dir`, :func:`restore_data_dir`, :func:`verify_audit`;
* :mod:`~cipherspark.kms.server.serve`: :func:`plan_server` (address, TLS, PCCS) and
  :func:`run_server` (until SIGINT / SIGTERM, graceful shutdown);
* :mod:`~cipherspark.kms.server.service`: the rules, independent of HTTP (:class:`KeyService`),
  with :mod:`~cipherspark.kms.server.permissions` (roles, who may do what),
  :mod:`~cipherspark.kms.server.accounts` (apps, credentials, logins),
  :mod:`~cipherspark.kms.server.transit` and :mod:`~cipherspark.kms.server.release` (attested
  release); :mod:`~cipherspark.kms.server.storage` holds the state
  (:mod:`~cipherspark.kms.server.sqlite`: in SQLite, sealed under the root key);
* :mod:`~cipherspark.kms.server.app` and :mod:`~cipherspark.kms.server.api`: the HTTP API;
* :mod:`~cipherspark.kms.server.launch`: a server as a child process on 127.0.0.1.

This module only re-exports; see docs/kms.md.
"""

from __future__ import annotations

from cipherspark.kms.server.datadir import (
    AUDIT_LOG,
    DATABASE,
    ROOT_KEY,
    SERVER_LOCK,
    BackupReport,
    InitResult,
    OpenedService,
    backup_data_dir,
    init_data_dir,
    open_service,
    restore_data_dir,
    verify_audit,
)
from cipherspark.kms.server.serve import ServerPlan, plan_server, run_server

__all__ = [
    "AUDIT_LOG",
    "DATABASE",
    "ROOT_KEY",
    "SERVER_LOCK",
    "BackupReport",
    "InitResult",
    "OpenedService",
    "ServerPlan",
    "backup_data_dir",
    "init_data_dir",
    "open_service",
    "plan_server",
    "restore_data_dir",
    "run_server",
    "verify_audit",
]
