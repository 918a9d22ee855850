"""The HTTP API of the KMS server (FastAPI): ``/v1`` keys and data keys, attested release, the
operator's ``/v1/admin`` calls (apps, simulated TEE platforms), Vault Transit, health.

Authentication: apps send ``X-App-Id`` and ``X-Api-Key`` headers (Transit clients send
``X-Vault-Token: APPID.APIKEY``); the admin sends ``X-Admin-Token``. Nothing secret ever travels in
a URL. Errors are JSON ``{"error": message, "code": code}`` (Transit: Vault's
``{"errors": [message]}``) with one status per kind (:mod:`cipherspark.kms._wire`): 400 bad
input, 401 credentials (never saying which part was wrong; also a revoked credential or a
disabled app), 403 not permitted to this credential's role, 404 unknown key (another app's key
answers the same), 409 exists / wrong state, 413 body too large, 422 wrong field types, 429 too
many failed logins (``Retry-After``).

The interactive documentation (``/docs``, ``/redoc``, ``/openapi.json``) is off unless
``api_docs`` (``kms serve --api-docs``): it maps the whole surface for anyone who can connect.

The routes live in :mod:`cipherspark.kms.server.api`, one module per resource.
"""

from __future__ import annotations

from fastapi import FastAPI

from cipherspark.kms.server.api.errors import install_error_handlers
from cipherspark.kms.server.api.lean import lean_routes
from cipherspark.kms.server.api.limits import ASGIApp, Limits
from cipherspark.kms.server.api.routes import ROUTERS
from cipherspark.kms.server.service import KeyService

__all__ = ["MAX_BODY_BYTES", "create_app"]

MAX_BODY_BYTES = 64 * 1024


def create_app(
    service: KeyService,
    *,
    max_body: int = MAX_BODY_BYTES,
    lean: bool = True,
    api_docs: bool = False,
) -> ASGIApp:
    """The ASGI application serving ``service``; ``lean=False`` sends the hot endpoints through
    FastAPI too (the reference the lean route is tested against); ``api_docs`` serves
    ``/docs``, ``/redoc`` and ``/openapi.json``."""
    api = FastAPI(
        title="cipherspark KMS",
        version="1",
        description="Primary keys that never leave the server; data keys wrapped on request.",
        docs_url="/docs" if api_docs else None,
        redoc_url="/redoc" if api_docs else None,
        openapi_url="/openapi.json" if api_docs else None,
    )
    # The routes' dependencies find the service here (cipherspark.kms.server.api.deps).
    api.state.service = service
    install_error_handlers(api)
    for router in ROUTERS:
        api.include_router(router)
    return Limits(api, max_body, lean_routes(service) if lean else None)
