"""Dependencies of the API routes: the service, the request id, the caller, the admin check,
and the decoding of base64 fields.

The service is the one :func:`cipherspark.kms.server.app.create_app` was given, kept in the
application's state. Every dependency is ``async`` so that FastAPI runs it on the event loop
rather than sending it to its thread pool; the slow checks (scrypt) go to a worker thread
themselves.
"""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import Depends, Request

from cipherspark.errors import CredentialsError, UsageError
from cipherspark.kms import _wire
from cipherspark.kms.server.api.errors import TRANSIT_PREFIX
from cipherspark.kms.server.api.limits import REQUEST_ID
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


async def caller(request: Request, service: Service) -> str:
    """The authenticated app: ``X-App-Id`` / ``X-Api-Key``, or on Transit routes
    ``X-Vault-Token: APPID.APIKEY``. One :class:`CredentialsError` for anything wrong."""
    app_id = request.headers.get("x-app-id", "")
    api_key = request.headers.get("x-api-key", "")
    token = request.headers.get("x-vault-token")
    if token is not None and request.url.path.startswith(TRANSIT_PREFIX):
        app_id, _, api_key = token.partition(".")
    if not app_id or not api_key:
        raise CredentialsError("invalid credentials")
    cached = service.cached_app(app_id, api_key)
    if cached is not None:
        return cached
    # scrypt takes tens of milliseconds: keep it off the event loop.
    return await anyio.to_thread.run_sync(service.authenticate, app_id, api_key)


Caller = Annotated[str, Depends(caller)]


async def admin(request: Request, service: Service) -> None:
    """:class:`CredentialsError` unless ``X-Admin-Token`` is the admin token."""
    token = request.headers.get("x-admin-token", "")
    if not token:
        raise CredentialsError("invalid credentials")
    await anyio.to_thread.run_sync(service.check_admin, token)


#: For routers whose every route is the operator's.
Admin = Depends(admin)


def decode_field(value: str, field: str) -> bytes:
    """The bytes of the base64 request field ``field``; :class:`UsageError` (400) if invalid."""
    try:
        return _wire.b64decode(value)
    except ValueError as exc:
        raise UsageError(f"{field} is not valid base64") from exc
