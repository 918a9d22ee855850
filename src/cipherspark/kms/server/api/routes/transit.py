"""Vault Transit compatibility (``/v1/transit``): keys, encrypt / decrypt / rewrap, data keys.

Answers are Vault's envelopes (``{"request_id": ..., "data": ...}``); errors are Vault-shaped
(see :mod:`cipherspark.kms.server.api.errors`). Clients authenticate with
``X-Vault-Token: APPID.APIKEY``.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Response

from cipherspark.errors import UsageError
from cipherspark.kms import _wire
from cipherspark.kms.server.api.deps import Caller, RequestId, Service, decode_field
from cipherspark.kms.server.api.models import (
    TransitBody,
    TransitCiphertextRequest,
    TransitDataKeyRequest,
    TransitEncryptRequest,
)
from cipherspark.kms.server.service import KeyView

__all__ = ["check_supported", "router"]

router = APIRouter(prefix="/v1/transit", tags=["vault transit"])


def _vault(request_id: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "lease_id": "",
        "renewable": False,
        "lease_duration": 0,
        "data": data,
        "wrap_info": None,
        "warnings": None,
        "auth": None,
    }


def _transit_key(view: KeyView) -> dict[str, Any]:
    return {
        "name": view.name,
        "type": "aes256-gcm96",
        "latest_version": view.version,
        "min_decryption_version": view.min_decryption_version,
        "min_encryption_version": 0,
        "deletion_allowed": False,
        "derived": False,
        "exportable": False,
        "supports_encryption": True,
        "supports_decryption": True,
        "supports_derivation": False,
        "keys": {str(v): 0 for v in range(1, view.version + 1)},
    }


def check_supported(body: TransitBody) -> None:
    """:class:`UsageError` for Transit features we do not implement (rather than ignore)."""
    if body.context is not None or body.nonce is not None:
        raise UsageError("derived and convergent Transit keys (context, nonce) are not supported")
    if body.batch_input is not None:
        raise UsageError("batch_input is not supported; send one item per request")


@router.post("/keys/{name}", status_code=204)
async def transit_create(
    name: str, service: Service, request_id: RequestId, who: Caller
) -> Response:
    """Create a key (Vault answers 204)."""
    service.create_key(who, name, request_id)
    return Response(status_code=204)


@router.get("/keys/{name}")
async def transit_read(
    name: str, service: Service, request_id: RequestId, who: Caller
) -> dict[str, Any]:
    """A key's Vault description."""
    return _vault(request_id, _transit_key(service.describe_key(who, name, request_id)))


@router.post("/keys/{name}/rotate")
async def transit_rotate(
    name: str, service: Service, request_id: RequestId, who: Caller
) -> dict[str, Any]:
    """Rotate the key; answers with its new description."""
    return _vault(request_id, _transit_key(service.rotate(who, name, request_id)))


@router.post("/encrypt/{name}")
async def transit_encrypt(
    name: str, body: TransitEncryptRequest, service: Service, request_id: RequestId, who: Caller
) -> dict[str, Any]:
    """Encrypt base64 ``plaintext``; answers ``vault:vN:...``."""
    check_supported(body)
    ciphertext, version = service.transit_encrypt(
        who,
        name,
        decode_field(body.plaintext, "plaintext"),
        request_id,
        key_version=body.key_version,
    )
    return _vault(request_id, {"ciphertext": ciphertext, "key_version": version})


@router.post("/decrypt/{name}")
async def transit_decrypt(
    name: str, body: TransitCiphertextRequest, service: Service, request_id: RequestId, who: Caller
) -> dict[str, Any]:
    """Decrypt a ``vault:vN:...`` ciphertext; answers base64 ``plaintext``."""
    check_supported(body)
    plaintext = service.transit_decrypt(who, name, body.ciphertext, request_id)
    return _vault(request_id, {"plaintext": _wire.b64encode(plaintext)})


@router.post("/rewrap/{name}")
async def transit_rewrap(
    name: str, body: TransitCiphertextRequest, service: Service, request_id: RequestId, who: Caller
) -> dict[str, Any]:
    """Re-encrypt a ciphertext under the latest version."""
    check_supported(body)
    ciphertext, version = service.transit_rewrap(who, name, body.ciphertext, request_id)
    return _vault(request_id, {"ciphertext": ciphertext, "key_version": version})


@router.post("/datakey/{kind}/{name}")
async def transit_datakey(
    kind: Literal["plaintext", "wrapped"],
    name: str,
    service: Service,
    request_id: RequestId,
    who: Caller,
    body: TransitDataKeyRequest | None = None,
) -> dict[str, Any]:
    """A fresh data key: its ciphertext, and for ``plaintext`` also the key (base64)."""
    body = body or TransitDataKeyRequest()
    check_supported(body)
    data_key, ciphertext, version = service.transit_datakey(
        who, name, body.bits, request_id, with_plaintext=kind == "plaintext"
    )
    data: dict[str, Any] = {"ciphertext": ciphertext, "key_version": version}
    if data_key is not None:
        data["plaintext"] = _wire.b64encode(data_key)
    return _vault(request_id, data)
