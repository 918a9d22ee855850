"""The operator's calls (``X-Admin-Token``): registering apps and the simulated TEE platforms
this KMS trusts for attested release."""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter, Response

from cipherspark.kms.server.api.deps import Admin, RequestId, Service
from cipherspark.kms.server.api.models import (
    AppResponse,
    CreateAppRequest,
    SimulatedPlatformListResponse,
    SimulatedPlatformRequest,
    SimulatedPlatformResponse,
)

__all__ = ["router"]

router = APIRouter(tags=["admin"], dependencies=[Admin])


@router.post("/v1/apps", status_code=201, response_model=AppResponse)
async def create_app(
    body: CreateAppRequest, service: Service, request_id: RequestId
) -> AppResponse:
    """Register an application; its API key is shown only in this response."""
    creds = await anyio.to_thread.run_sync(service.create_app, body.name, request_id)
    return AppResponse(app_id=creds.app_id, api_key=creds.api_key, vault_token=creds.vault_token)


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
