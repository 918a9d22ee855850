"""Serving a data directory in this process: :func:`plan_server` settles the address, TLS and
the PCCS; :func:`run_server` serves until SIGINT / SIGTERM (graceful shutdown).

(:mod:`cipherspark.kms.server.launch` runs a server as a child process instead.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cipherspark.attestation.pccs import PccsCollateral
from cipherspark.errors import AttestationError, KmsError, UsageError
from cipherspark.kms.server.datadir import ROOT_KEY, data_dir_lock, open_service
from cipherspark.kms.server.tls import (
    certificate_fingerprint,
    ensure_self_signed,
    ssl_context_factory,
)

__all__ = ["ServerPlan", "plan_server", "run_server"]


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
    #: Serve /docs, /redoc and /openapi.json (off by default: they map the API for anyone).
    api_docs: bool = False

    @property
    def url(self) -> str:
        """The base URL clients use."""
        scheme = "http" if self.cert_file is None else "https"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"


def plan_server(
    directory: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8443,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    unsafe_plaintext: bool = False,
    pccs_url: str | None = None,
    pccs_ca: Path | None = None,
    api_docs: bool = False,
) -> ServerPlan:
    """Check the data directory and settle TLS (creating a self-signed certificate if needed).

    ``pccs_url`` (https) names the PCCS DCAP collateral is fetched from, cached until it is due;
    ``pccs_ca`` pins the CA its certificate must chain to (default: the system's roots).
    ``api_docs`` serves the interactive API documentation and the OpenAPI document.
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
        return ServerPlan(data_dir, host, port, None, None, None, False, pccs, api_docs)
    created = False
    if tls_cert is None or tls_key is None:
        tls_cert, tls_key, created = ensure_self_signed(data_dir / "tls", host)
    for path in (tls_cert, tls_key):
        if not path.is_file():
            raise UsageError(f"TLS file {path} does not exist")
    fingerprint = certificate_fingerprint(tls_cert)
    return ServerPlan(data_dir, host, port, tls_cert, tls_key, fingerprint, created, pccs, api_docs)


def run_server(plan: ServerPlan) -> None:
    """Serve until SIGINT / SIGTERM; in-flight requests finish first (graceful shutdown).

    One process per data directory: the audit chain and the attestation nonces live in this
    process, so a second server on the same directory is refused.
    """
    with data_dir_lock(plan.data_dir, "starting another one (one process per data directory)"):
        _serve(plan)


def _serve(plan: ServerPlan) -> None:
    # uvicorn and FastAPI are imported only here: the data-directory tools (init, backup,
    # restore, audit) and planning a server do not load them.
    import uvicorn

    from cipherspark.kms.server._uvicorn import http_protocol
    from cipherspark.kms.server.app import create_app

    with open_service(plan.data_dir, pccs=plan.pccs) as opened:
        opened.service.purge_due_keys()
        config = uvicorn.Config(
            create_app(opened.service, api_docs=plan.api_docs),
            host=plan.host,
            port=plan.port,
            ssl_certfile=None if plan.cert_file is None else str(plan.cert_file),
            ssl_keyfile=None if plan.key_file is None else str(plan.key_file),
            # Our context, not uvicorn's: TLS 1.2+ with AEAD suites only (tls.TLS12_CIPHERS).
            ssl_context_factory=(
                None
                if plan.cert_file is None or plan.key_file is None
                else ssl_context_factory(plan.cert_file, plan.key_file)
            ),
            # The audit log is the record of key operations; access lines would only add
            # per-request cost (and URLs never carry secrets anyway).
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=10,
            log_level="info",
            timeout_keep_alive=30,
            # The client address is the TCP peer's (the failed-login throttle counts by it); do
            # not trust or parse X-Forwarded-* headers, which any client can send.
            proxy_headers=False,
            http=http_protocol(),
        )
        uvicorn.Server(config).run()
