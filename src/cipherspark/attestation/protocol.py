"""The attested key-release protocol's cryptography, shared by the worker and the KMS.

1. The worker asks the KMS for a nonce (single use, short-lived).
2. It makes an ephemeral P-256 key pair and sets
   ``report_data = SHA-512(nonce || public key)`` (the public key as an uncompressed SEC1 point).
3. It sends the evidence, the public key and the wrapped data key.
4. The KMS verifies evidence, policy, nonce and binding, and answers the data key as a compact
   JWE (``ECDH-ES+A256KW``, ``A256GCM``) to the ephemeral key: only that process can open it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwcrypto import jwe, jwk  # type: ignore[import-untyped]
from jwcrypto.common import JWException  # type: ignore[import-untyped]

from cipherspark.errors import AttestationError

__all__ = [
    "JWE_ALG",
    "JWE_ENC",
    "EphemeralKey",
    "bind",
    "check_binding",
    "seal_to",
]

JWE_ALG = "ECDH-ES+A256KW"
JWE_ENC = "A256GCM"
_PUBLIC_KEY_BYTES = 65


def bind(nonce: bytes, public_key: bytes) -> bytes:
    """The 64-byte report data that binds evidence to ``nonce`` and ``public_key``."""
    return hashlib.sha512(nonce + public_key).digest()


def check_binding(report_data: bytes, nonce: bytes, public_key: bytes) -> None:
    """Raise ``AttestationError(binding)`` unless ``report_data`` binds nonce and key."""
    if not hmac.compare_digest(report_data, bind(nonce, public_key)):
        raise AttestationError("the evidence is not bound to this nonce and public key", "binding")


def _public_key(public_key: bytes) -> ec.EllipticCurvePublicKey:
    if len(public_key) != _PUBLIC_KEY_BYTES:
        raise AttestationError(
            "the ephemeral public key must be an uncompressed P-256 point", "binding"
        )
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public_key)
    except ValueError as exc:
        raise AttestationError("the ephemeral public key is not a P-256 point", "binding") from exc


def seal_to(public_key: bytes, plaintext: bytes) -> str:
    """``plaintext`` as a compact JWE that only the holder of ``public_key``'s private key opens."""
    recipient = jwk.JWK.from_pyca(_public_key(public_key))
    token = jwe.JWE(plaintext, protected=json.dumps({"alg": JWE_ALG, "enc": JWE_ENC}))
    token.add_recipient(recipient)
    return str(token.serialize(compact=True))


@dataclass(frozen=True)
class EphemeralKey:
    """A one-request P-256 key pair; the private half never leaves this process's memory."""

    private: ec.EllipticCurvePrivateKey = field(repr=False)

    @classmethod
    def generate(cls) -> EphemeralKey:
        """A fresh key pair."""
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @property
    def public_bytes(self) -> bytes:
        """The public key as an uncompressed SEC1 point (65 bytes)."""
        return self.private.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )

    def open(self, token: str) -> bytes:
        """Decrypt a compact JWE sealed to this key (only ``ECDH-ES+A256KW`` / ``A256GCM``)."""
        try:
            message = jwe.JWE()
            message.allowed_algs = [JWE_ALG, JWE_ENC]
            message.deserialize(token, key=jwk.JWK.from_pyca(self.private))
            return bytes(message.payload)
        except (JWException, ValueError, TypeError, KeyError) as exc:
            raise AttestationError(
                "the KMS answer does not open with this ephemeral key", "signature"
            ) from exc
