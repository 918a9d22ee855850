"""Attested key release: a key's release policy, single-use nonces, and the attested unwrap
that answers the data key as a JWE to the worker's ephemeral key (see docs/attestation.md)."""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter

from cipherspark.attestation.policy import AttestationPolicy
from cipherspark.kms import _wire
from cipherspark.kms.server.api.deps import Caller, RequestId, Service, decode_field
from cipherspark.kms.server.api.models import (
    AttestedUnwrapRequest,
    AttestedUnwrapResponse,
    NonceResponse,
    PolicyRequest,
    PolicyResponse,
)

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


@router.post("/{name}/attest/unwrap")
async def attest_unwrap(
    name: str, body: AttestedUnwrapRequest, service: Service, request_id: RequestId, who: Caller
) -> AttestedUnwrapResponse:
    """Verify evidence, policy, nonce and binding; answer the data key as a JWE."""

    def run() -> tuple[int, str]:
        return service.attested_unwrap(
            who,
            name,
            nonce=decode_field(body.nonce, "nonce"),
            tee=body.tee,
            quote=decode_field(body.evidence, "evidence"),
            public_key=decode_field(body.public_key, "public_key"),
            wrapped=decode_field(body.wrapped, "wrapped"),
            collateral=body.collateral,
            request_id=request_id,
        )

    # DCAP verification takes milliseconds of CPU: keep it off the event loop.
    version, token = await anyio.to_thread.run_sync(run)
    return AttestedUnwrapResponse(version=version, jwe=token)
