"""The operator's calls (``X-Admin-Token``): apps (create, disable, enable), their credentials
(mint, list, revoke), the admin token's rotation, release policies of any app's key, and the
simulated TEE platforms this KMS trusts for attested release."""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter, Response

from cipherspark.attestation.policy import AttestationPolicy
from cipherspark.kms.server.api.deps import Admin, RequestId, Service
from cipherspark.kms.server.api.models import (
    AdminTokenResponse,
    AppResponse,
    AppStateResponse,
    CreateAppRequest,
    CredentialListResponse,
    CredentialRequest,
    CredentialResponse,
    NewCredentialResponse,
    PolicyRequest,
    PolicyResponse,
    SimulatedPlatformListResponse,
    SimulatedPlatformRequest,
    SimulatedPlatformResponse,
)
from cipherspark.kms.server.permissions import Principal, Role

__all__ = ["router"]

router = APIRouter(tags=["admin"], dependencies=[Admin])


@router.post("/v1/apps", status_code=201, response_model=AppResponse)
async def create_app(
    body: CreateAppRequest, service: Service, request_id: RequestId
) -> AppResponse:
    """Register an application; its API key is shown only in this response."""
    creds = await anyio.to_thread.run_sync(service.create_app, body.name, request_id)
    return AppResponse(
        app_id=creds.app_id,
        credential_id=creds.credential_id,
        api_key=creds.api_key,
        vault_token=creds.vault_token,
    )


@router.post("/v1/admin/apps/{app_id}/disable")
async def disable_app(app_id: str, service: Service, request_id: RequestId) -> AppStateResponse:
    """Refuse every credential of the app from its next request on."""
    return AppStateResponse.of(service.accounts.set_app_enabled(app_id, False, request_id))


@router.post("/v1/admin/apps/{app_id}/enable")
async def enable_app(app_id: str, service: Service, request_id: RequestId) -> AppStateResponse:
    """Accept the app's (unrevoked) credentials again."""
    return AppStateResponse.of(service.accounts.set_app_enabled(app_id, True, request_id))


@router.post("/v1/admin/apps/{app_id}/credentials", status_code=201)
async def create_credential(
    app_id: str, body: CredentialRequest, service: Service, request_id: RequestId
) -> NewCredentialResponse:
    """Mint a credential (``workload`` or ``owner``) of the app; its API key is only here."""

    def run() -> NewCredentialResponse:
        new = service.accounts.create_credential(
            None, app_id, Role(body.role), body.label, request_id
        )
        return NewCredentialResponse.of(new)

    return await anyio.to_thread.run_sync(run)


@router.get("/v1/admin/apps/{app_id}/credentials")
async def list_credentials(
    app_id: str, service: Service, request_id: RequestId
) -> CredentialListResponse:
    """The app's credentials (revoked ones too), oldest first."""
    found = service.accounts.list_credentials(None, app_id, request_id)
    return CredentialListResponse(credentials=[CredentialResponse.of(c) for c in found])


@router.delete("/v1/admin/apps/{app_id}/credentials/{credential_id}")
async def revoke_credential(
    app_id: str, credential_id: str, service: Service, request_id: RequestId
) -> CredentialResponse:
    """Revoke a credential: refused from its next request on. Answers the revoked record."""
    return CredentialResponse.of(
        service.accounts.revoke_credential(None, app_id, credential_id, request_id)
    )


@router.post("/v1/admin/admin-token/rotate")
async def rotate_admin_token(service: Service, request_id: RequestId) -> AdminTokenResponse:
    """A new admin token, shown only here; the one that made this request stops working."""
    token = await anyio.to_thread.run_sync(service.accounts.rotate_admin_token, request_id)
    return AdminTokenResponse(admin_token=token)


@router.put("/v1/admin/apps/{app_id}/keys/{name}/policy")
async def put_policy(
    app_id: str, name: str, body: PolicyRequest, service: Service, request_id: RequestId
) -> PolicyResponse:
    """Set the release policy of one of the app's keys (as its owner could)."""
    who = Principal.operator(app_id)
    policy = service.set_policy(who, name, AttestationPolicy.from_dict(body.policy), request_id)
    return PolicyResponse(name=name, policy=policy.to_dict())


@router.get("/v1/admin/apps/{app_id}/keys/{name}/policy")
async def get_policy(
    app_id: str, name: str, service: Service, request_id: RequestId
) -> PolicyResponse:
    """The release policy of one of the app's keys."""
    policy = service.get_policy(Principal.operator(app_id), name, request_id)
    return PolicyResponse(name=name, policy=None if policy is None else policy.to_dict())


@router.post("/v1/admin/simulated-platforms", status_code=201)
async def add_simulated_platform(
    body: SimulatedPlatformRequest, response: Response, service: Service, request_id: RequestId
) -> SimulatedPlatformResponse:
    """Trust a simulated TEE platform's public key for attested release (201; 200 if it was
    registered already, whose label is then replaced)."""
    record, new = service.register_simulated_platform(body.public_key, body.label, request_id)
    if not new:
        response.status_code = 200
    return SimulatedPlatformResponse.of(record)


@router.get("/v1/admin/simulated-platforms")
async def list_simulated_platforms(service: Service) -> SimulatedPlatformListResponse:
    """The simulated TEE platforms this KMS trusts, oldest first."""
    return SimulatedPlatformListResponse(
        platforms=[SimulatedPlatformResponse.of(r) for r in service.simulated_platforms()]
    )


@router.delete("/v1/admin/simulated-platforms/{public_key}")
async def remove_simulated_platform(
    public_key: str, service: Service, request_id: RequestId
) -> SimulatedPlatformResponse:
    """Stop trusting a simulated platform (404 if it is not registered); the record removed."""
    return SimulatedPlatformResponse.of(service.remove_simulated_platform(public_key, request_id))
