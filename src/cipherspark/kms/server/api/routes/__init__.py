"""The API's routes, one module (and one :class:`fastapi.APIRouter`) per resource.

:data:`ROUTERS` lists them in the order the application includes them.
"""

from __future__ import annotations

from fastapi import APIRouter

from cipherspark.kms.server.api.routes import (
    admin,
    attestation,
    credentials,
    datakeys,
    datasets,
    keys,
    ops,
    transit,
)

__all__ = ["ROUTERS"]

ROUTERS: tuple[APIRouter, ...] = (
    ops.router,
    admin.router,
    keys.router,
    datakeys.router,
    attestation.router,
    credentials.router,
    transit.router,
    datasets.router,
)
