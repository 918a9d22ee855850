"""The HTTPS transport of the KMS clients (:mod:`cipherspark.kms.remote`, :mod:`.admin`).

One :class:`httpx.Client` per client object keeps connections alive. TLS pins the given CA and
offers TLS 1.2 AEAD suites only (TLS 1.3's are all AEAD). Only failures to *connect* are retried
(with exponential backoff): the request never reached the server, so retrying cannot repeat an
operation. Every other failure maps to one cipherspark error with one clear message, by the
contract in :mod:`cipherspark.kms._wire` (which the server answers by, too), Vault-shaped
Transit errors and 429's ``Retry-After`` included.
"""

from __future__ import annotations

import os
import ssl
import time
from typing import Any
from urllib.parse import urlparse

import httpx

from cipherspark.errors import (
    CipherSparkError,
    KmsError,
    KmsTlsError,
    KmsUnavailableError,
    UsageError,
)
from cipherspark.kms import _wire

__all__ = ["Transport", "b64field", "check_url", "list_field", "tls_context"]

_RETRIES = 3
_BACKOFF = 0.1
# TLS 1.2 suites offered: ECDHE with AES-GCM or ChaCha20-Poly1305, the server's list
# (cipherspark.kms.server.tls.TLS12_CIPHERS, not imported: it would load the server package;
# tests/kms/test_tls.py checks the two agree). Python's default list also offers CBC suites.
_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL"


def tls_context(url: str, ca_file: str | os.PathLike[str] | None) -> ssl.SSLContext | bool:
    """The client TLS context for ``url`` (``False``, no TLS, for ``http://``): ``ca_file``
    pinned (``None``: the system CAs), TLS 1.2 or later, AEAD suites only."""
    if urlparse(url).scheme != "https":
        return False
    try:
        context = ssl.create_default_context(cafile=None if ca_file is None else os.fspath(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load the KMS CA file {ca_file}: {exc}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(_TLS12_CIPHERS)  # TLS 1.3's suites (all AEAD) are not affected
    return context


def check_url(url: str, unsafe_plaintext: bool) -> str:
    """``url`` without its trailing ``/`` if it is a usable KMS URL; refuses ``http://``
    unless ``unsafe_plaintext``, and URLs carrying credentials or a query."""
    parsed = urlparse(url)
    if parsed.scheme == "http" and not unsafe_plaintext:
        # KmsUnavailableError: this transport is not available unless explicitly unlocked.
        raise KmsUnavailableError(
            "refusing plain http:// to the KMS (API keys and data keys would "
            "travel in the clear); use https://, or pass unsafe_plaintext"
        )
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise UsageError(f"{url!r} is not an https:// KMS URL")
    if parsed.username or parsed.password or parsed.query:
        raise UsageError("KMS URLs carry no credentials or query; use --app-id/--api-key")
    return url.rstrip("/")


def _is_tls_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc) or "SSL" in str(exc)


class Transport:
    """Shared transport: connection reuse, timeouts, connect retries, error mapping."""

    def __init__(
        self,
        url: str,
        *,
        ca_file: str | os.PathLike[str] | None,
        timeout: float,
        unsafe_plaintext: bool,
        headers: dict[str, str],
    ) -> None:
        self.url = check_url(url, unsafe_plaintext)
        self._ca_file = ca_file
        self._client = httpx.Client(
            base_url=self.url,
            verify=tls_context(self.url, ca_file),
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            limits=httpx.Limits(max_keepalive_connections=8, keepalive_expiry=30),
        )

    def close(self) -> None:
        """Close pooled connections."""
        self._client.close()

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        what: str,
        vault_bad_request: type[CipherSparkError] = KmsError,
    ) -> dict[str, Any]:
        """Send one request; the JSON answer, or the matching cipherspark error
        (``vault_bad_request``: what a Vault-shaped 400 means for this request)."""
        return self._answer(self._send(method, path, body, what), what, vault_bad_request)

    def request_or_none(
        self, method: str, path: str, *, what: str, absent: _wire.WireCode
    ) -> dict[str, Any] | None:
        """:meth:`request`, but ``None`` for an answer with ``absent``'s status and code
        (a lookup that found nothing); any other error raises as there."""
        response = self._send(method, path, None, what)
        if response.status_code == absent.status:
            doc = _json(response)
            if doc.get("code") == absent.code:
                return None
        return self._answer(response, what, KmsError)

    def _send(
        self, method: str, path: str, body: dict[str, Any] | None, what: str
    ) -> httpx.Response:
        response: httpx.Response | None = None
        for attempt in range(_RETRIES + 1):
            try:
                response = self._client.request(method, path, json=body)
                break
            except httpx.ConnectError as exc:
                if _is_tls_failure(exc):
                    ca = f"the CA in {self._ca_file}" if self._ca_file else "the system CAs"
                    raise KmsTlsError(
                        f"TLS verification of the KMS at {self.url} failed: its certificate "
                        f"is not signed by {ca} (pin the server's certificate with --kms-ca / "
                        "CIPHERSPARK_KMS_CA)"
                    ) from exc
                if attempt == _RETRIES:
                    raise KmsUnavailableError(
                        f"cannot reach the KMS at {self.url}: connection failed after "
                        f"{_RETRIES + 1} attempts"
                    ) from exc
                time.sleep(_BACKOFF * (2**attempt))
            except httpx.TimeoutException as exc:
                raise KmsUnavailableError(
                    f"the KMS at {self.url} did not answer in time ({what})"
                ) from exc
            except httpx.HTTPError as exc:
                raise KmsUnavailableError(
                    f"talking to the KMS at {self.url} failed ({what}): {type(exc).__name__}"
                ) from exc
        assert response is not None
        return response

    def _answer(
        self, response: httpx.Response, what: str, vault_bad_request: type[CipherSparkError]
    ) -> dict[str, Any]:
        doc = _json(response)
        _wire.raise_for_answer(
            response.status_code,
            doc,
            url=self.url,
            what=what,
            retry_after=_wire.retry_after_seconds(response.headers.get("retry-after")),
            vault_bad_request=vault_bad_request,
        )
        return doc


def _json(response: httpx.Response) -> dict[str, Any]:
    """The answer's JSON object; ``{}`` when it is empty, not JSON or not an object."""
    try:
        doc = response.json() if response.content else {}
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def b64field(doc: dict[str, Any], name: str) -> bytes:
    """The bytes of the base64 field ``name`` of an answer; :class:`KmsError` if invalid."""
    try:
        return _wire.b64decode(doc[name])
    except (KeyError, ValueError) as exc:
        raise KmsError(f"the KMS answered without a valid {name!r}") from exc


def list_field(doc: dict[str, Any], name: str, what: str) -> list[Any]:
    """The list field ``name`` of an answer; :class:`KmsError` naming ``what`` otherwise."""
    value = doc.get(name)
    if not isinstance(value, list):
        raise KmsError(f"the KMS answered without a list of {what}")
    return value
