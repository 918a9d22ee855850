"""Attested key release: a key's release policy, single-use nonces, and the attested unwrap
(and Transit decrypt) that answers the data key (the plaintext) as a JWE to the worker's
ephemeral key (see docs/attestation.md)."""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter

from cipherspark.attestation.policy import AttestationPolicy
from cipherspark.kms import _wire
from cipherspark.kms.server.api.deps import Caller, RequestId, Service, decode_field
from cipherspark.kms.server.api.models import (
    AttestedTransitDecryptRequest,
    AttestedUnwrapRequest,
    AttestedUnwrapResponse,
    NonceResponse,
    PolicyRequest,
    PolicyResponse,
)
from cipherspark.kms.server.release import ReleaseEvidence

__all__ = ["router"]

router = APIRouter(prefix="/v1/keys", tags=["attestation"])


@router.put("/{name}/policy")
async def put_policy(
    name: str, body: PolicyRequest, service: Service, request_id: RequestId, who: Caller
) -> PolicyResponse:
    """Set the key's release policy (which TEE evidence may receive its data keys)."""
    policy = service.set_policy(who, name, AttestationPolicy.from_dict(body.policy), request_id)
    return PolicyResponse(name=name, policy=policy.to_dict())


@router.get("/{name}/policy")
async def get_policy(
    name: str, service: Service, request_id: RequestId, who: Caller
) -> PolicyResponse:
    """The key's release policy (``null``: none, every attested unwrap is denied)."""
    policy = service.get_policy(who, name, request_id)
    return PolicyResponse(name=name, policy=None if policy is None else policy.to_dict())


@router.post("/{name}/attest/nonce")
async def attest_nonce(
    name: str, service: Service, request_id: RequestId, who: Caller
) -> NonceResponse:
    """A fresh single-use nonce for one attested unwrap of this key's data keys."""
    nonce, lifetime = service.attestation_nonce(who, name, request_id)
    return NonceResponse(nonce=_wire.b64encode(nonce), expires_in=lifetime)


def _evidence(body: AttestedUnwrapRequest | AttestedTransitDecryptRequest) -> ReleaseEvidence:
    """What the worker presented, decoded (a malformed field is a 400 naming it)."""
    return ReleaseEvidence(
        nonce=decode_field(body.nonce, "nonce"),
        tee=body.tee,
        quote=decode_field(body.evidence, "evidence"),
        public_key=decode_field(body.public_key, "public_key"),
        collateral=body.collateral,
    )


@router.post("/{name}/attest/unwrap")
async def attest_unwrap(
    name: str, body: AttestedUnwrapRequest, service: Service, request_id: RequestId, who: Caller
) -> AttestedUnwrapResponse:
    """Verify evidence, policy, nonce and binding; answer the data key as a JWE."""

    def run() -> tuple[int, str]:
        return service.attested_unwrap(
            who,
            name,
            _evidence(body),
            wrapped=decode_field(body.wrapped, "wrapped"),
            request_id=request_id,
        )

    # DCAP verification takes milliseconds of CPU: keep it off the event loop.
    version, token = await anyio.to_thread.run_sync(run)
    return AttestedUnwrapResponse(version=version, jwe=token)


@router.post("/{name}/attest/transit-decrypt")
async def attest_transit_decrypt(
    name: str,
    body: AttestedTransitDecryptRequest,
    service: Service,
    request_id: RequestId,
    who: Caller,
) -> AttestedUnwrapResponse:
    """As the attested unwrap, for a Transit (``vault:vN:``) ciphertext: its plaintext as a JWE.

    Files that Vault-Transit clients wrapped (Parquet written by pyarrow or parquet-java's
    VaultClient) open in an attested worker through this, and a workload credential gets the
    plaintext of an attested-only key's ciphertext no other way."""

    def run() -> tuple[int, str]:
        return service.attested_transit_decrypt(
            who,
            name,
            _evidence(body),
            ciphertext=body.ciphertext,
            request_id=request_id,
        )

    version, token = await anyio.to_thread.run_sync(run)
    return AttestedUnwrapResponse(version=version, jwe=token)
