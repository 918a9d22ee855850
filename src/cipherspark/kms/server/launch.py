"""Run a KMS server as a child process on 127.0.0.1 (for the demo and tools that need one).

:func:`local_server` initialises the data directory if needed, starts
``python -m cipherspark kms serve`` on a free loopback port with its self-signed TLS
certificate, waits until ``/healthz`` answers through that certificate, and stops the server
with SIGTERM (a graceful shutdown) when the block ends. The server's output goes to
``server.out`` / ``server.err`` in the data directory; nothing is printed.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cipherspark.errors import KmsError

__all__ = ["LocalServer", "local_server", "wait_for_server"]

_HOST = "127.0.0.1"


@dataclass(frozen=True)
class LocalServer:
    """A running loopback KMS server."""

    data_dir: Path
    url: str
    ca_file: Path
    pid: int
    # The admin token when this call initialised the data directory (shown once), else None.
    admin_token: str | None = field(default=None, repr=False)

    @property
    def audit_log(self) -> Path:
        """The server's audit log."""
        return self.data_dir / "audit.log"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((_HOST, 0))
        return int(sock.getsockname()[1])


def _healthy(url: str, ca_file: Path) -> bool:
    import httpx

    if not ca_file.exists():
        return False
    try:
        context = ssl.create_default_context(cafile=str(ca_file))
        return httpx.get(f"{url}/healthz", verify=context, timeout=2).status_code == 200
    except (httpx.HTTPError, ssl.SSLError, OSError):
        return False


def wait_for_server(url: str, ca_file: Path | None, *, timeout: float = 30.0) -> None:
    """Return once the KMS server at ``url`` answers ``/healthz`` over TLS checked against
    ``ca_file`` (``None``: the system CAs), or raise
    :class:`~cipherspark.errors.KmsUnavailableError` after ``timeout`` seconds. A self-signed
    ``ca_file`` that does not exist yet is waited for too: the server writes it when it first
    starts."""
    from cipherspark.errors import KmsUnavailableError

    if not url.startswith("https://"):
        raise KmsUnavailableError(f"only a KMS server (https://) can be waited for, not {url}")
    deadline = time.monotonic() + timeout
    why = "not listening"
    while True:
        if ca_file is None or ca_file.exists():
            import httpx

            try:
                context = ssl.create_default_context(
                    cafile=None if ca_file is None else str(ca_file)
                )
                answer = httpx.get(f"{url.rstrip('/')}/healthz", verify=context, timeout=2)
                if answer.status_code == 200:
                    return
                why = f"HTTP {answer.status_code}"
            except (httpx.HTTPError, ssl.SSLError, OSError) as exc:
                # The certificate check fails as a connect error too; name it at the end.
                why = "TLS: not the given CA" if "CERTIFICATE_VERIFY" in str(exc) else why
        else:
            why = f"no certificate at {ca_file} yet"
        if time.monotonic() > deadline:
            raise KmsUnavailableError(
                f"the KMS server at {url} did not answer within {timeout:.0f} s ({why})"
            )
        time.sleep(0.2)


def _stop(proc: subprocess.Popen[bytes], timeout: float) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def local_server(
    directory: str | os.PathLike[str], *, startup_timeout: float = 30.0
) -> Iterator[LocalServer]:
    """Serve the KMS data directory ``directory`` (created if absent) on a loopback port."""
    from cipherspark.kms.server import ROOT_KEY, init_data_dir

    data_dir = Path(directory).absolute()
    token = None
    if not (data_dir / ROOT_KEY).exists():
        token = init_data_dir(data_dir).admin_token
    ca_file = data_dir / "tls" / "cert.pem"
    port = _free_port()
    url = f"https://{_HOST}:{port}"
    stderr_path = data_dir / "server.err"
    with open(data_dir / "server.out", "ab") as out, open(stderr_path, "ab") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cipherspark",
                "kms",
                "serve",
                "--data",
                str(data_dir),
                "--host",
                _HOST,
                "--port",
                str(port),
            ],
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + startup_timeout
        while not _healthy(url, ca_file):
            if proc.poll() is not None:
                tail = stderr_path.read_text(errors="replace").strip().splitlines()[-3:]
                raise KmsError(
                    f"the KMS server exited with code {proc.returncode}: " + " / ".join(tail)
                )
            if time.monotonic() > deadline:
                raise KmsError(
                    f"the KMS server did not answer on {url} within "
                    f"{startup_timeout:.0f} s (see {stderr_path})"
                )
            time.sleep(0.1)
        yield LocalServer(data_dir, url, ca_file, proc.pid, token)
    finally:
        _stop(proc, 15.0)
