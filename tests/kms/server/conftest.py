"""A real KMS server process on 127.0.0.1 (TLS, self-signed certificate) for the whole session."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from cipherspark.kms import Credentials
from cipherspark.kms.remote import KmsAdmin, RemoteKms


def free_port() -> int:
    """A TCP port nobody listens on right now (127.0.0.1 only)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli(*args: str, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``cipherspark ARGS`` in a fresh interpreter."""
    result = subprocess.run([sys.executable, "-m", "cipherspark", *args],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, **(env or {})})
    if check:
        assert result.returncode == 0, result.stderr
    return result


def legacy_sealed(root: bytes, name: str, version: int, primary: bytes) -> bytes:
    """A primary-key version sealed as builds before sealed stores did (the app id not in the
    associated data): what a data directory being upgraded holds."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(12)
    aad = (b"cipherspark/kms-server/v1/primary-key\x00" + name.encode() + b"\x00"
           + version.to_bytes(4, "big"))
    return nonce + AESGCM(root).encrypt(nonce, primary, aad)


def unique(prefix: str) -> str:
    """A key name no other test in the session uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class ServerProcess:
    """A running ``cipherspark kms serve``."""

    data: Path
    port: int
    proc: subprocess.Popen[bytes] = field(repr=False)
    stdout: Path
    stderr: Path

    @property
    def url(self) -> str:
        """Base URL."""
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca(self) -> Path:
        """The self-signed certificate clients pin."""
        return self.data / "tls" / "cert.pem"


def start_server(data: Path, port: int, log_dir: Path, tag: str = "server",
                 extra: tuple[str, ...] = ()) -> ServerProcess:
    """Start the server (``kms serve`` with ``extra`` options) and wait until /healthz answers
    over TLS."""
    stdout, stderr = log_dir / f"{tag}.out", log_dir / f"{tag}.err"
    with open(stdout, "ab") as out, open(stderr, "ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cipherspark", "kms", "serve", "--data", str(data),
             "--host", "127.0.0.1", "--port", str(port), *extra], stdout=out, stderr=err)
    server = ServerProcess(data, port, proc, stdout, stderr)
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited: {stderr.read_text()}")
        try:
            if server.ca.exists():
                response = httpx.get(f"{server.url}/healthz", verify=pinned(server.ca),
                                     timeout=2)
                if response.status_code == 200:
                    return server
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("the server did not become ready in 30 s")
        time.sleep(0.1)


def stop_server(server: ServerProcess) -> None:
    """SIGTERM, and check the server shut down gracefully (uvicorn re-raises the signal)."""
    server.proc.send_signal(signal.SIGTERM)
    try:
        code = server.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()
        raise
    assert code in (0, -signal.SIGTERM), code
    assert "Finished server process" in server.stderr.read_text()


def pinned(ca: Path) -> ssl.SSLContext:
    """An SSL context trusting only ``ca``."""
    return ssl.create_default_context(cafile=str(ca))


@dataclass(frozen=True)
class KmsSetup:
    """The session's server, its admin token, and two registered apps."""

    server: ServerProcess
    admin_token: str = field(repr=False)
    app_a: dict[str, str] = field(repr=False)
    app_b: dict[str, str] = field(repr=False)

    def kms(self, app: dict[str, str] | None = None) -> RemoteKms:
        """A client for app A (or ``app``)."""
        app = app or self.app_a
        return RemoteKms(self.server.url, Credentials(app["app_id"], app["api_key"]),
                         ca_file=self.server.ca)

    def http(self, source: str | None = None) -> httpx.Client:
        """A raw HTTPS client (no credentials) pinned to the server's certificate; ``source``:
        the local address it connects from (another 127.x address is another client source)."""
        if source is None:
            return httpx.Client(base_url=self.server.url, verify=pinned(self.server.ca),
                                timeout=10)
        transport = httpx.HTTPTransport(verify=pinned(self.server.ca), local_address=source)
        return httpx.Client(base_url=self.server.url, transport=transport, timeout=10)

    def headers(self, app: dict[str, str] | None = None) -> dict[str, str]:
        """App A's (or ``app``'s) auth headers."""
        app = app or self.app_a
        return {"X-App-Id": app["app_id"], "X-Api-Key": app["api_key"]}

    def admin(self) -> KmsAdmin:
        """An admin client (the operator's token)."""
        return KmsAdmin(self.server.url, self.admin_token, ca_file=self.server.ca)

    def workload(self, app: dict[str, str] | None = None, label: str = "test") -> dict[str, str]:
        """A new workload credential of app A (or ``app``), as the app dicts are."""
        with self.admin() as admin:
            new = admin.create_credential((app or self.app_a)["app_id"], "workload", label)
        return {"app_id": new.app_id, "api_key": new.api_key, "vault_token": new.vault_token,
                "credential_id": new.credential_id}

    def new_app(self, name: str = "extra app") -> dict[str, str]:
        """A new app (its owner credential), as the app dicts are."""
        with self.admin() as admin:
            new = admin.create_app(name)
        return {"app_id": new.app_id, "api_key": new.api_key, "vault_token": new.vault_token,
                "credential_id": new.credential_id}


@contextmanager
def serving(base: Path, *extra: str) -> Iterator[KmsSetup]:
    """A fresh data directory under ``base``, served (``kms serve`` with ``extra`` options)
    until the block ends, with two apps."""
    data = base / "data"
    init = json.loads(cli("kms", "init", "--data", str(data), "--json").stdout)
    server = start_server(data, free_port(), base, extra=extra)
    try:
        created = cli("kms", "app", "create", "app A", "--kms", server.url,
                      "--kms-ca", str(server.ca), "--json",
                      env={"CIPHERSPARK_KMS_ADMIN_TOKEN": init["admin_token"]})
        app_a = json.loads(created.stdout)
        admin = KmsAdmin(server.url, init["admin_token"], ca_file=server.ca)
        new = admin.create_app("app B")
        admin.close()
        app_b = {"app_id": new.app_id, "api_key": new.api_key, "vault_token": new.vault_token}
        yield KmsSetup(server, init["admin_token"], app_a, app_b)
    finally:
        stop_server(server)


@pytest.fixture(scope="session")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KmsSetup]:
    """Init a data directory, serve it, register app A with the CLI and app B with the API."""
    with serving(tmp_path_factory.mktemp("kms-server")) as session:
        yield session
