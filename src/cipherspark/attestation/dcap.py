"""Intel DCAP quotes (SGX and TDX) verified with ``dcap-qvl``.

:func:`verify_dcap_quote` checks the quote's signatures, the PCK certificate chain up to Intel's
root, the CRLs, TCB info and QE identity of the collateral, all at the given time, and returns
the quote's TCB status as found: judging the status is the policy's job. Collateral comes from a
:class:`CollateralSource`: :class:`StaticCollateral` (a JSON file, e.g. for tests) or
:class:`~cipherspark.attestation.pccs.PccsCollateral` (a PCCS, cached until the
collateral's next-update time).
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import datetime
from typing import Any

import dcap_qvl  # type: ignore[import-untyped]

from cipherspark.attestation.evidence import VerifiedReport
from cipherspark.errors import AttestationError

__all__ = [
    "CollateralSource",
    "DcapVerifier",
    "StaticCollateral",
    "collateral_next_update",
    "dcap_quote_tee",
    "verify_dcap_quote",
]

_SGX_DEBUG = 0x02  # ATTRIBUTES.DEBUG (flags, bit 1)
_TD_DEBUG = 0x01  # TDATTRIBUTES.DEBUG (bit 0)


def _reason(message: str) -> str:
    return "expired" if "Expired" in message or "expired" in message else "signature"


def dcap_quote_tee(quote: bytes) -> str:
    """``sgx`` or ``tdx``: what a DCAP quote claims to be (before any verification)."""
    try:
        return "tdx" if dcap_qvl.parse_quote(quote).is_tdx() else "sgx"
    except (ValueError, TypeError) as exc:
        raise AttestationError(f"not a DCAP quote: {exc}", "signature") from exc


def verify_dcap_quote(quote: bytes, collateral: str, now: int) -> VerifiedReport:
    """Verify a DCAP ``quote`` with ``collateral`` (JSON) at UNIX time ``now``.

    Raises :class:`AttestationError` with reason ``expired`` (collateral or certificates out of
    their validity at ``now``) or ``signature`` (anything else that does not verify).
    """
    try:
        parsed = dcap_qvl.parse_quote(quote)
        tdx = bool(parsed.is_tdx())
    except (ValueError, TypeError) as exc:
        raise AttestationError(f"not a DCAP quote: {exc}", "signature") from exc
    try:
        col = dcap_qvl.QuoteCollateralV3.from_json(collateral)
    except (ValueError, TypeError) as exc:
        raise AttestationError(f"the DCAP collateral is malformed: {exc}", "signature") from exc
    try:
        verified = dcap_qvl.verify(quote, col, int(now))
        doc: dict[str, Any] = json.loads(verified.to_json())
    except (ValueError, TypeError) as exc:
        message = str(exc)
        raise AttestationError(
            f"the {'TDX' if tdx else 'SGX'} quote does not verify: {message}", _reason(message)
        ) from exc
    return _report(doc, tdx)


def _report(doc: dict[str, Any], tdx: bool) -> VerifiedReport:
    status = str(doc["status"])
    advisories = tuple(str(a) for a in doc.get("advisory_ids", []))
    body: dict[str, Any] = next(iter(doc["report"].values()))
    if not tdx:
        attributes = bytes.fromhex(body["attributes"])
        return VerifiedReport(
            tee="sgx",
            tcb_status=status,
            advisory_ids=advisories,
            report_data=bytes.fromhex(body["report_data"]),
            debug=bool(attributes[0] & _SGX_DEBUG),
            mr_enclave=str(body["mr_enclave"]).lower(),
            mr_signer=str(body["mr_signer"]).lower(),
            isv_prod_id=int(body["isv_prod_id"]),
            isv_svn=int(body["isv_svn"]),
        )
    td_attributes = bytes.fromhex(body["td_attributes"])
    return VerifiedReport(
        tee="tdx",
        tcb_status=status,
        advisory_ids=advisories,
        report_data=bytes.fromhex(body["report_data"]),
        debug=bool(td_attributes[0] & _TD_DEBUG),
        mr_td=str(body["mr_td"]).lower(),
        rtmr=tuple(str(body[f"rt_mr{i}"]).lower() for i in range(4)),
    )


def collateral_next_update(collateral: str) -> float:
    """The earliest ``nextUpdate`` (UNIX time) of the collateral's TCB info and QE identity."""
    try:
        doc = json.loads(collateral)
        moments = []
        for name, inner in (("tcb_info", "tcbInfo"), ("qe_identity", "enclaveIdentity")):
            body = json.loads(doc[name])
            value = body.get(inner, body)["nextUpdate"]
            moments.append(datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp())
        return min(moments)
    except (ValueError, KeyError, TypeError) as exc:
        raise AttestationError(
            "the DCAP collateral has no readable nextUpdate", "signature"
        ) from exc


class CollateralSource(ABC):
    """Where the verifier gets the collateral of a quote."""

    @abstractmethod
    def collateral(self, quote: bytes) -> str:
        """The collateral (``QuoteCollateralV3`` JSON) for ``quote``."""


class StaticCollateral(CollateralSource):
    """One fixed collateral document (offline verification, tests)."""

    def __init__(self, collateral: str) -> None:
        self._collateral = collateral

    def collateral(self, quote: bytes) -> str:
        """The fixed collateral, whatever the quote."""
        return self._collateral


class DcapVerifier:
    """Verifies DCAP quotes with collateral from ``source`` at ``clock()`` time.

    A configured ``source`` (the verifier's own PCCS) always wins over collateral handed in with
    a request: collateral is Intel-signed, but a caller could still pick an older, not yet
    expired one from before a TCB recovery. Handed-in collateral is used only without a source.
    """

    def __init__(
        self, source: CollateralSource | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._source = source
        self._clock = clock

    @property
    def source(self) -> CollateralSource | None:
        """Where collateral comes from when the caller does not (or may not) supply it."""
        return self._source

    def verify(
        self, quote: bytes, *, collateral: str | None = None, now: int | None = None
    ) -> VerifiedReport:
        """Verify ``quote`` with the source's collateral, else with ``collateral``."""
        if self._source is not None:
            collateral = self._source.collateral(quote)
        elif collateral is None:
            raise AttestationError(
                "no DCAP collateral: pass it, or configure a PCCS", "unavailable"
            )
        return verify_dcap_quote(quote, collateral, int(self._clock()) if now is None else int(now))
