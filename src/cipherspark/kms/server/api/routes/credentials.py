"""An app's own credentials, managed with its owner credential: mint, list and revoke the
workload credentials its clusters use (owner credentials come from the admin token)."""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter

from cipherspark.kms.server.api.deps import Caller, RequestId, Service
from cipherspark.kms.server.api.models import (
    CredentialListResponse,
    CredentialRequest,
    CredentialResponse,
    NewCredentialResponse,
)
from cipherspark.kms.server.permissions import Role

__all__ = ["router"]

router = APIRouter(prefix="/v1/credentials", tags=["credentials"])


@router.post("", status_code=201)
async def create_credential(
    body: CredentialRequest, service: Service, request_id: RequestId, who: Caller
) -> NewCredentialResponse:
    """Mint a workload credential of the caller's app (owner credential only); its API key is
    only in this answer."""

    def run() -> NewCredentialResponse:
        new = service.accounts.create_credential(
            who, who.app_id, Role(body.role), body.label, request_id
        )
        return NewCredentialResponse.of(new)

    return await anyio.to_thread.run_sync(run)


@router.get("")
async def list_credentials(
    service: Service, request_id: RequestId, who: Caller
) -> CredentialListResponse:
    """The caller's app's credentials (owner credential only), oldest first."""
    found = service.accounts.list_credentials(who, who.app_id, request_id)
    return CredentialListResponse(credentials=[CredentialResponse.of(c) for c in found])


@router.delete("/{credential_id}")
async def revoke_credential(
    credential_id: str, service: Service, request_id: RequestId, who: Caller
) -> CredentialResponse:
    """Revoke one of the app's workload credentials (owner credential only)."""
    return CredentialResponse.of(
        service.accounts.revoke_credential(who, who.app_id, credential_id, request_id)
    )
