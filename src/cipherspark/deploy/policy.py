"""The attestation policy the KMS checks before releasing keys to an SGX enclave.

A policy names the enclave measurements allowed to unwrap an application's keys: MRENCLAVE (the
hash of everything the Gramine manifest trusts, as signed), MRSIGNER (the hash of the signing
key's modulus), ISV product id and SVN, and whether debug enclaves are refused. MRENCLAVE comes
from the signed manifest: ``gramine-sgx-sign`` prints it, ``gramine-sgx-sigstruct-view
cipherspark.sig`` shows it again, and :func:`read_sigstruct` reads it from the ``.sig`` file
(Intel SDM SIGSTRUCT layout). Without a ``.sig``, the policy carries
:data:`MRENCLAVE_PLACEHOLDER`, which no enclave can match.

The document is a valid :class:`cipherspark.attestation.AttestationPolicy` (which the KMS enforces,
see ``docs/attestation.md``) once the real MRENCLAVE is in it; the placeholder is refused there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cipherspark.errors import FormatError, InputError, UsageError

__all__ = [
    "MRENCLAVE_PLACEHOLDER",
    "POLICY_VERSION",
    "SIGSTRUCT_SIZE",
    "SigstructMeasurement",
    "policy_document",
    "read_sigstruct",
]

POLICY_VERSION = 1
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


def policy_document(
    *, app_id: str, keys: Sequence[str], measurement: SigstructMeasurement | None = None
) -> dict[str, Any]:
    """A KMS key-release policy for ``app_id``'s ``keys`` (a JSON-ready dict)."""
    from cipherspark.kms import validate_key_name

    if not app_id:
        raise UsageError("the policy needs the APP ID it releases keys to")
    if not keys:
        raise UsageError("name at least one key the policy releases (--key)")
    for key in keys:
        validate_key_name(key)
    if measurement is not None and measurement.debug:
        raise UsageError(
            "the enclave was signed as a debug enclave (its memory is readable): "
            "sign it with sgx.debug = false"
        )
    sgx: dict[str, Any] = {
        "mr_enclave": [measurement.mr_enclave if measurement else MRENCLAVE_PLACEHOLDER],
        "mr_signer": measurement.mr_signer if measurement else None,
        "isv_prod_id": measurement.isv_prod_id if measurement else 1,
        "min_isv_svn": measurement.isv_svn if measurement else 1,
        "allow_debug": False,
        "tcb_status": ["UpToDate"],
    }
    return {
        "version": POLICY_VERSION,
        "app_id": app_id,
        "keys": list(keys),
        "operations": ["unwrap"],
        "sgx": sgx,
    }
