"""Regenerate ``kat_v1.json``, the valid known-answer vectors of container format version 1.

Run from the repository root (needs ``cryptography`` and ``tink``)::

    .venv/bin/python docs/vectors/container-v1/make_kat.py [OUTPUT_DIR]

``OUTPUT_DIR`` defaults to this script's folder. The vectors are built here from
``docs/format.md`` alone, with the ``cryptography`` primitives (HKDF-SHA256 and AES-256-GCM) and
``struct``, deliberately without importing cipherspark: the header is packed by hand and the body
is segmented by this script's own loop, so the vector is an independent second implementation of
the format. The data key, salt and nonce prefix are fixed instead of random. Before anything is
written, Tink decrypts every body (with the header bytes as associated data) and must return the
plaintext, so the file holds only bytes Tink accepts. The output is deterministic: running the
script again reproduces the file byte for byte.

The helpers (header packing, segmenting, per-segment encryption, Tink) are also used by
``make_invalid.py`` and ``../manifest-v1/make_manifest.py``, so that all vectors come from this
one independent implementation.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

OUTPUT_NAME = "kat_v1.json"
MAGIC = b"\x89CSPK\r\n\x1a"
BODY_HEADER_SIZE = 40
TAG_SIZE = 16


def fixed_bytes(label: str, size: int) -> bytes:
    """Deterministic pseudo-random bytes: SHA-256 in counter mode over ``label``."""
    out = b""
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"cipherspark kat v1/{label}/{counter}".encode()).digest()
        counter += 1
    return out[:size]


def pack_header(key_id: bytes, wrapped_key: bytes, segment_size: int, content_type: bytes, *,
                magic: bytes = MAGIC, version: int = 1, algorithm: int = 1,
                length: int | None = None) -> bytes:
    """A header with every field given as raw bytes, so that invalid vectors can break any rule.

    ``length`` defaults to the true header length.
    """
    variable = b"".join(struct.pack(">H", len(p)) + p for p in (key_id, wrapped_key, content_type))
    if length is None:
        length = 8 + 1 + 1 + 2 + 4 + len(variable)
    return magic + struct.pack(">BBHI", version, algorithm, length, segment_size) + variable


def encode_header(key_id: str, wrapped_key: bytes, segment_size: int, content_type: str) -> bytes:
    """The header of docs/format.md, packed field by field."""
    return pack_header(key_id.encode("utf-8"), wrapped_key, segment_size,
                       content_type.encode("ascii"))


def split_plaintext(segment_size: int, plaintext: bytes) -> list[bytes]:
    """The plaintext of each segment: segment 0 holds ``S - 56`` bytes, the others ``S - 16``.

    The last segment holds the rest, which is 1..capacity bytes (empty only if it is the only
    segment): a full segment is the last one when nothing follows it.
    """
    first, later = segment_size - BODY_HEADER_SIZE - TAG_SIZE, segment_size - TAG_SIZE
    pieces = [plaintext[:first]]
    rest = plaintext[first:]
    while rest:
        pieces.append(rest[:later])
        rest = rest[later:]
    return pieces


def body_header(salt: bytes, prefix: bytes) -> bytes:
    return bytes([BODY_HEADER_SIZE]) + salt + prefix


def encrypt_segments(key: bytes, aad: bytes, salt: bytes, prefix: bytes,
                     pieces: Sequence[bytes], last_flags: Sequence[bool] | None = None,
                     indices: Sequence[int] | None = None) -> list[bytes]:
    """Each piece encrypted as its own segment (ciphertext || tag).

    By default piece ``i`` is segment ``i`` and only the final piece carries the last-segment
    flag; invalid vectors override ``last_flags`` and ``indices`` to build what a broken or
    malicious encryptor would write.
    """
    segment_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=aad).derive(key)
    aead = AESGCM(segment_key)
    if last_flags is None:
        last_flags = [i == len(pieces) - 1 for i in range(len(pieces))]
    if indices is None:
        indices = range(len(pieces))
    return [aead.encrypt(prefix + struct.pack(">IB", index, 1 if last else 0), piece, None)
            for piece, last, index in zip(pieces, last_flags, indices, strict=True)]


def encrypt_body(key: bytes, aad: bytes, salt: bytes, prefix: bytes, segment_size: int,
                 plaintext: bytes) -> bytes:
    """Tink AES256_GCM_HKDF streaming ciphertext with a chosen salt and nonce prefix."""
    pieces = split_plaintext(segment_size, plaintext)
    return body_header(salt, prefix) + b"".join(
        encrypt_segments(key, aad, salt, prefix, pieces))


def tink_decrypt(key: bytes, segment_size: int, body: bytes, aad: bytes) -> bytes:
    """Decrypt ``body`` with Tink, the reference implementation (raises ``TinkError``)."""
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


def tink_rejects(key: bytes, segment_size: int, body: bytes, aad: bytes) -> bool:
    """True if Tink refuses ``body`` (it must never return plaintext for a modified one)."""
    from tink import core

    try:
        tink_decrypt(key, segment_size, body, aad)
    except core.TinkError:
        return True
    return False


def write_json(path: Path, document: object) -> None:
    """The vector files' one layout: 2-space indent, UTF-8, a final newline."""
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def output_dir(argv: Sequence[str]) -> Path:
    """The folder to write to: the first argument, else the calling script's folder."""
    if len(argv) > 2:
        raise SystemExit(f"usage: {argv[0]} [OUTPUT_DIR]")
    return Path(argv[1]) if len(argv) == 2 else Path(argv[0]).resolve().parent


def csv_text(rows: int) -> bytes:
    lines = ["id,name,job,age"]
    lines += [f"{i},person-{i:04d},{['Developer', 'Tester', 'Manager'][i % 3]},{20 + i % 45}"
              for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


# (name, segment size, key id, content type, plaintext, wrapped key size). With S = 100 the
# first segment holds 44 plaintext bytes and the others 84; with S = 57, 1 and 41.
SPECS = [
    ("csv-4-segments", 100, "kat-key", "text/csv; header=present", csv_text(9), 61),
    ("exact-2-segments", 100, "kat-key", "application/octet-stream",
     fixed_bytes("plaintext-exact", 44 + 84), 61),
    ("empty", 57, "k", "", b"", 61),
    ("unicode-key-id-1-segment", 4096, "clé-primaire-ü", "text/csv; header=absent",
     fixed_bytes("plaintext-short", 1000), 61),
    # The smallest segment size: segment 0 holds a single byte.
    ("min-segment-size-5-segments", 57, "kat-key", "application/octet-stream",
     fixed_bytes("plaintext-min-segment", 1 + 3 * 41 + 20), 61),
    # Every header field at its largest allowed value (255-byte key id and content type,
    # 4096-byte wrapped key, 64 MiB segments).
    ("header-fields-at-maximum", 64 << 20, "é" * 127 + "k", "x/" + "y" * 253,
     fixed_bytes("plaintext-maximum", 3000), 4096),
]


@dataclass(frozen=True)
class Kat:
    """One valid vector, as bytes."""

    name: str
    segment_size: int
    key_id: str
    content_type: str
    plaintext: bytes
    key: bytes
    salt: bytes
    prefix: bytes
    wrapped_key: bytes
    header: bytes
    body: bytes


def materialize(name: str, segment_size: int, key_id: str, content_type: str,
                plaintext: bytes, wrapped_size: int) -> Kat:
    """The vector of one ``SPECS`` row: keys, salt and nonce prefix derived from its name."""
    key = fixed_bytes(f"{name}/data-key", 32)
    salt = fixed_bytes(f"{name}/salt", 32)
    prefix = fixed_bytes(f"{name}/nonce-prefix", 7)
    # Shaped like the local KMS's wrapping (01 || nonce || ciphertext+tag), but opaque here.
    wrapped_key = b"\x01" + fixed_bytes(f"{name}/wrapped-key", wrapped_size - 1)
    header = encode_header(key_id, wrapped_key, segment_size, content_type)
    body = encrypt_body(key, header, salt, prefix, segment_size, plaintext)
    return Kat(name, segment_size, key_id, content_type, plaintext, key, salt, prefix,
               wrapped_key, header, body)


KATS = {spec[0]: materialize(*spec) for spec in SPECS}


def build() -> dict[str, object]:
    vectors = []
    for kat in KATS.values():
        if tink_decrypt(kat.key, kat.segment_size, kat.body, kat.header) != kat.plaintext:
            raise SystemExit(f"Tink does not decrypt vector {kat.name!r} to its plaintext")
        vectors.append({
            "name": kat.name,
            "data_key": kat.key.hex(),
            "salt": kat.salt.hex(),
            "nonce_prefix": kat.prefix.hex(),
            "key_id": kat.key_id,
            "wrapped_key": kat.wrapped_key.hex(),
            "segment_size": kat.segment_size,
            "content_type": kat.content_type,
            "plaintext": kat.plaintext.hex(),
            "header": kat.header.hex(),
            "container": (kat.header + kat.body).hex(),
        })
    return {
        "description": "cipherspark container format v1 known-answer vectors; "
                       "produced by make_kat.py, verified with Tink before saving",
        "format_version": 1,
        "vectors": vectors,
    }


def main() -> None:
    output = output_dir(sys.argv) / OUTPUT_NAME
    write_json(output, build())
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
