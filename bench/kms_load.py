"""Unwrap load against a KMS server on 127.0.0.1: req/s with p50 / p99 latency.

Starts its own server (TLS, self-signed, in a temporary data directory) unless ``--url`` names a
running one (then set CIPHERSPARK_APP_ID / CIPHERSPARK_API_KEY and ``--ca``). ``--concurrency``
client processes each keep one unwrap in flight on one keep-alive connection (bounded load).
The last line is ``unwrap req/s: X``.

Clients and server share this machine's cores, so the client's own cost per request caps the
figure: ``--client stdlib`` (the default) uses ``http.client``, the leanest Python HTTPS client;
``--client httpx`` uses httpx, what :class:`cipherspark.kms.remote.RemoteKms` uses, which spends
about three times the server's CPU per request.

    .venv/bin/python bench/kms_load.py --requests 20000 --concurrency 4
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import multiprocessing
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cli(*args: str, env: dict[str, str] | None = None) -> str:
    return subprocess.run(
        [sys.executable, "-m", "cipherspark", *args],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    ).stdout


def _start(data: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    token = json.loads(_cli("kms", "init", "--data", str(data), "--json"))["admin_token"]
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cipherspark",
            "kms",
            "serve",
            "--data",
            str(data),
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url, ca = f"https://127.0.0.1:{port}", data / "tls" / "cert.pem"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if (
                ca.exists()
                and httpx.get(
                    f"{url}/healthz", verify=ssl.create_default_context(cafile=str(ca)), timeout=1
                ).status_code
                == 200
            ):
                os.environ["CIPHERSPARK_KMS_ADMIN_TOKEN"] = token
                app = json.loads(
                    _cli(
                        "kms", "app", "create", "bench", "--kms", url, "--kms-ca", str(ca), "--json"
                    )
                )
                os.environ["CIPHERSPARK_APP_ID"] = app["app_id"]
                os.environ["CIPHERSPARK_API_KEY"] = app["api_key"]
                return proc, url, ca
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("the KMS server did not start")


Job = tuple[str, str, dict[str, str], str, dict[str, str], str, int, str]


def _stdlib_worker(job: Job) -> list[float]:
    """Sequential unwraps with ``http.client`` on one keep-alive TLS connection."""
    url, ca, headers, path, body, expected, count, _ = job
    parsed = httpx.URL(url)
    conn = http.client.HTTPSConnection(
        parsed.host, parsed.port, timeout=30, context=ssl.create_default_context(cafile=ca)
    )
    payload = json.dumps(body).encode()
    send_headers = {**headers, "Content-Type": "application/json"}
    latencies = []

    def once() -> None:
        conn.request("POST", path, payload, send_headers)
        response = conn.getresponse()
        answer = response.read()
        if response.status != 200 or json.loads(answer)["plaintext"] != expected:
            raise SystemExit(f"unwrap failed: {response.status} {answer!r}")

    once()  # the TLS handshake is not what we measure
    for _ in range(count):
        start = time.perf_counter()
        once()
        latencies.append(time.perf_counter() - start)
    conn.close()
    return latencies


def _worker(job: Job) -> list[float]:
    """One client process: sequential unwraps on one keep-alive connection."""
    url, ca, headers, path, body, expected, count, client_kind = job
    if client_kind == "stdlib":
        return _stdlib_worker(job)
    latencies = []
    with httpx.Client(
        base_url=url, headers=headers, timeout=30, verify=ssl.create_default_context(cafile=ca)
    ) as client:
        client.post(path, json=body)  # the TLS handshake is not what we measure
        for _ in range(count):
            start = time.perf_counter()
            response = client.post(path, json=body)
            latencies.append(time.perf_counter() - start)
            if response.status_code != 200 or response.json()["plaintext"] != expected:
                raise SystemExit(f"unwrap failed: {response.status_code} {response.text}")
    return latencies


def _load(
    url: str, ca: Path, requests: int, concurrency: int, client_kind: str = "stdlib"
) -> tuple[list[float], float]:
    headers = {
        "X-App-Id": os.environ["CIPHERSPARK_APP_ID"],
        "X-Api-Key": os.environ["CIPHERSPARK_API_KEY"],
    }
    with httpx.Client(
        base_url=url, headers=headers, timeout=30, verify=ssl.create_default_context(cafile=str(ca))
    ) as client:
        name = f"bench-{os.urandom(4).hex()}"
        client.post("/v1/keys", json={"name": name}).raise_for_status()
        made = client.post(f"/v1/keys/{name}/datakey/plaintext")
        made.raise_for_status()
    body = {"wrapped": made.json()["wrapped"]}
    expected = str(made.json()["plaintext"])
    assert base64.b64decode(expected)
    job: Job = (
        url,
        str(ca),
        headers,
        f"/v1/keys/{name}/unwrap",
        body,
        expected,
        requests // concurrency,
        client_kind,
    )
    # Processes, not threads or asyncio: one Python client process tops out below the server.
    with multiprocessing.Pool(concurrency) as pool:
        started = time.perf_counter()
        results = pool.map(_worker, [job] * concurrency)
        elapsed = time.perf_counter() - started
    return [x for r in results for x in r], elapsed


def main() -> None:
    """Run the load and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--url", help="a running server (default: start one)")
    parser.add_argument("--ca", type=Path, help="its CA / self-signed certificate")
    parser.add_argument(
        "--client",
        choices=("stdlib", "httpx"),
        default="stdlib",
        help="client library of the load processes (default: stdlib)",
    )
    args = parser.parse_args()
    proc = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.url:
            if args.ca is None:
                raise SystemExit("--url needs --ca")
            url, ca = args.url, args.ca
        else:
            proc, url, ca = _start(Path(tmp) / "data")
        try:
            latencies, elapsed = _load(url, ca, args.requests, args.concurrency, args.client)
        finally:
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=15)
    latencies.sort()
    rate = len(latencies) / elapsed
    print(
        f"server: {url} (TLS, keep-alive), {args.client} clients, "
        f"concurrency {args.concurrency}, "
        f"{len(latencies)} unwraps in {elapsed:.2f} s (client and server share "
        f"{os.cpu_count()} cores)"
    )
    print(
        f"p50 {latencies[len(latencies) // 2] * 1e3:.1f} ms, "
        f"p99 {latencies[int(len(latencies) * 0.99)] * 1e3:.1f} ms"
    )
    print(f"unwrap req/s: {rate:.0f}")


if __name__ == "__main__":
    main()
