"""Error answers of the HTTP API: the wire contract (:mod:`cipherspark.kms._wire`) rendered.

Native routes answer ``{"error": message, "code": code}`` (plus ``"reason"`` for attestation
denials); the Vault Transit routes answer Vault's ``{"errors": [message]}`` with the same status.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from cipherspark.errors import CipherSparkError
from cipherspark.kms import _wire
from cipherspark.kms._wire import ErrorAnswer, WireCode

__all__ = [
    "TRANSIT_PREFIX",
    "error_content",
    "error_response",
    "install_error_handlers",
    "service_error",
]

#: Where the Vault Transit routes live (their errors are Vault-shaped).
TRANSIT_PREFIX = "/v1/transit/"


def error_content(path: str, answer: ErrorAnswer) -> dict[str, Any]:
    """The JSON body answering ``answer`` on ``path``."""
    if path.startswith(TRANSIT_PREFIX):
        return {"errors": [answer.message]}
    return answer.body()


def error_response(path: str, code: WireCode, message: str) -> JSONResponse:
    """A refusal of the HTTP layer itself (``code``: one of the contract's codes)."""
    answer = ErrorAnswer(code.status, code.code, message)
    return JSONResponse(error_content(path, answer), status_code=answer.status)


def service_error(path: str, exc: CipherSparkError) -> tuple[int, dict[str, Any]]:
    """The status and JSON body answering a service error on ``path``."""
    answer = _wire.error_answer(exc)
    return answer.status, error_content(path, answer)


def install_error_handlers(api: FastAPI) -> None:
    """Answer cipherspark errors by the contract, validation failures as 400 / 422, and the
    failed-login throttle's refusals as 429 ``throttled`` with ``Retry-After``."""

    @api.exception_handler(HTTPException)
    async def _on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code != _wire.THROTTLED.status:
            return await http_exception_handler(request, exc)
        answer = ErrorAnswer(exc.status_code, _wire.THROTTLED.code, str(exc.detail))
        return JSONResponse(
            error_content(request.url.path, answer),
            status_code=answer.status,
            headers=dict(exc.headers or {}),
        )

    @api.exception_handler(CipherSparkError)
    async def _on_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, CipherSparkError)
        status, content = service_error(request.url.path, exc)
        return JSONResponse(content, status_code=status)

    @api.exception_handler(RequestValidationError)
    async def _on_invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(
                request.url.path, _wire.MALFORMED_JSON, "the request body is not valid JSON"
            )
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        return error_response(
            request.url.path, _wire.INVALID_FIELD, f"{where}: {first.get('msg', 'invalid value')}"
        )
