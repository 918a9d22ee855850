"""The attestation policy the KMS checks before releasing keys to an SGX enclave.

A policy names the enclave measurements allowed to unwrap an application's keys: MRENCLAVE (the
hash of everything the Gramine manifest trusts, as signed), MRSIGNER (the hash of the signing
key's modulus), ISV product id and SVN, and whether debug enclaves are refused. MRENCLAVE comes
from the signed manifest: ``gramine-sgx-sign`` prints it, ``gramine-sgx-sigstruct-view
cipherspark.sig`` shows it again, and :func:`read_sigstruct` reads it from the ``.sig`` file
(Intel SDM SIGSTRUCT layout). Without a ``.sig``, the policy carries
:data:`MRENCLAVE_PLACEHOLDER`, which no enclave can match.

The document is in the one policy format, :class:`cipherspark.attestation.AttestationPolicy`'s
(which the KMS enforces, see ``docs/attestation.md``); a policy belongs to a key, so the document
names no app or key (``cipherspark key policy set KEY FILE`` attaches it). The placeholder
is refused there until the real MRENCLAVE replaces it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cipherspark.attestation.policy import (
    DEFAULT_MAX_EVIDENCE_AGE,
    POLICY_VERSION,
    SgxPolicy,
)
from cipherspark.errors import FormatError, InputError, UsageError

__all__ = [
    "MRENCLAVE_PLACEHOLDER",
    "POLICY_VERSION",
    "SIGSTRUCT_SIZE",
    "SigstructMeasurement",
    "policy_document",
    "read_sigstruct",
]

MRENCLAVE_PLACEHOLDER = "<MRENCLAVE: 64 hex digits printed by gramine-sgx-sign>"
SIGSTRUCT_SIZE = 1808
_HEADER = bytes.fromhex("06000000e10000000000010000000000")
_MODULUS = slice(128, 128 + 384)
_ENCLAVEHASH = slice(960, 960 + 32)
_ATTRIBUTES = slice(928, 928 + 16)
_ISVPRODID = slice(1024, 1026)
_ISVSVN = slice(1026, 1028)
_DEBUG_FLAG = 0x2


@dataclass(frozen=True)
class SigstructMeasurement:
    """What a signed enclave will report in its quote."""

    mr_enclave: str
    mr_signer: str
    isv_prod_id: int
    isv_svn: int
    debug: bool


def read_sigstruct(path: Path) -> SigstructMeasurement:
    """Read MRENCLAVE, MRSIGNER, ISV ids and the debug bit from a Gramine ``.sig`` file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc
    if len(data) != SIGSTRUCT_SIZE or data[:16] != _HEADER:
        raise FormatError(f"{path} is not an SGX SIGSTRUCT (a gramine-sgx-sign .sig file)")
    attributes = int.from_bytes(data[_ATTRIBUTES][:8], "little")
    return SigstructMeasurement(
        mr_enclave=data[_ENCLAVEHASH].hex(),
        mr_signer=hashlib.sha256(data[_MODULUS]).hexdigest(),
        isv_prod_id=int.from_bytes(data[_ISVPRODID], "little"),
        isv_svn=int.from_bytes(data[_ISVSVN], "little"),
        debug=bool(attributes & _DEBUG_FLAG),
    )


def policy_document(measurement: SigstructMeasurement | None = None) -> dict[str, Any]:
    """The release policy for enclaves signed as ``measurement`` (a JSON-ready dict).

    The document is in the one policy format, :meth:`AttestationPolicy.to_dict`'s: it pins
    MRENCLAVE and MRSIGNER, the product id and the signed SVN as the minimum, refuses debug
    enclaves and accepts only an ``UpToDate`` TCB. Without ``measurement`` it holds
    :data:`MRENCLAVE_PLACEHOLDER` (and no MRSIGNER), which the KMS refuses until it is replaced.
    """
    from cipherspark.attestation.policy import AttestationPolicy

    if measurement is not None and measurement.debug:
        raise UsageError(
            "the enclave was signed as a debug enclave (its memory is readable): "
            "sign it with sgx.debug = false"
        )
    if measurement is None:
        return {
            "version": POLICY_VERSION,
            "tee_types": ["sgx"],
            "tcb_status": ["UpToDate"],
            "max_evidence_age_seconds": DEFAULT_MAX_EVIDENCE_AGE,
            "sgx": {
                "mr_enclave": [MRENCLAVE_PLACEHOLDER],
                "mr_signer": [],
                "isv_prod_id": 1,
                "min_isv_svn": 1,
                "allow_debug": False,
            },
        }
    # Built through the policy type, so the document is exactly what the KMS stores.
    policy = AttestationPolicy(
        tee_types=("sgx",),
        tcb_status=("UpToDate",),
        sgx=SgxPolicy(
            mr_enclave=(measurement.mr_enclave,),
            mr_signer=(measurement.mr_signer,),
            isv_prod_id=measurement.isv_prod_id,
            min_isv_svn=measurement.isv_svn,
            allow_debug=False,
        ),
    )
    return policy.to_dict()
