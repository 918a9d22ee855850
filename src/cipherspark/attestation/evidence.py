"""Evidence and verified reports: what a worker sends, and what a verifier vouches for.

:class:`Evidence` is the raw statement a TEE produced (a DCAP quote, or a ``simulated``
statement) with the kind of TEE it claims to come from. A verifier turns it into a
:class:`VerifiedReport` only after checking every signature; the policy then judges the report.
Nothing here trusts the worker's word: ``tee`` only selects the verifier.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cipherspark.errors import AttestationError

__all__ = [
    "REASONS",
    "TEE_TYPES",
    "Evidence",
    "VerifiedReport",
    "check_tee_type",
]

#: The TEE kinds a policy can name. ``simulated`` is a software stand-in that protects nothing.
TEE_TYPES = ("sgx", "tdx", "simulated")

#: Reason codes carried by :class:`~cipherspark.errors.AttestationError` and its subclass.
REASONS = (
    "measurement",
    "tcb_status",
    "debug",
    "svn",
    "nonce",
    "binding",
    "tee_type",
    "signature",
    "expired",
    "no_policy",
    "unavailable",
)


def check_tee_type(tee: str) -> str:
    """Return ``tee`` if it is a known TEE type, else raise ``AttestationError(tee_type)``."""
    if tee not in TEE_TYPES:
        raise AttestationError(
            f"unknown TEE type {tee!r} (known: {', '.join(TEE_TYPES)})", "tee_type"
        )
    return tee


@dataclass(frozen=True)
class Evidence:
    """A TEE's statement: ``tee`` (``sgx``, ``tdx`` or ``simulated``) and the quote bytes."""

    tee: str
    quote: bytes = field(repr=False)

    def __post_init__(self) -> None:
        check_tee_type(self.tee)


@dataclass(frozen=True)
class VerifiedReport:
    """What a verifier established about evidence whose signatures all check.

    Measurements are lower-case hex. SGX fills ``mr_enclave``, ``mr_signer``, ``isv_prod_id``,
    ``isv_svn``; TDX fills ``mr_td`` and ``rtmr`` (RTMR0-3); ``simulated`` fills
    ``measurement`` (the digest of the installed cipherspark code), ``platform_key`` and
    ``timestamp``. ``debug`` is the enclave's / TD's debug attribute (its memory is readable).
    """

    tee: str
    tcb_status: str
    report_data: bytes
    advisory_ids: tuple[str, ...] = ()
    debug: bool = False
    mr_enclave: str | None = None
    mr_signer: str | None = None
    isv_prod_id: int | None = None
    isv_svn: int | None = None
    mr_td: str | None = None
    rtmr: tuple[str, ...] = ()
    measurement: str | None = None
    platform_key: str | None = None
    timestamp: int | None = None

    def measurements(self) -> dict[str, Any]:
        """The measurement fields that apply to this TEE type."""
        if self.tee == "sgx":
            return {
                "mr_enclave": self.mr_enclave,
                "mr_signer": self.mr_signer,
                "isv_prod_id": self.isv_prod_id,
                "isv_svn": self.isv_svn,
                "debug": self.debug,
            }
        if self.tee == "tdx":
            return {
                "mr_td": self.mr_td,
                **{f"rtmr{i}": v for i, v in enumerate(self.rtmr)},
                "debug": self.debug,
            }
        return {
            "measurement": self.measurement,
            "platform_key": self.platform_key,
            "timestamp": self.timestamp,
        }

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (what ``cipherspark attest verify`` prints)."""
        return {
            "tee": self.tee,
            "tcb_status": self.tcb_status,
            "advisory_ids": list(self.advisory_ids),
            "measurements": self.measurements(),
            "report_data": self.report_data.hex(),
        }
