"""The container body is Tink's AES256_GCM_HKDF streaming AEAD: Tink is the oracle, both ways.

Also the known-answer vectors of ``docs/vectors/container-v1/kat_v1.json`` (produced by
``make_kat.py`` beside it, an independent implementation of docs/format.md checked against Tink).
"""

from __future__ import annotations

import io
import json
import random
import struct
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from tink import cleartext_keyset_handle, core, streaming_aead
from tink.proto import aes_gcm_hkdf_streaming_pb2, common_pb2, tink_pb2

from cipherspark.crypto import (
    CONTENT_TYPE_CSV_HEADER,
    ContainerFile,
    ContainerHeader,
    EncryptingWriter,
    decrypt_stream,
    read_header,
)
from cipherspark.crypto._streaming import BODY_HEADER_SIZE, TAG_SIZE, SegmentCipher, SegmentLayout
from cipherspark.errors import IntegrityError

streaming_aead.register()

KAT_FILE = Path(__file__).parents[2] / "docs" / "vectors" / "container-v1" / "kat_v1.json"
MIB = 1 << 20
SEGMENT_SIZES = [57, 64, 100, 4096, MIB]


class _Sink(io.BytesIO):
    """Tink closes the sink it writes to; keep the bytes readable afterwards."""

    def close(self) -> None:
        pass


@cache
def tink_primitive(key: bytes, segment_size: int) -> streaming_aead.StreamingAead:
    """A Tink StreamingAead for raw 32-byte ``key`` and ciphertext segment size."""
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
    return cleartext_keyset_handle.from_keyset(keyset).primitive(streaming_aead.StreamingAead)


def tink_encrypt(key: bytes, segment_size: int, plaintext: bytes, aad: bytes) -> bytes:
    sink = _Sink()
    stream = tink_primitive(key, segment_size).new_encrypting_stream(sink, aad)
    stream.write(plaintext)
    stream.close()
    return sink.getvalue()


def tink_decrypt(key: bytes, segment_size: int, body: bytes, aad: bytes) -> bytes:
    stream = tink_primitive(key, segment_size).new_decrypting_stream(io.BytesIO(body), aad)
    return stream.read()


def plaintext_lengths(segment_size: int) -> list[int]:
    """Lengths around every segment boundary for ``segment_size``, plus several segments."""
    layout = SegmentLayout(segment_size)
    first, later = layout.first_plaintext_size, layout.plaintext_size
    lengths = {0, 1, 2, first - 1, first, first + 1}
    for k in (1, 2, 3):
        boundary = first + k * later  # exactly k full segments after the first
        lengths |= {boundary - 1, boundary, boundary + 1}
    if segment_size <= 4096:
        lengths.add(first + 6 * later + later // 2)
    return sorted(n for n in lengths if n >= 0)


CASES = [(s, n) for s in SEGMENT_SIZES for n in plaintext_lengths(s)]
CASE_IDS = [f"S{s}-n{n}" for s, n in CASES]


def expected_segments(segment_size: int, n: int) -> int:
    layout = SegmentLayout(segment_size)
    if n <= layout.first_plaintext_size:
        return 1
    return 1 + -(-(n - layout.first_plaintext_size) // layout.plaintext_size)


def make_plaintext(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def make_header(segment_size: int) -> ContainerHeader:
    return ContainerHeader(key_id="interop-key", wrapped_key=b"\x01" + bytes(range(60)),
                           segment_size=segment_size, content_type=CONTENT_TYPE_CSV_HEADER)


def our_encrypt(header: ContainerHeader, key: bytes, plaintext: bytes) -> bytes:
    out = io.BytesIO()
    writer = EncryptingWriter(out, header, key)
    writer.write(plaintext)
    writer.close()
    return out.getvalue()


@pytest.fixture(scope="module")
def data_key() -> bytes:
    return random.Random(2024).randbytes(32)


@pytest.mark.parametrize(("segment_size", "n"), CASES, ids=CASE_IDS)
def test_tink_decrypts_our_body(segment_size: int, n: int, data_key: bytes) -> None:
    header = make_header(segment_size)
    header_bytes = header.encode()
    plaintext = make_plaintext(n, seed=n * 31 + segment_size)
    container = our_encrypt(header, data_key, plaintext)

    assert container[: len(header_bytes)] == header_bytes
    body = container[len(header_bytes) :]
    assert body[0] == BODY_HEADER_SIZE
    assert tink_decrypt(data_key, segment_size, body, header_bytes) == plaintext
    assert len(body) == BODY_HEADER_SIZE + n + TAG_SIZE * expected_segments(segment_size, n)


@pytest.mark.parametrize(("segment_size", "n"), CASES, ids=CASE_IDS)
def test_we_decrypt_tink_body(
    segment_size: int, n: int, data_key: bytes, tmp_path: Path
) -> None:
    header = make_header(segment_size)
    header_bytes = header.encode()
    plaintext = make_plaintext(n, seed=n * 17 + segment_size)
    container = header_bytes + tink_encrypt(data_key, segment_size, plaintext, header_bytes)

    seen: list[ContainerHeader] = []

    def key_for(parsed: ContainerHeader) -> bytes:
        seen.append(parsed)
        return data_key

    chunks = list(decrypt_stream(io.BytesIO(container), key_for))
    assert b"".join(chunks) == plaintext
    assert seen == [header]
    # One chunk per segment, each as large as the layout says.
    layout = header.layout
    count = expected_segments(segment_size, n)
    assert len(chunks) == count
    for index, chunk in enumerate(chunks):
        start = layout.plaintext_offset(index)
        assert chunk == plaintext[start : start + len(chunk)]
        if index < count - 1:
            expected = layout.first_plaintext_size if index == 0 else layout.plaintext_size
            assert len(chunk) == expected

    # Random access over the same bytes.
    path = tmp_path / "tink.cspk"
    path.write_bytes(container)
    container_file = ContainerFile(str(path), data_key)
    assert container_file.segment_count == count
    assert container_file.read_segments(0, count) == plaintext
    assert b"".join(container_file.iter_segments()) == plaintext


@pytest.mark.parametrize(("segment_size", "n"), CASES, ids=CASE_IDS)
def test_ciphertext_length_equals_tinks(segment_size: int, n: int, data_key: bytes) -> None:
    header = make_header(segment_size)
    header_bytes = header.encode()
    plaintext = bytes(n)
    ours = our_encrypt(header, data_key, plaintext)[len(header_bytes) :]
    tinks = tink_encrypt(data_key, segment_size, plaintext, header_bytes)
    assert len(ours) == len(tinks)
    layout = SegmentLayout(segment_size)
    assert layout.segment_count(len(tinks)) == expected_segments(segment_size, n)
    assert layout.plaintext_size_of(len(tinks)) == n


@pytest.mark.parametrize("segment_size", [64, 4096])
def test_chunked_writes_interoperate(segment_size: int, data_key: bytes) -> None:
    """Feeding the writer in odd pieces gives a body Tink reads; Tink's chunked output reads too."""
    header = make_header(segment_size)
    header_bytes = header.encode()
    plaintext = make_plaintext(5 * segment_size + 3, seed=segment_size)
    rng = random.Random(segment_size)

    out = io.BytesIO()
    writer = EncryptingWriter(out, header, data_key)
    pos = 0
    while pos < len(plaintext):
        step = rng.randint(0, segment_size + 5)
        assert writer.write(memoryview(plaintext)[pos : pos + step]) == len(
            plaintext[pos : pos + step])
        pos += step
    writer.close()
    body = out.getvalue()[len(header_bytes) :]
    assert tink_decrypt(data_key, segment_size, body, header_bytes) == plaintext

    sink = _Sink()
    stream = tink_primitive(data_key, segment_size).new_encrypting_stream(sink, header_bytes)
    pos = 0
    while pos < len(plaintext):
        step = rng.randint(1, segment_size + 5)
        stream.write(plaintext[pos : pos + step])
        pos += step
    stream.close()
    container = header_bytes + sink.getvalue()
    assert b"".join(decrypt_stream(io.BytesIO(container), lambda _h: data_key)) == plaintext


def test_header_is_the_associated_data(data_key: bytes) -> None:
    """Tink fails our body under other associated data; we fail Tink's under another header."""
    header = make_header(100)
    plaintext = make_plaintext(300, seed=1)
    container = our_encrypt(header, data_key, plaintext)
    body = container[len(header.encode()) :]
    for aad in (b"", header.encode()[:-1], make_header(101).encode()):
        with pytest.raises(core.TinkError):
            tink_decrypt(data_key, 100, body, aad)

    other = ContainerHeader("interop-key", header.wrapped_key, 100, "text/plain")
    tink_body = tink_encrypt(data_key, 100, plaintext, header.encode())
    with pytest.raises(IntegrityError):
        list(decrypt_stream(io.BytesIO(other.encode() + tink_body), lambda _h: data_key))


def test_tink_rejects_wrong_key(data_key: bytes) -> None:
    header = make_header(64)
    container = our_encrypt(header, data_key, b"secret data" * 10)
    wrong = bytes(b ^ 1 for b in data_key)
    with pytest.raises(core.TinkError):
        tink_decrypt(wrong, 64, container[len(header.encode()) :], header.encode())


# -- known-answer vectors ----------------------------------------------------------------------

def _load_vectors() -> list[dict[str, Any]]:
    doc = json.loads(KAT_FILE.read_text(encoding="utf-8"))
    assert doc["format_version"] == 1
    return list(doc["vectors"])


VECTORS = _load_vectors()
VECTOR_IDS = [v["name"] for v in VECTORS]


def _reference_body(cipher: SegmentCipher, segment_size: int, plaintext: bytes) -> bytes:
    """Segment ``plaintext`` by the rules of docs/format.md (not by EncryptingWriter)."""
    layout = SegmentLayout(segment_size)
    pieces = [plaintext[: layout.first_plaintext_size]]
    rest = plaintext[layout.first_plaintext_size :]
    while rest:
        pieces.append(rest[: layout.plaintext_size])
        rest = rest[layout.plaintext_size :]
    return cipher.body_header + b"".join(
        cipher.encrypt(i, piece, last=i == len(pieces) - 1) for i, piece in enumerate(pieces)
    )


def test_kat_file_covers_the_interesting_shapes() -> None:
    shapes = {(v["segment_size"], len(bytes.fromhex(v["plaintext"]))) for v in VECTORS}
    assert (57, 0) in shapes  # empty plaintext, smallest segment size
    assert (100, 44 + 84) in shapes  # a last segment that is exactly full
    counts = [expected_segments(s, n) for s, n in shapes]
    assert max(counts) >= 4


@pytest.mark.parametrize("vector", VECTORS, ids=VECTOR_IDS)
def test_kat_header_bytes(vector: dict[str, Any]) -> None:
    header = ContainerHeader(vector["key_id"], bytes.fromhex(vector["wrapped_key"]),
                             vector["segment_size"], vector["content_type"])
    header_bytes = bytes.fromhex(vector["header"])
    assert header.encode() == header_bytes
    assert ContainerHeader.decode(header_bytes) == header
    container = bytes.fromhex(vector["container"])
    stream = io.BytesIO(container)
    assert read_header(stream) == (header, header_bytes)
    assert stream.tell() == len(header_bytes)
    # The fixed part, spelled out.
    assert header_bytes[:8] == b"\x89CSPK\r\n\x1a"
    assert struct.unpack(">BBHI", header_bytes[8:16]) == (
        1, 1, len(header_bytes), vector["segment_size"])


@pytest.mark.parametrize("vector", VECTORS, ids=VECTOR_IDS)
def test_kat_rebuilt_byte_for_byte(vector: dict[str, Any]) -> None:
    key = bytes.fromhex(vector["data_key"])
    header_bytes = bytes.fromhex(vector["header"])
    cipher = SegmentCipher(key, header_bytes, bytes.fromhex(vector["salt"]),
                           bytes.fromhex(vector["nonce_prefix"]))
    body = _reference_body(cipher, vector["segment_size"], bytes.fromhex(vector["plaintext"]))
    assert header_bytes + body == bytes.fromhex(vector["container"])


@pytest.mark.parametrize("vector", VECTORS, ids=VECTOR_IDS)
def test_kat_encrypting_writer_byte_for_byte(
    vector: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the salt and nonce prefix pinned, EncryptingWriter writes exactly the vector."""
    salt, prefix = bytes.fromhex(vector["salt"]), bytes.fromhex(vector["nonce_prefix"])

    def pinned(cls: type[SegmentCipher], data_key: bytes, aad: bytes) -> SegmentCipher:
        return cls(data_key, aad, salt, prefix)

    monkeypatch.setattr(SegmentCipher, "new", classmethod(pinned))
    header = ContainerHeader(vector["key_id"], bytes.fromhex(vector["wrapped_key"]),
                             vector["segment_size"], vector["content_type"])
    plaintext = bytes.fromhex(vector["plaintext"])
    for step in (len(plaintext) or 1, 1, 7):
        out = io.BytesIO()
        writer = EncryptingWriter(out, header, bytes.fromhex(vector["data_key"]))
        for pos in range(0, len(plaintext), step):
            writer.write(plaintext[pos : pos + step])
        writer.close()
        assert out.getvalue() == bytes.fromhex(vector["container"]), f"write step {step}"


@pytest.mark.parametrize("vector", VECTORS, ids=VECTOR_IDS)
def test_kat_decrypts(vector: dict[str, Any], tmp_path: Path) -> None:
    key = bytes.fromhex(vector["data_key"])
    header_bytes = bytes.fromhex(vector["header"])
    container = bytes.fromhex(vector["container"])
    plaintext = bytes.fromhex(vector["plaintext"])
    body = container[len(header_bytes) :]
    assert tink_decrypt(key, vector["segment_size"], body, header_bytes) == plaintext
    assert b"".join(decrypt_stream(io.BytesIO(container), lambda _h: key)) == plaintext
    path = tmp_path / "kat.cspk"
    path.write_bytes(container)
    container_file = ContainerFile(str(path), key)
    assert container_file.read_segments(0, container_file.segment_count) == plaintext
