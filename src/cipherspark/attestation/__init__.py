"""Attested key release: TEE evidence, its verification, and key-release policies.

* Evidence providers (:func:`evidence_provider`): ``gramine-sgx``, ``tdx``, ``simulated`` (a
  software stand-in that protects nothing), and ``auto`` (never falls back to ``simulated``).
* Verifiers that raise :class:`~cipherspark.errors.AttestationError` (never return booleans):
  DCAP quotes through ``dcap-qvl`` (:class:`DcapVerifier`) and simulated statements against
  the platform keys a policy lists and, at the KMS server, the operator registered
  (:func:`verify_simulated`); :func:`verify_evidence` does either.
* :class:`AttestationPolicy`: what a primary key's policy accepts; denials are
  :class:`~cipherspark.errors.PolicyDeniedError` with a reason code.
* The protocol's cryptography (:mod:`cipherspark.attestation.protocol`): report data binding,
  ephemeral keys, JWE to the ephemeral key.

See ``docs/attestation.md``.
"""

from __future__ import annotations

from cipherspark.attestation.dcap import (
    CollateralSource,
    DcapVerifier,
    StaticCollateral,
    verify_dcap_quote,
)
from cipherspark.attestation.evidence import REASONS, TEE_TYPES, Evidence, VerifiedReport
from cipherspark.attestation.pccs import PccsCollateral
from cipherspark.attestation.policy import (
    AttestationPolicy,
    SgxPolicy,
    SimulatedPolicy,
    TdxPolicy,
    check_policy,
)
from cipherspark.attestation.protocol import EphemeralKey, bind, check_binding, seal_to
from cipherspark.attestation.providers import (
    PROVIDER_NAMES,
    EvidenceProvider,
    GramineSgxProvider,
    SimulatedProvider,
    TdxProvider,
    evidence_provider,
)
from cipherspark.attestation.simulated import (
    code_measurement,
    load_simulated_platform_key,
    simulated_evidence,
    simulated_platform_public_key,
    validate_platform_key,
    verify_simulated,
)
from cipherspark.attestation.verify import verify_evidence

__all__ = [
    "PROVIDER_NAMES",
    "REASONS",
    "TEE_TYPES",
    "AttestationPolicy",
    "CollateralSource",
    "DcapVerifier",
    "EphemeralKey",
    "Evidence",
    "EvidenceProvider",
    "GramineSgxProvider",
    "PccsCollateral",
    "SgxPolicy",
    "SimulatedPolicy",
    "SimulatedProvider",
    "StaticCollateral",
    "TdxPolicy",
    "TdxProvider",
    "VerifiedReport",
    "bind",
    "check_binding",
    "check_policy",
    "code_measurement",
    "evidence_provider",
    "load_simulated_platform_key",
    "seal_to",
    "simulated_evidence",
    "simulated_platform_public_key",
    "validate_platform_key",
    "verify_dcap_quote",
    "verify_evidence",
    "verify_simulated",
]
