"""DCAP collateral from a PCCS (Intel's Provisioning Certification Caching Service, API v4).

:class:`PccsCollateral` fetches the collateral a quote needs (PCK CRL, root CA CRL, TCB info, QE
identity and their issuer chains) and keeps it per platform — (TEE, FMSPC, PCK CA) — until the
earliest ``nextUpdate`` among its parts, re-fetching at least every ``refresh_after`` seconds so
that a TCB recovery Intel publishes before that date reaches the verifier within a day.

Why not ``dcap_qvl.get_collateral``: its TLS trust is not ours to choose. dcap-qvl 0.7.0 trusts
only the public web PKI (an on-premises PCCS with its own CA, Intel's default setup, cannot be
reached) and upstream's current code accepts any certificate. Here the operator pins the PCCS's CA
(``ca_file``) or relies on the system's roots, and https is required. TLS guards freshness and
availability only: every part of the collateral is signed by Intel, and dcap-qvl checks those
signatures when it verifies a quote. The requests are the ones dcap-qvl makes; a test compares
both clients on the same PCCS. API: https://api.portal.trustedservices.intel.com/content/documentation.html
"""

from __future__ import annotations

import json
import re
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

import dcap_qvl  # type: ignore[import-untyped]
import httpx
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from cipherspark.attestation.dcap import CollateralSource
from cipherspark.errors import AttestationError

__all__ = ["DEFAULT_REFRESH_SECONDS", "PccsCollateral"]

#: Re-fetch cached collateral at least this often (seconds), even before its ``nextUpdate``.
DEFAULT_REFRESH_SECONDS = 24 * 3600
_MAX_RESPONSE = 1 << 20  # collateral parts are a few KiB; a PCCS answering more is refused
_MAX_ENTRIES = 256  # platforms (FMSPC x CA x TEE) kept; a fleet has a handful
_SUFFIXES = ("/sgx/certification/v4", "/tdx/certification/v4")
_JSON_SPACE = re.compile(r"[ \t\n\r]*")


@dataclass(frozen=True)
class _Entry:
    fetched_at: float
    valid_until: float
    collateral: str


@dataclass(frozen=True)
class _Answer:
    headers: httpx.Headers
    body: bytes

    @property
    def text(self) -> str:
        try:
            return self.body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Unavailable("the PCCS answered text that is not UTF-8") from exc


class _Unavailable(Exception):
    """The PCCS could not be used (network, TLS, HTTP status, or an unreadable answer)."""


def _base_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise AttestationError(f"the PCCS URL {url!r} must be an https:// URL", "unavailable")
    base = url.rstrip("/")
    for suffix in _SUFFIXES:
        base = base.removesuffix(suffix)
    return base


def _crl_der(body: bytes, what: str) -> tuple[bytes, float]:
    """(DER, nextUpdate) of a CRL served as DER, PEM or hex text (PCCSs differ)."""
    text = body.strip()
    try:
        if text.startswith(b"-----BEGIN"):
            crl = x509.load_pem_x509_crl(text)
        else:
            try:
                der = bytes.fromhex(text.decode("ascii"))
            except (UnicodeDecodeError, ValueError):
                der = body
            crl = x509.load_der_x509_crl(der)
    except ValueError as exc:
        raise _Unavailable(f"the {what} is not a CRL") from exc
    next_update = crl.next_update_utc
    if next_update is None:
        raise _Unavailable(f"the {what} has no nextUpdate")
    return crl.public_bytes(Encoding.DER), next_update.timestamp()


def _raw_members(text: str, what: str) -> dict[str, str]:
    """The top-level members of a JSON object as their exact source text.

    Intel signs the bytes of ``tcbInfo`` / ``enclaveIdentity`` as served; re-serialising them
    (``json.dumps``) could change spacing or escapes and break the signature.
    """
    decoder = json.JSONDecoder()
    members: dict[str, str] = {}

    def skip(i: int) -> int:  # JSON whitespace, in linear time whatever the input
        match = _JSON_SPACE.match(text, i)
        return i if match is None else match.end()

    try:
        i = skip(0)
        if text[i : i + 1] != "{":
            raise ValueError("not an object")
        i = skip(i + 1)
        while text[i : i + 1] != "}":
            key, i = decoder.raw_decode(text, i)
            i = skip(i)
            if not isinstance(key, str) or text[i : i + 1] != ":":
                raise ValueError("expected a member name and ':'")
            start = skip(i + 1)
            _, i = decoder.raw_decode(text, start)
            members[key] = text[start:i]
            i = skip(i)
            if text[i : i + 1] == ",":
                i = skip(i + 1)
            elif text[i : i + 1] != "}":
                raise ValueError("expected ',' or '}'")
    except ValueError as exc:
        raise _Unavailable(f"the {what} is not a JSON object: {exc}") from exc
    return members


def _signed_part(text: str, member: str, what: str) -> tuple[str, str, float]:
    """(raw ``member`` JSON, signature hex, its nextUpdate) of a PCCS TCB info / QE identity."""
    members = _raw_members(text, what)
    try:
        body = members[member]
        signature = json.loads(members["signature"])
        bytes.fromhex(signature)
        value = json.loads(body)["nextUpdate"]
        next_update = datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except (KeyError, TypeError, ValueError) as exc:
        raise _Unavailable(
            f"the {what} lacks a readable {member}, signature or nextUpdate"
        ) from exc
    return body, signature, next_update


def _header(response: _Answer, names: tuple[str, ...], what: str) -> str:
    for name in names:
        value = response.headers.get(name)
        if value:
            return unquote(value)
    raise _Unavailable(f"the {what} answer has no {names[0]} header")


def _crl_url(chain_pem: str) -> str | None:
    """The CRL distribution point of the last (root) certificate of a PEM chain."""
    try:
        certs = x509.load_pem_x509_certificates(chain_pem.encode())
        points = certs[-1].extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except (ValueError, IndexError, x509.ExtensionNotFound):
        return None
    for point in points:
        for name in point.full_name or ():
            if isinstance(name, x509.UniformResourceIdentifier):
                return str(name.value)
    return None


class PccsCollateral(CollateralSource):
    """Collateral from the PCCS at ``url`` (https), cached per platform until it is due.

    ``ca_file`` pins the CA bundle the PCCS's certificate must chain to (default: the system's
    trusted roots). ``clock`` is injectable for tests. Failures raise
    :class:`~cipherspark.errors.AttestationError` with reason ``unavailable``, except that a
    cached collateral still inside its validity keeps serving while the PCCS is unreachable.
    """

    def __init__(
        self,
        url: str,
        *,
        ca_file: str | Path | None = None,
        timeout: float = 10.0,
        refresh_after: float = DEFAULT_REFRESH_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._base = _base_url(url)
        self.url = url
        if ca_file is not None:
            try:
                verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca_file))
            except (OSError, ssl.SSLError) as exc:
                raise AttestationError(
                    f"cannot load the PCCS CA file {ca_file}: {exc}", "unavailable"
                ) from exc
        else:
            verify = True
        self._verify = verify
        self._timeout = timeout
        self._refresh_after = refresh_after
        self._clock = clock
        self._cache: dict[tuple[str, str, str], _Entry] = {}
        self._lock = threading.Lock()
        #: How many collateral fetches were made (for metrics and tests).
        self.fetches = 0

    def collateral(self, quote: bytes) -> str:
        """The collateral for ``quote``'s platform: cached, or fetched when due."""
        try:
            parsed = dcap_qvl.parse_quote(quote)
            tee = "tdx" if parsed.is_tdx() else "sgx"
            key = (tee, str(parsed.fmspc()).upper(), str(parsed.ca()))
        except (ValueError, TypeError) as exc:
            raise AttestationError(f"not a DCAP quote: {exc}", "signature") from exc
        now = self._clock()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and now < hit.valid_until and now - hit.fetched_at < self._refresh_after:
            return hit.collateral
        try:
            collateral, valid_until = self._fetch(*key)
        except _Unavailable as exc:
            if hit is not None and now < hit.valid_until:
                return hit.collateral  # stale by our refresh rule, still valid by Intel's
            raise AttestationError(
                f"cannot fetch DCAP collateral from the PCCS {self.url}: {exc}", "unavailable"
            ) from exc
        if valid_until > now:
            with self._lock:
                if len(self._cache) >= _MAX_ENTRIES and key not in self._cache:
                    del self._cache[min(self._cache, key=lambda k: self._cache[k].valid_until)]
                self._cache[key] = _Entry(now, valid_until, collateral)
        return collateral

    def _fetch(self, tee: str, fmspc: str, ca: str) -> tuple[str, float]:
        """(collateral JSON, the earliest nextUpdate of its parts) fetched from the PCCS."""
        self.fetches += 1
        sgx, own = f"{self._base}/sgx/certification/v4", f"{self._base}/{tee}/certification/v4"
        try:
            with httpx.Client(
                verify=self._verify, timeout=self._timeout, follow_redirects=False
            ) as client:
                pck = self._get(client, f"{sgx}/pckcrl", {"ca": ca, "encoding": "der"}, "PCK CRL")
                tcb = self._get(client, f"{own}/tcb", {"fmspc": fmspc}, "TCB info")
                qe = self._get(client, f"{own}/qe/identity", {"update": "standard"}, "QE identity")
                pck_chain = _header(pck, ("SGX-PCK-CRL-Issuer-Chain",), "PCK CRL")
                tcb_chain = _header(
                    tcb, ("TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain"), "TCB info"
                )
                qe_chain = _header(qe, ("SGX-Enclave-Identity-Issuer-Chain",), "QE identity")
                root_body = self._root_ca_crl(client, sgx, qe_chain)
        except httpx.HTTPError as exc:
            raise _Unavailable(f"{type(exc).__name__}: {exc}") from exc
        pck_der, pck_next = _crl_der(pck.body, "PCK CRL")
        root_der, root_next = _crl_der(root_body, "root CA CRL")
        tcb_info, tcb_sig, tcb_next = _signed_part(tcb.text, "tcbInfo", "TCB info")
        qe_identity, qe_sig, qe_next = _signed_part(qe.text, "enclaveIdentity", "QE identity")
        collateral = json.dumps(
            {
                "pck_crl_issuer_chain": pck_chain,
                "root_ca_crl": root_der.hex(),
                "pck_crl": pck_der.hex(),
                "tcb_info_issuer_chain": tcb_chain,
                "tcb_info": tcb_info,
                "tcb_info_signature": tcb_sig,
                "qe_identity_issuer_chain": qe_chain,
                "qe_identity": qe_identity,
                "qe_identity_signature": qe_sig,
            }
        )
        try:
            dcap_qvl.QuoteCollateralV3.from_json(collateral)
        except (ValueError, TypeError) as exc:
            raise _Unavailable(f"the collateral it served is malformed: {exc}") from exc
        return collateral, min(pck_next, root_next, tcb_next, qe_next)

    def _root_ca_crl(self, client: httpx.Client, sgx: str, chain: str) -> bytes:
        """A PCCS serves the root CA CRL itself; Intel's PCS does not: then use the root
        certificate's CRL distribution point (as dcap-qvl does)."""
        try:
            return self._get(client, f"{sgx}/rootcacrl", {}, "root CA CRL").body
        except _Unavailable:
            url = _crl_url(chain)
            if url is None or urlsplit(url).scheme != "https":
                raise
            return self._get(client, url, {}, "root CA CRL").body

    @staticmethod
    def _get(client: httpx.Client, url: str, params: dict[str, str], what: str) -> _Answer:
        with client.stream("GET", url, params=params) as response:
            if response.status_code != 200:
                raise _Unavailable(f"{what}: HTTP {response.status_code} from {url}")
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > _MAX_RESPONSE:
                    raise _Unavailable(f"{what}: the answer exceeds {_MAX_RESPONSE} bytes")
            return _Answer(response.headers, bytes(body))
