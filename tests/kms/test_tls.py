"""TLS of the KMS server and client: TLS 1.2 with AEAD suites only, TLS 1.3 unchanged.

A real ``cipherspark kms serve`` is probed with Python's ``ssl`` as clients that offer only
CBC suites, only TLS 1.1, or one AEAD suite; the unit tests pin both contexts' suite lists.
"""

from __future__ import annotations

import socket
import ssl
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from cipherspark.kms import Credentials
from cipherspark.kms._http import tls_context
from cipherspark.kms.remote import RemoteKms
from cipherspark.kms.server.tls import TLS12_CIPHERS, ensure_self_signed, server_ssl_context
from tests.kms.server.conftest import ServerProcess, cli, free_port, start_server, stop_server

# What Python's default client context offers in TLS 1.2 besides AEAD (OpenSSL 3.0): CBC with
# HMAC-SHA1/256/384. The server must refuse a client that offers nothing else.
CBC_SUITES = ("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA256:"
              "ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA:"
              "ECDHE-RSA-AES128-SHA256:ECDHE-RSA-AES256-SHA384")


def _tls12_suites(context: ssl.SSLContext) -> set[str]:
    return {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"}


def _assert_aead_only(context: ssl.SSLContext) -> None:
    suites = [c for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert suites, "no TLS 1.2 suite left"
    for suite in suites:
        assert suite["aead"], suite["name"]
        assert suite["kea"] == "kx-ecdhe", suite["name"]
        assert suite["symmetric"] in ("aes-128-gcm", "aes-256-gcm", "chacha20-poly1305"), suite
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_the_server_context_offers_aead_suites_only(tmp_path: Path) -> None:
    cert, key, _ = ensure_self_signed(tmp_path, "127.0.0.1")
    context = server_ssl_context(cert, key)
    _assert_aead_only(context)
    assert {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.3"}, "TLS 1.3"


def test_the_client_context_offers_the_servers_suites(tmp_path: Path) -> None:
    cert, key, _ = ensure_self_signed(tmp_path, "127.0.0.1")
    for ca in (None, cert):
        context = tls_context("https://127.0.0.1:1", ca)
        assert isinstance(context, ssl.SSLContext)
        _assert_aead_only(context)
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
        assert _tls12_suites(context) == _tls12_suites(server_ssl_context(cert, key))
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    probe.set_ciphers(TLS12_CIPHERS)
    assert _tls12_suites(probe) == _tls12_suites(server_ssl_context(cert, key))


# -- a real server --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("kms-tls")
    cli("kms", "init", "--data", str(base / "data"), "--json")
    running = start_server(base / "data", free_port(), base)
    yield running
    stop_server(running)


def _client(server: ServerProcess, *, ciphers: str | None = None,
            maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(server.ca))
    if maximum is not None:
        context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        context.maximum_version = maximum
    if ciphers is not None:
        context.set_ciphers(ciphers)
    return context


def _handshake(server: ServerProcess, context: ssl.SSLContext) -> tuple[str, str]:
    """(protocol, cipher) the server agreed to; :class:`ssl.SSLError` if it refused."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        cipher = tls.cipher()
        assert cipher is not None
        return str(tls.version()), cipher[0]


@pytest.mark.servers
def test_a_cbc_only_tls12_client_is_refused(server: ServerProcess) -> None:
    cbc = _client(server, ciphers=CBC_SUITES, maximum=ssl.TLSVersion.TLSv1_2)
    assert _tls12_suites(cbc), "the probe must offer CBC suites"
    # The server ends the handshake (OpenSSL: no shared cipher; the client sees an EOF).
    with pytest.raises(ssl.SSLError):
        _handshake(server, cbc)
    # The same probe with one AEAD suite more connects, with that suite: the suites decided.
    mixed = _client(server, ciphers=f"{CBC_SUITES}:ECDHE-ECDSA-AES128-GCM-SHA256",
                    maximum=ssl.TLSVersion.TLSv1_2)
    assert _handshake(server, mixed) == ("TLSv1.2", "ECDHE-ECDSA-AES128-GCM-SHA256")


@pytest.mark.servers
def test_tls11_is_refused(server: ServerProcess) -> None:
    with warnings.catch_warnings():
        # Python deprecates TLS 1.1 itself; the probe needs it to show the server refuses it.
        warnings.simplefilter("ignore", DeprecationWarning)
        old = _client(server, maximum=ssl.TLSVersion.TLSv1_1)
        old.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the probe offer TLS 1.1 at all
    with pytest.raises(ssl.SSLError):
        _handshake(server, old)


@pytest.mark.servers
@pytest.mark.parametrize("suite", ["ECDHE-ECDSA-AES128-GCM-SHA256",
                                   "ECDHE-ECDSA-AES256-GCM-SHA384",
                                   "ECDHE-ECDSA-CHACHA20-POLY1305"])
def test_tls12_aead_suites_are_accepted(server: ServerProcess, suite: str) -> None:
    agreed = _handshake(server, _client(server, ciphers=suite, maximum=ssl.TLSVersion.TLSv1_2))
    assert agreed == ("TLSv1.2", suite)


@pytest.mark.servers
def test_tls13_is_unchanged_and_the_client_connects(server: ServerProcess) -> None:
    version, cipher = _handshake(server, _client(server))
    assert version == "TLSv1.3" and cipher.startswith("TLS_")
    # The KMS client's own context, pinned to TLS 1.2, still agrees on an AEAD suite.
    context = tls_context(server.url, server.ca)
    assert isinstance(context, ssl.SSLContext)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    version, cipher = _handshake(server, context)
    assert version == "TLSv1.2" and ("GCM" in cipher or "CHACHA20" in cipher)
    # And RemoteKms talks to the server through it.
    with RemoteKms(server.url, Credentials("nobody", "x" * 43), ca_file=server.ca) as kms:
        kms.ping()
