"""Regenerate ``invalid_v1.json``: containers a version 1 reader must refuse, and how.

Run from the repository root (needs ``cryptography`` and ``tink``)::

    .venv/bin/python docs/vectors/container-v1/make_invalid.py [OUTPUT_DIR]

Like ``make_kat.py`` (whose helpers it uses) this does not import cipherspark: every vector is
derived from ``docs/format.md`` alone. Most are one change to the valid vector ``csv-4-segments``
of ``kat_v1.json`` (same data key, salt and nonce prefix; four segments holding 44, 84, 84 and
32 plaintext bytes), so each names the one thing a reader must notice. The vectors that break a
header rule are instead *correctly encrypted* under the offending header, so that only the rule
(not a failing tag) can refuse them; Tink, which knows nothing of the header, accepts their
bodies, which the file records.

Before writing, every expectation about Tink is checked: Tink must refuse each body the file says
it refuses, and accept the others it names. The output is deterministic.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# The shared helpers live beside this script (its folder is sys.path[0] when run as a script).
from make_kat import (
    BODY_HEADER_SIZE,
    KATS,
    body_header,
    encrypt_segments,
    fixed_bytes,
    output_dir,
    pack_header,
    split_plaintext,
    tink_decrypt,
    tink_rejects,
    write_json,
)

OUTPUT_NAME = "invalid_v1.json"

# The base: exactly the valid vector "csv-4-segments" of kat_v1.json.
BASE = "csv-4-segments"
_base = KATS[BASE]
S = _base.segment_size
KEY_ID = _base.key_id
CONTENT_TYPE = _base.content_type
PLAINTEXT = _base.plaintext
KEY = _base.key
SALT = _base.salt
PREFIX = _base.prefix
WRAPPED = _base.wrapped_key
HEADER = _base.header
PIECES = split_plaintext(S, PLAINTEXT)
SEGMENTS = encrypt_segments(KEY, HEADER, SALT, PREFIX, PIECES)
BODY_HEADER = body_header(SALT, PREFIX)
CONTAINER = HEADER + BODY_HEADER + b"".join(SEGMENTS)
assert CONTAINER == HEADER + _base.body
assert [len(p) for p in PIECES] == [44, 84, 84, 32]


@dataclass
class Vector:
    name: str
    description: str
    container: bytes
    error: str  # the cipherspark error class a reader raises
    key: bytes = KEY
    # What Tink says of the body (container[header_length:], aad = container[:header_length],
    # segment size tink_segment_size): "invalid" (it raises), "valid" (it returns the base
    # plaintext), "prefix" (it returns the first tink_prefix bytes of the base plaintext and
    # stops without an error), or None when Tink does not apply (the header does not parse, or
    # the rule broken is the container's own, not Tink's).
    tink: str | None = None
    tink_segment_size: int = S
    tink_prefix: int | None = None
    header_length: int = len(HEADER)
    base: str | None = BASE
    plaintext: bytes = PLAINTEXT  # the base's plaintext, what Tink's verdicts refer to

    @property
    def stage(self) -> str:
        # Header rules are checked before any key is used; everything else is authentication.
        return "body" if self.error == "IntegrityError" else "header"


def rebuild(segments: Sequence[bytes]) -> bytes:
    """The base header and body header followed by ``segments``."""
    return HEADER + BODY_HEADER + b"".join(segments)


def xor_at(data: bytes, offset: int, mask: int = 0x01) -> bytes:
    buf = bytearray(data)
    buf[offset] ^= mask
    return bytes(buf)


def with_fixed_field(fmt: str, offset: int, value: int) -> bytes:
    """The base container with one fixed header field (at ``offset``) replaced."""
    return CONTAINER[:offset] + struct.pack(fmt, value) + CONTAINER[offset + struct.calcsize(fmt) :]


def properly_encrypted(header: bytes, segment_size: int = S) -> bytes:
    """The base plaintext correctly encrypted with ``header`` as associated data."""
    pieces = split_plaintext(segment_size, PLAINTEXT)
    return header + BODY_HEADER + b"".join(encrypt_segments(KEY, header, SALT, PREFIX, pieces))


def segment_start(index: int) -> int:
    """Offset of segment ``index`` in the container (docs/format.md, "Segment sizes")."""
    return len(HEADER) + (BODY_HEADER_SIZE if index == 0 else index * S)


def body_vectors() -> list[Vector]:
    twin_salt = fixed_bytes("invalid/twin-salt", 32)
    twin = encrypt_segments(KEY, HEADER, twin_salt, PREFIX, PIECES)
    unflagged = encrypt_segments(KEY, HEADER, SALT, PREFIX, PIECES, [False] * 4)
    early = encrypt_segments(KEY, HEADER, SALT, PREFIX, PIECES, [False, True, False, True])
    seg = SEGMENTS
    full = KATS["exact-2-segments"]
    assert len(full.body) % S == 0  # its final segment is exactly S bytes
    last_kept = 8  # bytes of the last segment left by a cut inside its tag
    return [
        Vector(
            "tag-flipped-segment-0",
            "last tag byte of segment 0 XOR 0x01",
            xor_at(CONTAINER, segment_start(1) - 1),
            "IntegrityError",
            tink="invalid",
        ),
        Vector(
            "tag-flipped-last-segment",
            "last byte of the file (the final tag) XOR 0x01",
            xor_at(CONTAINER, len(CONTAINER) - 1),
            "IntegrityError",
            tink="invalid",
        ),
        Vector(
            "ciphertext-flipped-segment-2",
            "first ciphertext byte of segment 2 XOR 0x80",
            xor_at(CONTAINER, segment_start(2), 0x80),
            "IntegrityError",
            tink="invalid",
        ),
        Vector(
            "truncated-at-segment-boundary",
            "segment 3 removed: the stream ends after segment 2, which was encrypted as not last",
            rebuild(seg[:3]),
            "IntegrityError",
            tink="invalid",
        ),
        Vector(
            "truncated-to-first-segment",
            "only segment 0 kept (encrypted as not last)",
            rebuild(seg[:1]),
            "IntegrityError",
            tink="invalid",
        ),
        Vector(
            "truncated-to-body-header",
            "the body is its 40-byte body header only (shorter than 56 bytes)",
            rebuild([]),
            "IntegrityError",
            tink="invalid",
        ),
        Vector(
            "truncated-inside-body-header",
            "the file ends 20 bytes into the body header",
            CONTAINER[: len(HEADER) + 20],
            "IntegrityError",
            tink="invalid",
        ),
        Vector(
            "no-body",
            "a valid header and nothing after it",
            HEADER,
            "IntegrityError",
            tink="invalid",
        ),
        Vector(
            "truncated-inside-last-tag",
            f"the last segment cut to {last_kept} bytes (shorter than a tag)",
            rebuild([*seg[:3], seg[3][:last_kept]]),
            "IntegrityError",
            tink="invalid",
        ),
        Vector(
            "truncated-by-one-byte",
            "the final byte removed",
            CONTAINER[:-1],
            "IntegrityError",
            tink="invalid",
        ),
        Vector(
            "segments-reordered-1-2",
            "segments 1 and 2 exchanged",
            rebuild([seg[0], seg[2], seg[1], seg[3]]),
            "IntegrityError",
            tink="invalid",
        ),
        Vector(
            "segments-reordered-2-3",
            "segments 2 and 3 (the last) exchanged",
            rebuild([seg[0], seg[1], seg[3], seg[2]]),
            "IntegrityError",
            tink="invalid",
        ),
        Vector(
            "segment-duplicated",
            "segment 1 repeated (0, 1, 1, 2, 3)",
            rebuild([seg[0], seg[1], seg[1], seg[2], seg[3]]),
            "IntegrityError",
            tink="invalid",
        ),
        Vector(
            "segment-dropped",
            "segment 1 removed (0, 2, 3)",
            rebuild([seg[0], seg[2], seg[3]]),
            "IntegrityError",
            tink="invalid",
        ),
        Vector(
            "last-segment-not-flagged",
            "the whole plaintext, but every segment, the final "
            "one included, encrypted with last flag 0",
            rebuild(unflagged),
            "IntegrityError",
            tink="invalid",
        ),
        # Tink ends the stream at the first full-size segment that authenticates as last and
        # ignores what follows; cipherspark insists that the flagged segment be the final one.
        Vector(
            "middle-segment-flagged-last",
            "segment 1 encrypted with last flag 1 (the final segment too)",
            rebuild(early),
            "IntegrityError",
            tink="prefix",
            tink_prefix=len(PIECES[0]) + len(PIECES[1]),
        ),
        Vector(
            "extended-by-last-segment",
            "a copy of the final segment appended",
            CONTAINER + seg[3],
            "IntegrityError",
            tink="invalid",
        ),
        Vector(
            "extended-by-one-byte",
            "one zero byte appended",
            CONTAINER + b"\x00",
            "IntegrityError",
            tink="invalid",
        ),
        # The same Tink behaviour, reachable by anyone who can append to a file: after a final
        # segment of full size Tink reads no further, so the extension goes unnoticed by it.
        Vector(
            "extended-after-full-last-segment",
            "exact-2-segments (whose final segment is exactly S bytes) with 16 zero bytes appended",
            full.header + full.body + bytes(16),
            "IntegrityError",
            key=full.key,
            tink="prefix",
            tink_prefix=len(full.plaintext),
            header_length=len(full.header),
            base=full.name,
            plaintext=full.plaintext,
        ),
        Vector(
            "segment-from-another-body",
            "segment 1 replaced by segment 1 of a body with the "
            "same key, header and plaintext but another salt",
            rebuild([seg[0], twin[1], seg[2], seg[3]]),
            "IntegrityError",
            tink="invalid",
        ),
        Vector(
            "body-header-length-byte",
            "first body byte 0x28 changed to 0x29",
            xor_at(CONTAINER, len(HEADER), 0x01),
            "IntegrityError",
            tink="invalid",
        ),
        Vector(
            "salt-edited",
            "first salt byte XOR 0x01",
            xor_at(CONTAINER, len(HEADER) + 1),
            "IntegrityError",
            tink="invalid",
        ),
        Vector(
            "nonce-prefix-edited",
            "last nonce-prefix byte XOR 0x01",
            xor_at(CONTAINER, len(HEADER) + BODY_HEADER_SIZE - 1),
            "IntegrityError",
            tink="invalid",
        ),
        Vector(
            "wrong-key-one-bit",
            "the unchanged container read with the data key's first bit flipped",
            CONTAINER,
            "IntegrityError",
            key=xor_at(KEY, 0),
            tink="invalid",
        ),
        Vector(
            "wrong-key-zero",
            "the unchanged container read with an all-zero data key",
            CONTAINER,
            "IntegrityError",
            key=bytes(32),
            tink="invalid",
        ),
        Vector(
            "wrong-key-of-another-vector",
            "the unchanged container read with the data key of kat_v1.json's exact-2-segments",
            CONTAINER,
            "IntegrityError",
            key=fixed_bytes("exact-2-segments/data-key", 32),
            tink="invalid",
        ),
    ]


def authenticated_header_edits() -> list[Vector]:
    """Edits that leave a well-formed header: refused only because the header is the AAD."""

    def edit(old: bytes, new: bytes) -> bytes:
        assert HEADER.count(old) == 1 and len(old) == len(new)
        return CONTAINER.replace(old, new, 1)

    return [
        Vector(
            "header-key-id-edited",
            "key id kat-key -> kat-kez (still valid UTF-8)",
            edit(b"kat-key", b"kat-kez"),
            "IntegrityError",
            tink="invalid",
        ),
        Vector(
            "header-wrapped-key-edited",
            "wrapped key byte 10 XOR 0x01",
            xor_at(CONTAINER, 16 + 2 + len(KEY_ID) + 2 + 10),
            "IntegrityError",
            tink="invalid",
        ),
        Vector(
            "header-content-type-edited",
            "content type header=present -> header=Present",
            edit(b"=present", b"=Present"),
            "IntegrityError",
            tink="invalid",
        ),
        Vector(
            "header-segment-size-101",
            "segment size 100 -> 101 (in range)",
            with_fixed_field(">I", 12, 101),
            "IntegrityError",
            tink="invalid",
            tink_segment_size=101,
        ),
        Vector(
            "header-segment-size-4096",
            "segment size 100 -> 4096 (in range)",
            with_fixed_field(">I", 12, 4096),
            "IntegrityError",
            tink="invalid",
            tink_segment_size=4096,
        ),
    ]


def malformed_headers() -> list[Vector]:
    """Headers that do not parse: refused before any key is asked for; Tink does not apply."""
    key_id_length_at = 16
    wrapped_length_at = 16 + 2 + len(KEY_ID)
    content_length_at = wrapped_length_at + 2 + len(WRAPPED)

    def field_length(offset: int, value: int) -> bytes:
        return CONTAINER[:offset] + struct.pack(">H", value) + CONTAINER[offset + 2 :]

    magic_prefix = CONTAINER[:4]
    return [
        Vector(
            "magic-first-byte",
            "magic byte 0 0x89 -> 0x88",
            xor_at(CONTAINER, 0),
            "NotEncryptedError",
        ),
        Vector(
            "magic-last-byte",
            "magic byte 7 0x1a -> 0x1b",
            xor_at(CONTAINER, 7),
            "NotEncryptedError",
        ),
        Vector("version-0", "version 1 -> 0", with_fixed_field(">B", 8, 0), "FormatError"),
        Vector("version-2", "version 1 -> 2", with_fixed_field(">B", 8, 2), "FormatError"),
        Vector("algorithm-0", "algorithm 1 -> 0", with_fixed_field(">B", 9, 0), "FormatError"),
        Vector("algorithm-2", "algorithm 1 -> 2", with_fixed_field(">B", 9, 2), "FormatError"),
        Vector(
            "header-length-plus-one",
            "header_length H -> H + 1 (a trailing byte)",
            with_fixed_field(">H", 10, len(HEADER) + 1),
            "FormatError",
        ),
        Vector(
            "header-length-minus-one",
            "header_length H -> H - 1 (content type runs past H)",
            with_fixed_field(">H", 10, len(HEADER) - 1),
            "FormatError",
        ),
        Vector(
            "header-length-15",
            "header_length 15, shorter than the fixed part",
            with_fixed_field(">H", 10, 15),
            "FormatError",
        ),
        Vector(
            "header-length-65535",
            "header_length 65535, past the end of the file",
            with_fixed_field(">H", 10, 0xFFFF),
            "FormatError",
        ),
        Vector(
            "key-id-length-past-header",
            "key id length 7 -> 65535",
            field_length(key_id_length_at, 0xFFFF),
            "FormatError",
        ),
        Vector(
            "wrapped-key-length-plus-one",
            "wrapped key length 61 -> 62",
            field_length(wrapped_length_at, len(WRAPPED) + 1),
            "FormatError",
        ),
        Vector(
            "content-type-length-minus-one",
            "content type length 24 -> 23 (the fields end before H)",
            field_length(content_length_at, len(CONTENT_TYPE) - 1),
            "FormatError",
        ),
        Vector(
            "truncated-inside-magic",
            "the first 4 bytes only (a prefix of the magic)",
            magic_prefix,
            "FormatError",
        ),
        Vector(
            "truncated-inside-fixed-fields",
            "the first 12 bytes only",
            CONTAINER[:12],
            "FormatError",
        ),
        Vector(
            "truncated-inside-variable-fields",
            "the header cut 5 bytes before H",
            CONTAINER[: len(HEADER) - 5],
            "FormatError",
        ),
        Vector("empty-file", "zero bytes", b"", "NotEncryptedError"),
        Vector(
            "not-a-container", "the base plaintext (CSV) itself", PLAINTEXT, "NotEncryptedError"
        ),
    ]


def header_rule_breaks() -> list[Vector]:
    """Well-framed headers breaking a value rule, with a body correctly encrypted under them.

    Tink accepts those bodies (it does not read the header), so the refusal is the rule's.
    """

    def rule(
        name: str,
        description: str,
        key_id: bytes = KEY_ID.encode(),
        wrapped: bytes = WRAPPED,
        content_type: bytes = CONTENT_TYPE.encode(),
        segment_size: int = S,
        tink: str | None = "valid",
    ) -> Vector:
        header = pack_header(key_id, wrapped, segment_size, content_type)
        body_size = segment_size if 57 <= segment_size else S  # S = 0 cannot segment anything
        return Vector(
            name,
            description,
            properly_encrypted(header, body_size),
            "FormatError",
            tink=tink,
            tink_segment_size=segment_size,
            header_length=len(header),
        )

    return [
        rule("key-id-empty", "key id of 0 bytes", key_id=b""),
        rule("key-id-256-bytes", "key id of 256 bytes", key_id=b"k" * 256),
        rule("key-id-not-utf8", "key id b'kat-\\xff' (invalid UTF-8)", key_id=b"kat-\xff"),
        rule(
            "key-id-lone-surrogate",
            "key id b'\\xed\\xa0\\x80' (an encoded surrogate, invalid UTF-8)",
            key_id=b"\xed\xa0\x80",
        ),
        rule("wrapped-key-empty", "wrapped key of 0 bytes", wrapped=b""),
        rule(
            "wrapped-key-4097-bytes",
            "wrapped key of 4097 bytes",
            wrapped=b"\x01" + fixed_bytes("invalid/long-wrapped-key", 4096),
        ),
        rule(
            "content-type-not-ascii",
            "content type with byte 0xe9",
            content_type=b"text/csv; charset=\xe9",
        ),
        rule(
            "content-type-256-bytes", "content type of 256 bytes", content_type=b"x/" + b"y" * 254
        ),
        # Out-of-range segment sizes: the container's own bounds. Tink refuses 56 as a
        # parameter and has no 64 MiB bound, so it has nothing to say about either.
        rule("segment-size-56", "segment size 56 (below 57)", segment_size=56, tink=None),
        rule(
            "segment-size-64mib-plus-1",
            "segment size 67108865 (above 64 MiB)",
            segment_size=(64 << 20) + 1,
            tink=None,
        ),
        rule(
            "segment-size-0",
            "segment size 0 (the body is the base body)",
            segment_size=0,
            tink=None,
        ),
    ]


def check_tink(vector: Vector) -> None:
    if vector.tink is None:
        return
    body = vector.container[vector.header_length :]
    aad = vector.container[: vector.header_length]
    if vector.tink == "invalid":
        ok = tink_rejects(vector.key, vector.tink_segment_size, body, aad)
    else:
        expected = vector.plaintext
        if vector.tink == "prefix":
            assert vector.tink_prefix is not None and vector.tink_prefix <= len(expected)
            expected = expected[: vector.tink_prefix]
        ok = tink_decrypt(vector.key, vector.tink_segment_size, body, aad) == expected
    if not ok:
        raise SystemExit(f"Tink does not find vector {vector.name!r} {vector.tink}")


def build() -> dict[str, object]:
    if tink_decrypt(KEY, S, CONTAINER[len(HEADER) :], HEADER) != PLAINTEXT:
        raise SystemExit("the base vector does not decrypt with Tink")
    groups: list[Callable[[], list[Vector]]] = [
        body_vectors,
        authenticated_header_edits,
        malformed_headers,
        header_rule_breaks,
    ]
    vectors = [v for group in groups for v in group()]
    names = [v.name for v in vectors]
    assert len(set(names)) == len(names), "vector names must be unique"
    out = []
    for vector in vectors:
        check_tink(vector)
        entry: dict[str, object] = {
            "name": vector.name,
            "description": vector.description,
            "base": vector.base,
            "data_key": vector.key.hex(),
            "container": vector.container.hex(),
            "stage": vector.stage,
            "error": vector.error,
        }
        tink: dict[str, object] | None = None
        if vector.tink is not None:
            tink = {
                "result": vector.tink,
                "header_length": vector.header_length,
                "segment_size": vector.tink_segment_size,
            }
            if vector.tink_prefix is not None:
                tink["plaintext_length"] = vector.tink_prefix
        entry["tink"] = tink
        out.append(entry)
    return {
        "description": "cipherspark container format v1 invalid vectors: every one must be "
        "refused with the named error and no plaintext other than the base "
        "vector's; produced by make_invalid.py, Tink's verdicts checked "
        "before saving",
        "format_version": 1,
        "vectors": out,
    }


def main() -> None:
    output = output_dir(sys.argv) / OUTPUT_NAME
    write_json(output, build())
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
