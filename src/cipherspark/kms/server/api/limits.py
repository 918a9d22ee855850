"""The ASGI layer in front of the FastAPI application: request ids, the body limit, and the
hand-off to the lean route."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from cipherspark.kms import _wire
from cipherspark.kms.server.api.errors import error_response

__all__ = [
    "REQUEST_ID",
    "ASGIApp",
    "FastPath",
    "Limits",
    "Message",
    "Receive",
    "Scope",
    "Send",
]

#: The ASGI scope key holding the request id (also sent back as ``X-Request-Id``).
REQUEST_ID = "cipherspark.request_id"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
#: A route answering some requests before FastAPI: (scope, body, request id, send) -> answered.
FastPath = Callable[[Scope, bytes, str, Send], Awaitable[bool]]


class Limits:
    """ASGI middleware: a request id for every request, and a cap on request bodies.

    The body is read up to the limit before the app sees it, so an oversized upload is refused
    with 413 without being parsed, whether or not it declared a Content-Length. ``fast`` (the
    lean route of the hot data-key endpoints) gets the first look at every request and answers
    it, or returns ``False`` to hand it, body and all, to the FastAPI application.
    """

    def __init__(self, app: ASGIApp, max_body: int, fast: FastPath | None = None) -> None:
        self._app = app
        self._max = max_body
        self._fast = fast

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection scope."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        request_id = os.urandom(16).hex()
        scope[REQUEST_ID] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        for name, value in scope.get("headers", []):
            if name == b"content-length" and (not value.isdigit() or int(value) > self._max):
                await _too_large(scope, send_with_id, self._max)
                return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max:
                await _too_large(scope, send_with_id, self._max)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if self._fast is not None and await self._fast(scope, body, request_id, send):
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self._app(scope, replay, send_with_id)


async def _too_large(scope: Scope, send: Send, limit: int) -> None:
    message = f"request body larger than {limit} bytes"
    response = error_response(str(scope.get("path", "")), _wire.BODY_TOO_LARGE, message)
    await response({"type": "http", "headers": []}, _no_receive, send)


async def _no_receive() -> Message:  # pragma: no cover - a response never reads the request
    return {"type": "http.disconnect"}
