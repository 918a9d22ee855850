"""One entry point that verifies evidence of any TEE type and, given a policy, judges it."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

from cipherspark.attestation.dcap import DcapVerifier
from cipherspark.attestation.evidence import Evidence, VerifiedReport
from cipherspark.attestation.policy import AttestationPolicy
from cipherspark.attestation.simulated import verify_simulated
from cipherspark.errors import AttestationError

__all__ = ["verify_evidence"]


def verify_evidence(
    evidence: Evidence,
    *,
    policy: AttestationPolicy | None = None,
    dcap: DcapVerifier | None = None,
    collateral: str | None = None,
    now: int | None = None,
    simulated_platform_keys: Collection[str] = (),
    clock: Callable[[], float] = time.time,
    operator_platform_keys: Collection[str] | None = None,
) -> VerifiedReport:
    """Verify ``evidence``; with ``policy``, also apply it. Raises, never returns a verdict.

    DCAP evidence is verified at ``now`` (default: ``clock()``) with ``collateral`` or the
    verifier's source. Simulated evidence is checked against the platform keys the policy lists
    (or ``simulated_platform_keys`` when no policy is given); with ``operator_platform_keys``
    (the KMS server: the simulated platforms its operator registered) the signing key must be
    in that list as well, so the accepted keys are the intersection and an empty list denies.
    """
    if policy is not None:
        policy.check_tee(evidence.tee)
    moment = int(clock()) if now is None else int(now)
    if evidence.tee in ("sgx", "tdx"):
        verifier = dcap or DcapVerifier(clock=clock)
        report = verifier.verify(evidence.quote, collateral=collateral, now=moment)
        if report.tee != evidence.tee:
            raise AttestationError(f"the quote is {report.tee}, not {evidence.tee}", "tee_type")
    else:
        keys = (
            policy.simulated.platform_keys
            if policy is not None and policy.simulated
            else simulated_platform_keys
        )
        max_age = policy.max_evidence_age_seconds if policy is not None else None
        report = verify_simulated(
            evidence.quote,
            keys,
            max_age=max_age,
            clock=lambda: float(moment),
            operator_keys=operator_platform_keys,
        )
    if policy is not None:
        policy.check(report)
    return report
