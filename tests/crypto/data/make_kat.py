"""Regenerate ``kat_v1.json``, the known-answer vectors of container format version 1.

Run from the repository root (needs ``cryptography`` and ``tink``)::

    .venv/bin/python tests/crypto/data/make_kat.py

The vectors are built here from ``docs/format.md`` alone, with the ``cryptography`` primitives
(HKDF-SHA256 and AES-256-GCM) and ``struct``, deliberately without importing cipherspark: the
header is packed by hand and the body is segmented by this script's own loop, so the vector is an
independent second implementation of the format. The data key, salt and nonce prefix are fixed
instead of random. Before anything is written, Tink decrypts every body (with the header bytes as
associated data) and must return the plaintext, so the file holds only bytes Tink accepts.
The output is deterministic: running the script again reproduces the file byte for byte.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

OUTPUT = Path(__file__).with_name("kat_v1.json")
MAGIC = b"\x89CSPK\r\n\x1a"


def fixed_bytes(label: str, size: int) -> bytes:
    """Deterministic pseudo-random bytes: SHA-256 in counter mode over ``label``."""
    out = b""
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"cipherspark kat v1/{label}/{counter}".encode()).digest()
        counter += 1
    return out[:size]


def encode_header(key_id: str, wrapped_key: bytes, segment_size: int, content_type: str) -> bytes:
    """The header of docs/format.md, packed field by field."""
    variable = b""
    for part in (key_id.encode("utf-8"), wrapped_key, content_type.encode("ascii")):
        variable += struct.pack(">H", len(part)) + part
    length = 8 + 1 + 1 + 2 + 4 + len(variable)
    return MAGIC + struct.pack(">BBHI", 1, 1, length, segment_size) + variable


def encrypt_body(key: bytes, aad: bytes, salt: bytes, prefix: bytes, segment_size: int,
                 plaintext: bytes) -> bytes:
    """Tink AES256_GCM_HKDF streaming ciphertext with a chosen salt and nonce prefix."""
    segment_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=aad).derive(key)
    aead = AESGCM(segment_key)
    first, later = segment_size - 56, segment_size - 16
    # Split the plaintext: segment 0 holds `first` bytes, the others `later`; the last segment
    # holds the rest, which is 1..capacity bytes (empty only if it is the only segment).
    pieces = [plaintext[:first]]
    rest = plaintext[first:]
    while rest:
        pieces.append(rest[:later])
        rest = rest[later:]
    body = bytes([40]) + salt + prefix
    for index, piece in enumerate(pieces):
        last = index == len(pieces) - 1
        nonce = prefix + struct.pack(">IB", index, 1 if last else 0)
        body += aead.encrypt(nonce, piece, None)
    return body


def tink_decrypt(key: bytes, segment_size: int, body: bytes, aad: bytes) -> bytes:
    """Decrypt ``body`` with Tink, the reference implementation."""
    from tink import cleartext_keyset_handle, streaming_aead
    from tink.proto import aes_gcm_hkdf_streaming_pb2, common_pb2, tink_pb2

    streaming_aead.register()
    params = aes_gcm_hkdf_streaming_pb2.AesGcmHkdfStreamingParams(
        ciphertext_segment_size=segment_size, derived_key_size=32,
        hkdf_hash_type=common_pb2.SHA256)
    proto_key = aes_gcm_hkdf_streaming_pb2.AesGcmHkdfStreamingKey(
        version=0, key_value=key, params=params)
    keyset = tink_pb2.Keyset(primary_key_id=1, key=[tink_pb2.Keyset.Key(
        key_data=tink_pb2.KeyData(
            type_url="type.googleapis.com/google.crypto.tink.AesGcmHkdfStreamingKey",
            value=proto_key.SerializeToString(),
            key_material_type=tink_pb2.KeyData.SYMMETRIC),
        status=tink_pb2.ENABLED, key_id=1, output_prefix_type=tink_pb2.RAW)])
    primitive = cleartext_keyset_handle.from_keyset(keyset).primitive(
        streaming_aead.StreamingAead)
    with primitive.new_decrypting_stream(io.BytesIO(body), aad) as stream:
        return stream.read()


def csv_text(rows: int) -> bytes:
    lines = ["id,name,job,age"]
    lines += [f"{i},person-{i:04d},{['Developer', 'Tester', 'Manager'][i % 3]},{20 + i % 45}"
              for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


# (name, segment size, key id, content type, plaintext). With S = 100 the first segment holds
# 44 plaintext bytes and the others 84.
SPECS = [
    ("csv-4-segments", 100, "kat-key", "text/csv; header=present", csv_text(9)),
    ("exact-2-segments", 100, "kat-key", "application/octet-stream",
     fixed_bytes("plaintext-exact", 44 + 84)),
    ("empty", 57, "k", "", b""),
    ("unicode-key-id-1-segment", 4096, "clé-primaire-ü", "text/csv; header=absent",
     fixed_bytes("plaintext-short", 1000)),
]


def build() -> dict[str, object]:
    vectors = []
    for name, segment_size, key_id, content_type, plaintext in SPECS:
        key = fixed_bytes(f"{name}/data-key", 32)
        salt = fixed_bytes(f"{name}/salt", 32)
        prefix = fixed_bytes(f"{name}/nonce-prefix", 7)
        # Shaped like the local KMS's wrapping (01 || nonce || ciphertext+tag), but opaque here.
        wrapped_key = b"\x01" + fixed_bytes(f"{name}/wrapped-key", 60)
        header = encode_header(key_id, wrapped_key, segment_size, content_type)
        body = encrypt_body(key, header, salt, prefix, segment_size, plaintext)
        if tink_decrypt(key, segment_size, body, header) != plaintext:
            raise SystemExit(f"Tink does not decrypt vector {name!r} to its plaintext")
        vectors.append({
            "name": name,
            "data_key": key.hex(),
            "salt": salt.hex(),
            "nonce_prefix": prefix.hex(),
            "key_id": key_id,
            "wrapped_key": wrapped_key.hex(),
            "segment_size": segment_size,
            "content_type": content_type,
            "plaintext": plaintext.hex(),
            "header": header.hex(),
            "container": (header + body).hex(),
        })
    return {
        "description": "cipherspark container format v1 known-answer vectors; "
                       "produced by make_kat.py, verified with Tink before saving",
        "format_version": 1,
        "vectors": vectors,
    }


def main() -> None:
    OUTPUT.write_text(json.dumps(build(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
