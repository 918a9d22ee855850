"""Dependencies of the API routes: the service, the request id, the caller, the admin check,
and the decoding of base64 fields.

The service is the one :func:`cipherspark.kms.server.app.create_app` was given, kept in the
application's state. Every dependency is ``async`` so that FastAPI runs it on the event loop
rather than sending it to its thread pool; the slow checks (scrypt) go to a worker thread
themselves, and only after the failed-login throttle let the attempt through (429 with
``Retry-After`` otherwise, before any scrypt work). Logins verified before skip both.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated

import anyio.to_thread
from fastapi import Depends, HTTPException, Request

from cipherspark.errors import UsageError
from cipherspark.kms import _wire
from cipherspark.kms.server.api.errors import TRANSIT_PREFIX
from cipherspark.kms.server.api.limits import REQUEST_ID
from cipherspark.kms.server.permissions import Principal
from cipherspark.kms.server.service import KeyService

__all__ = [
    "Admin",
    "Caller",
    "RequestId",
    "Service",
    "admin",
    "caller",
    "decode_field",
    "get_service",
    "request_id",
    "source_address",
]


async def get_service(request: Request) -> KeyService:
    """The key service this application serves."""
    service: KeyService = request.app.state.service
    return service


Service = Annotated[KeyService, Depends(get_service)]


async def request_id(request: Request) -> str:
    """This request's id (given by the ASGI layer; ``-`` outside it)."""
    return str(request.scope.get(REQUEST_ID, "-"))


RequestId = Annotated[str, Depends(request_id)]


def source_address(request: Request) -> str | None:
    """The TCP peer's address (X-Forwarded-* headers are not trusted: behind a proxy, every
    client is the proxy's address)."""
    return request.client.host if request.client else None


def _throttled(seconds: int) -> HTTPException:
    return HTTPException(
        status_code=_wire.THROTTLED.status,
        detail=f"too many failed logins; retry in {seconds} s",
        headers={"Retry-After": str(seconds)},
    )


async def caller(request: Request, service: Service, rid: RequestId) -> Principal:
    """The authenticated caller: ``X-App-Id`` / ``X-Api-Key``, or on Transit routes
    ``X-Vault-Token: APPID.APIKEY``. One :class:`CredentialsError` for anything wrong."""
    app_id = request.headers.get("x-app-id", "")
    api_key = request.headers.get("x-api-key", "")
    token = request.headers.get("x-vault-token")
    if token is not None and request.url.path.startswith(TRANSIT_PREFIX):
        app_id, _, api_key = token.partition(".")
    cached = service.cached_caller(app_id, api_key)
    if cached is not None:
        return cached
    source = source_address(request)
    wait = service.accounts.throttled(source, app_id, rid)
    if wait is not None:
        raise _throttled(wait)
    # scrypt takes tens of milliseconds: keep it off the event loop.
    login = partial(service.authenticate, source=source, request_id=rid)
    return await anyio.to_thread.run_sync(login, app_id, api_key)


Caller = Annotated[Principal, Depends(caller)]


async def admin(request: Request, service: Service, rid: RequestId) -> None:
    """:class:`CredentialsError` unless ``X-Admin-Token`` is the admin token."""
    token = request.headers.get("x-admin-token", "")
    source = source_address(request)
    wait = service.accounts.throttled(source, None, rid)
    if wait is not None:
        raise _throttled(wait)
    check = partial(service.check_admin, source=source, request_id=rid)
    await anyio.to_thread.run_sync(check, token)


#: For routers whose every route is the operator's.
Admin = Depends(admin)


def decode_field(value: str, field: str) -> bytes:
    """The bytes of the base64 request field ``field``; :class:`UsageError` (400) if invalid."""
    try:
        return _wire.b64decode(value)
    except ValueError as exc:
        raise UsageError(f"{field} is not valid base64") from exc
