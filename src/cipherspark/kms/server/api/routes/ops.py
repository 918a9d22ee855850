"""Operations: ``/healthz`` (liveness, no credentials) and ``/metrics`` (Prometheus text, the
admin token: the counts say which operations apps run and how often they fail)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from cipherspark.kms.server.api.deps import Admin, Service

__all__ = ["router"]

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the server answers."""
    return {"status": "ok"}


@router.get("/metrics", response_class=PlainTextResponse, dependencies=[Admin])
async def metrics(service: Service) -> str:
    """Prometheus text: operations by kind and result."""
    lines = ["# TYPE cipherspark_kms_operations_total counter"]
    for (op, result), count in sorted(service.metrics.items()):
        lines.append(f'cipherspark_kms_operations_total{{op="{op}",result="{result}"}} {count}')
    return "\n".join(lines) + "\n"
