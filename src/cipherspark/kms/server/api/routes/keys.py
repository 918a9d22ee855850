"""Primary keys of the calling app: create, list, describe, rotate, configure, enable/disable,
scheduled deletion. Everything but list and describe needs the app's owner credential."""

from __future__ import annotations

from fastapi import APIRouter

from cipherspark.kms.server.api.deps import Caller, RequestId, Service
from cipherspark.kms.server.api.models import (
    ConfigRequest,
    CreateKeyRequest,
    DeletionRequest,
    KeyListResponse,
    KeyResponse,
)

__all__ = ["router"]

router = APIRouter(prefix="/v1/keys", tags=["keys"])


@router.post("", status_code=201)
async def create_key(
    body: CreateKeyRequest, service: Service, request_id: RequestId, who: Caller
) -> KeyResponse:
    """Create a 256-bit primary key (version 1)."""
    return KeyResponse.of(service.create_key(who, body.name, request_id))


@router.get("")
async def list_keys(service: Service, request_id: RequestId, who: Caller) -> KeyListResponse:
    """The caller's keys, by name."""
    return KeyListResponse(keys=[KeyResponse.of(v) for v in service.list_keys(who, request_id)])


@router.get("/{name}")
async def describe_key(
    name: str, service: Service, request_id: RequestId, who: Caller
) -> KeyResponse:
    """One key's description."""
    return KeyResponse.of(service.describe_key(who, name, request_id))


@router.post("/{name}/rotate")
async def rotate(name: str, service: Service, request_id: RequestId, who: Caller) -> KeyResponse:
    """Add a new key version; older versions still unwrap."""
    return KeyResponse.of(service.rotate(who, name, request_id))


@router.post("/{name}/config")
async def configure(
    name: str, body: ConfigRequest, service: Service, request_id: RequestId, who: Caller
) -> KeyResponse:
    """Set the minimum version that may still unwrap (retires older versions)."""
    return KeyResponse.of(
        service.set_min_decryption_version(who, name, body.min_decryption_version, request_id)
    )


@router.post("/{name}/disable")
async def disable(name: str, service: Service, request_id: RequestId, who: Caller) -> KeyResponse:
    """Refuse every operation with this key until it is enabled again."""
    return KeyResponse.of(service.set_enabled(who, name, False, request_id))


@router.post("/{name}/enable")
async def enable(name: str, service: Service, request_id: RequestId, who: Caller) -> KeyResponse:
    """Re-enable a disabled key."""
    return KeyResponse.of(service.set_enabled(who, name, True, request_id))


@router.post("/{name}/schedule-deletion")
async def schedule_deletion(
    name: str, body: DeletionRequest, service: Service, request_id: RequestId, who: Caller
) -> KeyResponse:
    """Disable the key now and delete it after ``pending_days`` (1-30)."""
    return KeyResponse.of(service.schedule_deletion(who, name, body.pending_days, request_id))


@router.post("/{name}/cancel-deletion")
async def cancel_deletion(
    name: str, service: Service, request_id: RequestId, who: Caller
) -> KeyResponse:
    """Cancel a scheduled deletion."""
    return KeyResponse.of(service.cancel_deletion(who, name, request_id))
