"""The HTTP API of the KMS server (FastAPI): ``/v1`` keys and data keys, attested release, the
operator's ``/v1/admin`` calls (apps, simulated TEE platforms), Vault Transit, health.

Authentication: apps send ``X-App-Id`` and ``X-Api-Key`` headers (Transit clients send
``X-Vault-Token: APPID.APIKEY``); the admin sends ``X-Admin-Token``. Nothing secret ever travels in
a URL. Errors are JSON ``{"error": message, "code": code}`` (Transit: Vault's
``{"errors": [message]}``) with one status per kind: 400 bad input, 401 credentials (never saying
which part was wrong), 403 another app's key, 404 unknown key, 409 exists / wrong state, 413 body
too large, 422 wrong field types.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Literal

import anyio.to_thread
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from cipherspark.attestation.policy import AttestationPolicy
from cipherspark.errors import (
    AttestationError,
    CipherSparkError,
    CredentialsError,
    IntegrityError,
    KeyExistsError,
    KeyNotFoundError,
    KeyStateError,
    PermissionDeniedError,
    UsageError,
)
from cipherspark.kms.server.service import KeyService, KeyView, SimulatedPlatformRecord

__all__ = ["MAX_BODY_BYTES", "create_app"]

MAX_BODY_BYTES = 64 * 1024
_REQUEST_ID = "cipherspark.request_id"
_TRANSIT = "/v1/transit/"
_MAX_WRAPPED = 8192

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


FastPath = Callable[[Scope, bytes, str, Send], Awaitable[bool]]


class _Limits:
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
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        request_id = os.urandom(16).hex()
        scope[_REQUEST_ID] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []),
                                      (b"x-request-id", request_id.encode())]
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
    response = _error_response(str(scope.get("path", "")), 413, "body_too_large", message)
    await response({"type": "http", "headers": []}, _no_receive, send)


async def _no_receive() -> Message:  # pragma: no cover - a response never reads the request
    return {"type": "http.disconnect"}


def _error_content(path: str, code: str, message: str) -> dict[str, Any]:
    if path.startswith(_TRANSIT):
        return {"errors": [message]}
    return {"error": message, "code": code}


def _error_response(path: str, status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(_error_content(path, code, message), status_code=status)


def _service_error(path: str, exc: CipherSparkError) -> tuple[int, dict[str, Any]]:
    """The status and JSON body answering a service error on ``path``."""
    if isinstance(exc, AttestationError):
        return 403, {"error": str(exc), "code": "attestation_denied", "reason": exc.reason}
    for kind, status, code in _STATUS:
        if isinstance(exc, kind):
            return status, _error_content(path, code, str(exc))
    return 500, _error_content(path, "internal", "the KMS failed to complete the request")


_STATUS: tuple[tuple[type[CipherSparkError], int, str], ...] = (
    (CredentialsError, 401, "unauthorized"),
    (PermissionDeniedError, 403, "forbidden"),
    (KeyNotFoundError, 404, "key_not_found"),
    (KeyExistsError, 409, "key_exists"),
    (KeyStateError, 409, "key_state"),
    (IntegrityError, 400, "integrity"),
    (UsageError, 400, "bad_request"),
)


# -- request and response bodies ------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class CreateKeyRequest(_Body):
    """``POST /v1/keys``."""

    name: str = Field(max_length=256)


class WrappedRequest(_Body):
    """A wrapped data key (base64), for unwrap and rewrap."""

    wrapped: str = Field(max_length=_MAX_WRAPPED)


class ConfigRequest(_Body):
    """``POST /v1/keys/{name}/config``."""

    min_decryption_version: int


class DeletionRequest(_Body):
    """``POST /v1/keys/{name}/schedule-deletion``."""

    pending_days: int = 7


class PolicyRequest(_Body):
    """``PUT /v1/keys/{name}/policy``: the release policy (see docs/attestation.md)."""

    policy: dict[str, Any]


class PolicyResponse(BaseModel):
    """A key's release policy (normalised), or ``null`` when it has none (which denies)."""

    name: str
    policy: dict[str, Any] | None


class NonceResponse(BaseModel):
    """A single-use nonce (base64) and how many seconds it stays valid."""

    nonce: str
    expires_in: int


class AttestedUnwrapRequest(_Body):
    """``POST /v1/keys/{name}/attest/unwrap``: evidence bound to a nonce and a public key."""

    nonce: str = Field(max_length=128)
    tee: str = Field(max_length=32)
    evidence: str = Field(max_length=24 * 1024)
    public_key: str = Field(max_length=256)
    wrapped: str = Field(max_length=8192)
    collateral: str | None = Field(default=None, max_length=32 * 1024)


class AttestedUnwrapResponse(BaseModel):
    """The data key as a compact JWE (``ECDH-ES+A256KW``, ``A256GCM``) to the public key."""

    version: int
    jwe: str


class CreateAppRequest(_Body):
    """``POST /v1/apps`` (admin)."""

    name: str = Field(max_length=1024)


class SimulatedPlatformRequest(_Body):
    """``POST /v1/admin/simulated-platforms`` (admin): trust a simulated TEE platform.

    The limits are generous on purpose: a malformed key or label is refused by the service
    with 400 and a message saying what a valid one looks like, not with a schema error.
    """

    public_key: str = Field(max_length=256)
    label: str = Field(default="", max_length=1024)


class SimulatedPlatformResponse(BaseModel):
    """A registered simulated platform: public key (hex), label, first registration time."""

    public_key: str
    label: str
    created: str


class SimulatedPlatformListResponse(BaseModel):
    """``GET /v1/admin/simulated-platforms``: the registered platforms, oldest first."""

    platforms: list[SimulatedPlatformResponse]


class KeyResponse(BaseModel):
    """A key's public description."""

    name: str
    version: int
    created: str
    min_decryption_version: int
    enabled: bool
    deletion_date: str | None


class KeyListResponse(BaseModel):
    """``GET /v1/keys``."""

    keys: list[KeyResponse]


class DataKeyResponse(BaseModel):
    """A data key: ``plaintext`` (base64, absent for the wrapped-only variant) and ``wrapped``."""

    key_id: str
    version: int
    plaintext: str | None = None
    wrapped: str


class UnwrapResponse(BaseModel):
    """An unwrapped data key (base64) and the version that wrapped it."""

    version: int
    plaintext: str


class RewrapResponse(BaseModel):
    """A data key re-wrapped under the current version."""

    version: int
    wrapped: str


class AppResponse(BaseModel):
    """A new app's credentials (shown once)."""

    app_id: str
    api_key: str
    vault_token: str


class _TransitBody(BaseModel):
    # Vault clients send fields we ignore (type, convergent_encryption...); reject only those
    # whose meaning we would silently change (context, nonce, batches).
    model_config = ConfigDict(extra="ignore", frozen=True)
    context: str | None = None
    nonce: str | None = None
    batch_input: list[Any] | None = None


class TransitEncryptRequest(_TransitBody):
    """``POST /v1/transit/encrypt/{name}``."""

    plaintext: str = Field(max_length=48 * 1024)
    key_version: int | None = None


class TransitCiphertextRequest(_TransitBody):
    """``POST /v1/transit/decrypt/{name}`` and ``/v1/transit/rewrap/{name}``."""

    ciphertext: str = Field(max_length=64 * 1024)
    key_version: int | None = None


class TransitDataKeyRequest(_TransitBody):
    """``POST /v1/transit/datakey/{plaintext|wrapped}/{name}``."""

    bits: int = 256


# -- helpers ----------------------------------------------------------------------------------


def _b64decode(value: str, field: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise UsageError(f"{field} is not valid base64") from exc


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _key(view: KeyView) -> KeyResponse:
    return KeyResponse(name=view.name, version=view.version, created=view.created,
                       min_decryption_version=view.min_decryption_version, enabled=view.enabled,
                       deletion_date=view.deletion_date)


def _platform(record: SimulatedPlatformRecord) -> SimulatedPlatformResponse:
    return SimulatedPlatformResponse(public_key=record.public_key, label=record.label,
                                     created=record.created)


def _request_id(request: Request) -> str:
    return str(request.scope.get(_REQUEST_ID, "-"))


def _vault(request: Request, data: dict[str, Any]) -> dict[str, Any]:
    return {"request_id": _request_id(request), "lease_id": "", "renewable": False,
            "lease_duration": 0, "data": data, "wrap_info": None, "warnings": None,
            "auth": None}


def _transit_supported(body: _TransitBody) -> None:
    if body.context is not None or body.nonce is not None:
        raise UsageError("derived and convergent Transit keys (context, nonce) are not supported")
    if body.batch_input is not None:
        raise UsageError("batch_input is not supported; send one item per request")


def create_app(service: KeyService, *, max_body: int = MAX_BODY_BYTES,
               lean: bool = True) -> ASGIApp:
    """The ASGI application serving ``service``; ``lean=False`` sends the hot endpoints through
    FastAPI too (the reference the lean route is tested against)."""
    api = FastAPI(
        title="cipherspark KMS",
        version="1",
        description="Primary keys that never leave the server; data keys wrapped on request.",
    )

    async def caller(request: Request) -> str:
        app_id = request.headers.get("x-app-id", "")
        api_key = request.headers.get("x-api-key", "")
        token = request.headers.get("x-vault-token")
        if token is not None and request.url.path.startswith(_TRANSIT):
            app_id, _, api_key = token.partition(".")
        if not app_id or not api_key:
            raise CredentialsError("invalid credentials")
        cached = service.cached_app(app_id, api_key)
        if cached is not None:
            return cached
        # scrypt takes tens of milliseconds: keep it off the event loop.
        return await anyio.to_thread.run_sync(service.authenticate, app_id, api_key)

    async def admin(request: Request) -> None:
        token = request.headers.get("x-admin-token", "")
        if not token:
            raise CredentialsError("invalid credentials")
        await anyio.to_thread.run_sync(service.check_admin, token)

    @api.exception_handler(CipherSparkError)
    async def _on_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, CipherSparkError)
        status, content = _service_error(request.url.path, exc)
        return JSONResponse(content, status_code=status)

    @api.exception_handler(RequestValidationError)
    async def _on_invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return _error_response(request.url.path, 400, "malformed_json",
                                   "the request body is not valid JSON")
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        return _error_response(request.url.path, 422, "invalid_field",
                               f"{where}: {first.get('msg', 'invalid value')}")

    Caller = Depends(caller)

    @api.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """Liveness: the server answers."""
        return {"status": "ok"}

    @api.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    async def metrics() -> str:
        """Prometheus text: operations by kind and result."""
        lines = ["# TYPE cipherspark_kms_operations_total counter"]
        for (op, result), count in sorted(service.metrics.items()):
            lines.append(f'cipherspark_kms_operations_total{{op="{op}",result="{result}"}} '
                         f"{count}")
        return "\n".join(lines) + "\n"

    @api.post("/v1/apps", status_code=201, response_model=AppResponse, tags=["admin"],
              dependencies=[Depends(admin)])
    async def create_app_(body: CreateAppRequest, request: Request) -> AppResponse:
        """Register an application; its API key is shown only in this response."""
        creds = await anyio.to_thread.run_sync(service.create_app, body.name,
                                               _request_id(request))
        return AppResponse(app_id=creds.app_id, api_key=creds.api_key,
                           vault_token=creds.vault_token)

    @api.post("/v1/admin/simulated-platforms", status_code=201, tags=["admin"],
              dependencies=[Depends(admin)])
    async def add_simulated_platform(body: SimulatedPlatformRequest, request: Request,
                                     response: Response) -> SimulatedPlatformResponse:
        """Trust a simulated TEE platform's public key for attested release (201; 200 if it was
        registered already, whose label is then replaced)."""
        record, new = service.register_simulated_platform(body.public_key, body.label,
                                                          _request_id(request))
        if not new:
            response.status_code = 200
        return _platform(record)

    @api.get("/v1/admin/simulated-platforms", tags=["admin"], dependencies=[Depends(admin)])
    async def list_simulated_platforms() -> SimulatedPlatformListResponse:
        """The simulated TEE platforms this KMS trusts, oldest first."""
        return SimulatedPlatformListResponse(
            platforms=[_platform(r) for r in service.simulated_platforms()])

    @api.delete("/v1/admin/simulated-platforms/{public_key}", tags=["admin"],
                dependencies=[Depends(admin)])
    async def remove_simulated_platform(public_key: str,
                                        request: Request) -> SimulatedPlatformResponse:
        """Stop trusting a simulated platform (404 if it is not registered); the record removed."""
        return _platform(service.remove_simulated_platform(public_key, _request_id(request)))

    @api.post("/v1/keys", status_code=201, tags=["keys"])
    async def create_key(body: CreateKeyRequest, request: Request,
                         app: str = Caller) -> KeyResponse:
        """Create a 256-bit primary key (version 1)."""
        return _key(service.create_key(app, body.name, _request_id(request)))

    @api.get("/v1/keys", tags=["keys"])
    async def list_keys(app: str = Caller) -> KeyListResponse:
        """The caller's keys, by name."""
        return KeyListResponse(keys=[_key(v) for v in service.list_keys(app)])

    @api.get("/v1/keys/{name}", tags=["keys"])
    async def describe_key(name: str, app: str = Caller) -> KeyResponse:
        """One key's description."""
        return _key(service.describe_key(app, name))

    async def _datakey(name: str, request: Request, app: str,
                       with_plaintext: bool) -> DataKeyResponse:
        version, plaintext, wrapped = service.generate_data_key(
            app, name, _request_id(request), with_plaintext=with_plaintext)
        return DataKeyResponse(key_id=name, version=version, wrapped=_b64(wrapped),
                               plaintext=None if plaintext is None else _b64(plaintext))

    @api.post("/v1/keys/{name}/datakey/plaintext", tags=["data keys"],
              response_model_exclude_none=True)
    async def datakey_plaintext(name: str, request: Request,
                                app: str = Caller) -> DataKeyResponse:
        """A fresh data key: plaintext (base64) and wrapped (opaque, base64)."""
        return await _datakey(name, request, app, True)

    @api.post("/v1/keys/{name}/datakey/wrapped", tags=["data keys"],
              response_model_exclude_none=True)
    async def datakey_wrapped(name: str, request: Request,
                              app: str = Caller) -> DataKeyResponse:
        """A fresh data key, wrapped only (for a writer that will unwrap it later)."""
        return await _datakey(name, request, app, False)

    @api.post("/v1/keys/{name}/unwrap", tags=["data keys"])
    async def unwrap(name: str, body: WrappedRequest, request: Request,
                     app: str = Caller) -> UnwrapResponse:
        """The data key inside a wrapped blob."""
        version, plaintext = service.unwrap(app, name, _b64decode(body.wrapped, "wrapped"),
                                            _request_id(request))
        return UnwrapResponse(version=version, plaintext=_b64(plaintext))

    @api.post("/v1/keys/{name}/rewrap", tags=["data keys"])
    async def rewrap(name: str, body: WrappedRequest, request: Request,
                     app: str = Caller) -> RewrapResponse:
        """Re-wrap a data key under the key's current version."""
        version, wrapped = service.rewrap(app, name, _b64decode(body.wrapped, "wrapped"),
                                          _request_id(request))
        return RewrapResponse(version=version, wrapped=_b64(wrapped))

    @api.post("/v1/keys/{name}/rotate", tags=["keys"])
    async def rotate(name: str, request: Request, app: str = Caller) -> KeyResponse:
        """Add a new key version; older versions still unwrap."""
        return _key(service.rotate(app, name, _request_id(request)))

    @api.post("/v1/keys/{name}/config", tags=["keys"])
    async def configure(name: str, body: ConfigRequest, request: Request,
                        app: str = Caller) -> KeyResponse:
        """Set the minimum version that may still unwrap (retires older versions)."""
        return _key(service.set_min_decryption_version(app, name, body.min_decryption_version,
                                                       _request_id(request)))

    @api.post("/v1/keys/{name}/disable", tags=["keys"])
    async def disable(name: str, request: Request, app: str = Caller) -> KeyResponse:
        """Refuse every operation with this key until it is enabled again."""
        return _key(service.set_enabled(app, name, False, _request_id(request)))

    @api.post("/v1/keys/{name}/enable", tags=["keys"])
    async def enable(name: str, request: Request, app: str = Caller) -> KeyResponse:
        """Re-enable a disabled key."""
        return _key(service.set_enabled(app, name, True, _request_id(request)))

    @api.post("/v1/keys/{name}/schedule-deletion", tags=["keys"])
    async def schedule_deletion(name: str, body: DeletionRequest, request: Request,
                                app: str = Caller) -> KeyResponse:
        """Disable the key now and delete it after ``pending_days`` (1-30)."""
        return _key(service.schedule_deletion(app, name, body.pending_days,
                                              _request_id(request)))

    @api.post("/v1/keys/{name}/cancel-deletion", tags=["keys"])
    async def cancel_deletion(name: str, request: Request, app: str = Caller) -> KeyResponse:
        """Cancel a scheduled deletion."""
        return _key(service.cancel_deletion(app, name, _request_id(request)))

    # -- attested key release -----------------------------------------------------------------

    @api.put("/v1/keys/{name}/policy", tags=["attestation"])
    async def put_policy(name: str, body: PolicyRequest, request: Request,
                         app: str = Caller) -> PolicyResponse:
        """Set the key's release policy (which TEE evidence may receive its data keys)."""
        policy = service.set_policy(app, name, AttestationPolicy.from_dict(body.policy),
                                    _request_id(request))
        return PolicyResponse(name=name, policy=policy.to_dict())

    @api.get("/v1/keys/{name}/policy", tags=["attestation"])
    async def get_policy(name: str, app: str = Caller) -> PolicyResponse:
        """The key's release policy (``null``: none, every attested unwrap is denied)."""
        policy = service.get_policy(app, name)
        return PolicyResponse(name=name, policy=None if policy is None else policy.to_dict())

    @api.post("/v1/keys/{name}/attest/nonce", tags=["attestation"])
    async def attest_nonce(name: str, app: str = Caller) -> NonceResponse:
        """A fresh single-use nonce for one attested unwrap of this key's data keys."""
        nonce, lifetime = service.attestation_nonce(app, name)
        return NonceResponse(nonce=_b64(nonce), expires_in=lifetime)

    @api.post("/v1/keys/{name}/attest/unwrap", tags=["attestation"])
    async def attest_unwrap(name: str, body: AttestedUnwrapRequest, request: Request,
                            app: str = Caller) -> AttestedUnwrapResponse:
        """Verify evidence, policy, nonce and binding; answer the data key as a JWE."""
        def run() -> tuple[int, str]:
            return service.attested_unwrap(
                app, name, nonce=_b64decode(body.nonce, "nonce"),
                tee=body.tee, quote=_b64decode(body.evidence, "evidence"),
                public_key=_b64decode(body.public_key, "public_key"),
                wrapped=_b64decode(body.wrapped, "wrapped"), collateral=body.collateral,
                request_id=_request_id(request))
        # DCAP verification takes milliseconds of CPU: keep it off the event loop.
        version, token = await anyio.to_thread.run_sync(run)
        return AttestedUnwrapResponse(version=version, jwe=token)

    # -- Vault Transit ----------------------------------------------------------------------

    def _transit_key(view: KeyView) -> dict[str, Any]:
        return {"name": view.name, "type": "aes256-gcm96", "latest_version": view.version,
                "min_decryption_version": view.min_decryption_version,
                "min_encryption_version": 0, "deletion_allowed": False, "derived": False,
                "exportable": False, "supports_encryption": True,
                "supports_decryption": True, "supports_derivation": False,
                "keys": {str(v): 0 for v in range(1, view.version + 1)}}

    @api.post("/v1/transit/keys/{name}", tags=["vault transit"], status_code=204)
    async def transit_create(name: str, request: Request, app: str = Caller) -> Response:
        """Create a key (Vault answers 204)."""
        service.create_key(app, name, _request_id(request))
        return Response(status_code=204)

    @api.get("/v1/transit/keys/{name}", tags=["vault transit"])
    async def transit_read(name: str, request: Request, app: str = Caller) -> dict[str, Any]:
        """A key's Vault description."""
        return _vault(request, _transit_key(service.describe_key(app, name)))

    @api.post("/v1/transit/keys/{name}/rotate", tags=["vault transit"])
    async def transit_rotate(name: str, request: Request, app: str = Caller) -> dict[str, Any]:
        """Rotate the key; answers with its new description."""
        return _vault(request, _transit_key(service.rotate(app, name, _request_id(request))))

    @api.post("/v1/transit/encrypt/{name}", tags=["vault transit"])
    async def transit_encrypt(name: str, body: TransitEncryptRequest, request: Request,
                              app: str = Caller) -> dict[str, Any]:
        """Encrypt base64 ``plaintext``; answers ``vault:vN:...``."""
        _transit_supported(body)
        if body.key_version not in (None, 0):
            current = service.describe_key(app, name).version
            if body.key_version != current:
                raise UsageError("key_version: only the latest version encrypts")
        ciphertext, version = service.transit_encrypt(
            app, name, _b64decode(body.plaintext, "plaintext"), _request_id(request))
        return _vault(request, {"ciphertext": ciphertext, "key_version": version})

    @api.post("/v1/transit/decrypt/{name}", tags=["vault transit"])
    async def transit_decrypt(name: str, body: TransitCiphertextRequest, request: Request,
                              app: str = Caller) -> dict[str, Any]:
        """Decrypt a ``vault:vN:...`` ciphertext; answers base64 ``plaintext``."""
        _transit_supported(body)
        plaintext = service.transit_decrypt(app, name, body.ciphertext, _request_id(request))
        return _vault(request, {"plaintext": _b64(plaintext)})

    @api.post("/v1/transit/rewrap/{name}", tags=["vault transit"])
    async def transit_rewrap(name: str, body: TransitCiphertextRequest, request: Request,
                             app: str = Caller) -> dict[str, Any]:
        """Re-encrypt a ciphertext under the latest version."""
        _transit_supported(body)
        ciphertext, version = service.transit_rewrap(app, name, body.ciphertext,
                                                     _request_id(request))
        return _vault(request, {"ciphertext": ciphertext, "key_version": version})

    @api.post("/v1/transit/datakey/{kind}/{name}", tags=["vault transit"])
    async def transit_datakey(kind: Literal["plaintext", "wrapped"], name: str,
                              request: Request, body: TransitDataKeyRequest | None = None,
                              app: str = Caller) -> dict[str, Any]:
        """A fresh data key: its ciphertext, and for ``plaintext`` also the key (base64)."""
        body = body or TransitDataKeyRequest()
        _transit_supported(body)
        data_key, ciphertext, version = service.transit_datakey(app, name, body.bits,
                                                                _request_id(request))
        data: dict[str, Any] = {"ciphertext": ciphertext, "key_version": version}
        if kind == "plaintext":
            data["plaintext"] = _b64(data_key)
        return _vault(request, data)

    return _Limits(api, max_body, _lean_routes(service) if lean else None)


# -- the lean route of the hot endpoints --------------------------------------------------------

_HOT = re.compile(r"/v1/keys/([^/]+)/(unwrap|rewrap|datakey/plaintext|datakey/wrapped)")
_JSON_HEADERS = [(b"content-type", b"application/json")]
_log = logging.getLogger("cipherspark.kms.server")


def _dumps(content: dict[str, Any]) -> bytes:
    # Byte for byte what FastAPI's JSONResponse renders.
    return json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None,
                      separators=(",", ":")).encode("utf-8")


def _json_content_type(value: str | None) -> bool:
    # FastAPI parses a body as JSON when it has no content type or an application/(*+)json one.
    if value is None:
        return True
    main = value.split(";", 1)[0].strip().lower()
    return main == "application/json" or (main.startswith("application/")
                                          and main.endswith("+json"))


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
    if not isinstance(value, str) or len(value) > _MAX_WRAPPED:
        return None
    return value


def _lean_routes(service: KeyService) -> FastPath:
    """Unwrap, rewrap and data-key generation without FastAPI's per-request machinery.

    These are what every executor calls, so they get a direct route: match the path, take the
    credentials from the in-memory cache of verified ones, parse the one JSON field, call the
    service, answer with the same JSON bytes and error shapes as the FastAPI routes. Anything off
    that happy path (credentials not verified yet or missing, a body FastAPI would reject or
    parse differently) returns ``False`` and goes through FastAPI, which stays the reference: the
    OpenAPI document, validation messages and the scrypt check in a worker thread. Authorisation
    is not cached: the key's owner and state are read from storage on every call, as there.
    """

    async def respond(send: Send, request_id: str, status: int,
                      content: dict[str, Any]) -> None:
        body = _dumps(content)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-length", str(len(body)).encode()), *_JSON_HEADERS,
                                (b"x-request-id", request_id.encode())]})
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
        app = service.cached_app(app_id, api_key)
        if app is None:
            return False
        name, action = match.group(1), match.group(2)
        try:
            if action in ("unwrap", "rewrap"):
                field = _wrapped_field(body, content_type)
                if field is None:
                    return False
                wrapped = _b64decode(field, "wrapped")
                if action == "unwrap":
                    version, plaintext = service.unwrap(app, name, wrapped, request_id)
                    content: dict[str, Any] = {"version": version, "plaintext": _b64(plaintext)}
                else:
                    version, rewrapped = service.rewrap(app, name, wrapped, request_id)
                    content = {"version": version, "wrapped": _b64(rewrapped)}
            else:
                with_plaintext = action == "datakey/plaintext"
                version, data_key, wrapped = service.generate_data_key(
                    app, name, request_id, with_plaintext=with_plaintext)
                content = {"key_id": name, "version": version}
                if data_key is not None:
                    content["plaintext"] = _b64(data_key)
                content["wrapped"] = _b64(wrapped)
        except CipherSparkError as exc:
            status, error = _service_error(path, exc)
            await respond(send, request_id, status, error)
            return True
        except Exception:
            _log.exception("request %s failed", request_id)
            await respond(send, request_id, 500, _error_content(
                path, "internal", "the KMS failed to complete the request"))
            return True
        await respond(send, request_id, 200, content)
        return True

    return fast
