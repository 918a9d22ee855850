"""The lean route of the hot endpoints: unwrap, rewrap and data-key generation without FastAPI's
per-request machinery.

These are what every executor calls, so they get a direct route: match the path, take the
credentials from the in-memory cache of verified ones, parse the one JSON field, call the
service, answer with the same JSON bytes and error shapes as the FastAPI routes
(:mod:`cipherspark.kms.server.api.routes.datakeys`). Anything off that happy path (credentials
not verified yet or missing, revoked since, a body FastAPI would reject or parse differently)
goes through FastAPI, which stays the reference: the OpenAPI document, validation messages, the
failed-login throttle and the scrypt check in a worker thread. Nothing about authorisation is
cached: the credential's and app's state (revoked, disabled, deleted) and the key's namespace,
role permissions, policy and state are read from storage on every call, by the same service
methods as there. ``tests/kms/server/test_lean_route.py`` checks both answer alike.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from cipherspark.errors import CipherSparkError
from cipherspark.kms import _wire
from cipherspark.kms.server.api.deps import decode_field
from cipherspark.kms.server.api.errors import error_content, service_error
from cipherspark.kms.server.api.limits import FastPath, Scope, Send
from cipherspark.kms.server.api.models import MAX_WRAPPED
from cipherspark.kms.server.service import KeyService

__all__ = ["lean_routes"]

_HOT = re.compile(r"/v1/keys/([^/]+)/(unwrap|rewrap|datakey/plaintext|datakey/wrapped)")
_JSON_HEADERS = [(b"content-type", b"application/json")]
_log = logging.getLogger("cipherspark.kms.server")


def _dumps(content: dict[str, Any]) -> bytes:
    # Byte for byte what FastAPI's JSONResponse renders.
    return json.dumps(
        content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


def _json_content_type(value: str | None) -> bool:
    # FastAPI parses a body as JSON when it has no content type or an application/(*+)json one.
    if value is None:
        return True
    main = value.split(";", 1)[0].strip().lower()
    return main == "application/json" or (
        main.startswith("application/") and main.endswith("+json")
    )


def _wrapped_field(body: bytes, content_type: str | None) -> str | None:
    """The ``wrapped`` field of a body that FastAPI would accept as it is, else ``None``."""
    if not body or not _json_content_type(content_type):
        return None
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    if not isinstance(doc, dict) or len(doc) != 1:
        return None
    value = doc.get("wrapped")
    if not isinstance(value, str) or len(value) > MAX_WRAPPED:
        return None
    return value


def lean_routes(service: KeyService) -> FastPath:
    """The lean route over ``service``: answers a hot request, or ``False`` to pass it on."""

    async def respond(send: Send, request_id: str, status: int, content: dict[str, Any]) -> None:
        body = _dumps(content)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-length", str(len(body)).encode()),
                    *_JSON_HEADERS,
                    (b"x-request-id", request_id.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def fast(scope: Scope, body: bytes, request_id: str, send: Send) -> bool:
        if scope["method"] != "POST":
            return False
        path: str = scope["path"]
        match = _HOT.fullmatch(path)
        if match is None:
            return False
        app_id = api_key = content_type = None
        for header, value in scope["headers"]:
            if header == b"x-app-id" and app_id is None:
                app_id = value.decode("latin-1")
            elif header == b"x-api-key" and api_key is None:
                api_key = value.decode("latin-1")
            elif header == b"content-type" and content_type is None:
                content_type = value.decode("latin-1")
        if not app_id or not api_key:
            return False
        who = service.cached_caller(app_id, api_key)
        if who is None:
            return False
        name, action = match.group(1), match.group(2)
        try:
            if action in ("unwrap", "rewrap"):
                field = _wrapped_field(body, content_type)
                if field is None:
                    return False
                wrapped = decode_field(field, "wrapped")
                if action == "unwrap":
                    version, plaintext = service.unwrap(who, name, wrapped, request_id)
                    content: dict[str, Any] = {
                        "version": version,
                        "plaintext": _wire.b64encode(plaintext),
                    }
                else:
                    version, rewrapped = service.rewrap(who, name, wrapped, request_id)
                    content = {"version": version, "wrapped": _wire.b64encode(rewrapped)}
            else:
                with_plaintext = action == "datakey/plaintext"
                version, data_key, wrapped = service.generate_data_key(
                    who, name, request_id, with_plaintext=with_plaintext
                )
                content = {"key_id": name, "version": version}
                if data_key is not None:
                    content["plaintext"] = _wire.b64encode(data_key)
                content["wrapped"] = _wire.b64encode(wrapped)
        except CipherSparkError as exc:
            status, error = service_error(path, exc)
            await respond(send, request_id, status, error)
            return True
        except Exception:
            _log.exception("request %s failed", request_id)
            answer = _wire.internal_answer()
            await respond(send, request_id, answer.status, error_content(path, answer))
            return True
        await respond(send, request_id, 200, content)
        return True

    return fast
