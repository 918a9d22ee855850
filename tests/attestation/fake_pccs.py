"""A PCCS on 127.0.0.1 serving the real collateral of ``../shared/testdata/dcap`` (API v4 shapes).

It answers like Intel's PCCS: the PCK CRL as DER (``encoding=der``), the root CA CRL as hex text,
TCB info and QE identity as ``{"tcbInfo"|"enclaveIdentity": ..., "signature": hex}`` with the
signed part byte for byte as Intel issued it, issuer chains URL-encoded in headers. Tests can
count requests, make it fail, or change what it serves.
"""

from __future__ import annotations

import json
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dcap_qvl  # type: ignore[import-untyped]

from cipherspark.kms.server.tls import ensure_self_signed

Answer = tuple[int, dict[str, str], bytes]


@dataclass
class FakePccs:
    """What the fake serves and what it was asked."""

    #: (quote, its collateral as in the shared samples): what the fake knows, per platform.
    samples: list[tuple[bytes, dict[str, str]]]
    url: str = ""
    ca_file: Path | None = None
    requests: list[str] = field(default_factory=list)
    #: When set, every request gets this HTTP status and an empty body.
    status: int | None = None
    #: path suffix -> function rewriting the answer (tests tamper with one part).
    rewrite: dict[str, Callable[[Answer], Answer]] = field(default_factory=dict)

    def _find(self, tee: str, *, ca: str | None = None,
              fmspc: str | None = None) -> dict[str, str] | None:
        for raw, collateral in self.samples:
            parsed = dcap_qvl.parse_quote(raw)
            if ca is not None and str(parsed.ca()) != ca:
                continue
            if ca is None and ("tdx" if parsed.is_tdx() else "sgx") != tee:
                continue
            if fmspc is not None and str(parsed.fmspc()).upper() != fmspc.upper():
                continue
            return collateral
        return None

    def answer(self, path: str, query: dict[str, str]) -> Answer:
        """What Intel's PCCS would answer for the platforms of ``samples`` (404 otherwise)."""
        tee = "tdx" if "/tdx/" in path else "sgx"
        if path.endswith("/pckcrl"):
            col = self._find(tee, ca=query.get("ca", ""))
        elif path.endswith("/tcb"):
            col = self._find(tee, fmspc=query.get("fmspc", ""))
        else:
            col = self._find(tee) or (self.samples[0][1] if path.endswith("/rootcacrl")
                                      else None)
        if col is None:
            return 404, {}, b""
        quote = urllib.parse.quote
        if path.endswith("/pckcrl"):
            return 200, {"SGX-PCK-CRL-Issuer-Chain": quote(col["pck_crl_issuer_chain"])}, \
                bytes.fromhex(col["pck_crl"])
        if path.endswith("/rootcacrl"):
            return 200, {}, col["root_ca_crl"].encode()
        if path.endswith("/tcb"):
            body = f'{{"tcbInfo":{col["tcb_info"]},"signature":"{col["tcb_info_signature"]}"}}'
            return 200, {"TCB-Info-Issuer-Chain": quote(col["tcb_info_issuer_chain"])}, \
                body.encode()
        if path.endswith("/qe/identity"):
            body = (f'{{"enclaveIdentity":{col["qe_identity"]},'
                    f'"signature":"{col["qe_identity_signature"]}"}}')
            return 200, {"SGX-Enclave-Identity-Issuer-Chain":
                         quote(col["qe_identity_issuer_chain"])}, body.encode()
        return 404, {}, b""


def _handler(pccs: FakePccs) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urllib.parse.urlsplit(self.path)
            pccs.requests.append(parts.path)
            headers: dict[str, str]
            if pccs.status is not None:
                status, headers, body = pccs.status, {}, b""
            else:
                query = dict(urllib.parse.parse_qsl(parts.query))
                status, headers, body = pccs.answer(parts.path, query)
                for suffix, rewrite in pccs.rewrite.items():
                    if parts.path.endswith(suffix):
                        status, headers, body = rewrite((status, headers, body))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@contextmanager
def fake_pccs(samples: list[tuple[bytes, dict[str, str]]],
              tls_dir: Path | None) -> Iterator[FakePccs]:
    """Serve the collateral of ``samples`` on a loopback port: https with a self-signed
    certificate in ``tls_dir``, or plain http when ``tls_dir`` is None (for dcap-qvl's client)."""
    pccs = FakePccs(samples)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(pccs))
    scheme = "http"
    if tls_dir is not None:
        cert, key, _ = ensure_self_signed(tls_dir, "127.0.0.1")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        pccs.ca_file = cert
        scheme = "https"
    pccs.url = f"{scheme}://127.0.0.1:{server.server_port}/sgx/certification/v4"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield pccs
    finally:
        server.shutdown()
        server.server_close()


def sample_pairs(*paths: tuple[Path, Path]) -> list[tuple[bytes, dict[str, str]]]:
    """(quote, collateral dict) of shared samples given as (quote file, collateral file)."""
    return [(quote.read_bytes(), json.loads(collateral.read_text()))
            for quote, collateral in paths]
