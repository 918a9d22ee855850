"""Data keys under a primary key: generate (with or without the plaintext), unwrap, rewrap.

These are the hot endpoints: :mod:`cipherspark.kms.server.api.lean` answers them first when it
can, with the same bytes; these routes are the reference it is tested against.
"""

from __future__ import annotations

from fastapi import APIRouter

from cipherspark.kms import _wire
from cipherspark.kms.server.api.deps import Caller, RequestId, Service, decode_field
from cipherspark.kms.server.api.models import (
    DataKeyResponse,
    RewrapResponse,
    UnwrapResponse,
    WrappedRequest,
)
from cipherspark.kms.server.permissions import Principal
from cipherspark.kms.server.service import KeyService

__all__ = ["router"]

router = APIRouter(prefix="/v1/keys", tags=["data keys"])


def _datakey(
    service: KeyService, name: str, request_id: str, who: Principal, with_plaintext: bool
) -> DataKeyResponse:
    version, plaintext, wrapped = service.generate_data_key(
        who, name, request_id, with_plaintext=with_plaintext
    )
    return DataKeyResponse(
        key_id=name,
        version=version,
        wrapped=_wire.b64encode(wrapped),
        plaintext=None if plaintext is None else _wire.b64encode(plaintext),
    )


@router.post("/{name}/datakey/plaintext", response_model_exclude_none=True)
async def datakey_plaintext(
    name: str, service: Service, request_id: RequestId, who: Caller
) -> DataKeyResponse:
    """A fresh data key: plaintext (base64) and wrapped (opaque, base64)."""
    return _datakey(service, name, request_id, who, True)


@router.post("/{name}/datakey/wrapped", response_model_exclude_none=True)
async def datakey_wrapped(
    name: str, service: Service, request_id: RequestId, who: Caller
) -> DataKeyResponse:
    """A fresh data key, wrapped only (for a writer that will unwrap it later)."""
    return _datakey(service, name, request_id, who, False)


@router.post("/{name}/unwrap")
async def unwrap(
    name: str, body: WrappedRequest, service: Service, request_id: RequestId, who: Caller
) -> UnwrapResponse:
    """The data key inside a wrapped blob."""
    version, plaintext = service.unwrap(
        who, name, decode_field(body.wrapped, "wrapped"), request_id
    )
    return UnwrapResponse(version=version, plaintext=_wire.b64encode(plaintext))


@router.post("/{name}/rewrap")
async def rewrap(
    name: str, body: WrappedRequest, service: Service, request_id: RequestId, who: Caller
) -> RewrapResponse:
    """Re-wrap a data key under the key's current version."""
    version, wrapped = service.rewrap(who, name, decode_field(body.wrapped, "wrapped"), request_id)
    return RewrapResponse(version=version, wrapped=_wire.b64encode(wrapped))
