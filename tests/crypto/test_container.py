"""The container format: header encoding and parsing (fuzzed), bounds, writer, random access."""

from __future__ import annotations

import io
import itertools
import random
import struct
from pathlib import Path

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from cipherspark.crypto import (
    CONTENT_TYPE_BINARY,
    CONTENT_TYPE_CSV_HEADER,
    CONTENT_TYPE_CSV_NO_HEADER,
    DEFAULT_SEGMENT_SIZE,
    MAGIC,
    ContainerFile,
    ContainerHeader,
    EncryptingWriter,
    decrypt_stream,
    is_container,
    read_header,
)
from cipherspark.crypto._streaming import (
    BODY_HEADER_SIZE,
    TAG_SIZE,
    SegmentCipher,
    SegmentLayout,
)
from cipherspark.errors import FormatError, IntegrityError, NotEncryptedError

KEY = bytes(range(32))
MIN_S = 57
MAX_S = 64 * 1024 * 1024
WRAPPED = b"\x01" + bytes(range(100, 160))


def pack_header(
    key_id: bytes, wrapped: bytes, segment_size: int, content_type: bytes,
    *, magic: bytes = MAGIC, version: int = 1, algorithm: int = 1, length: int | None = None,
) -> bytes:
    """A header packed by hand (docs/format.md), so fields can hold any value."""
    variable = b"".join(struct.pack(">H", len(p)) + p for p in (key_id, wrapped, content_type))
    if length is None:
        length = 16 + len(variable)
    return magic + struct.pack(">BBHI", version, algorithm, length, segment_size) + variable


def encrypt(header: ContainerHeader, plaintext: bytes, key: bytes = KEY) -> bytes:
    out = io.BytesIO()
    writer = EncryptingWriter(out, header, key)
    writer.write(plaintext)
    writer.close()
    return out.getvalue()


def expected_segment_count(segment_size: int, n: int) -> int:
    layout = SegmentLayout(segment_size)
    if n <= layout.first_plaintext_size:
        return 1
    return 1 + -(-(n - layout.first_plaintext_size) // layout.plaintext_size)


# -- strategies ----------------------------------------------------------------------------------

key_ids = st.text(min_size=1, max_size=40).filter(lambda s: len(s.encode()) <= 255)
ascii_text = st.text(alphabet=st.characters(max_codepoint=127), max_size=60)
headers = st.builds(
    ContainerHeader,
    key_id=key_ids,
    wrapped_key=st.binary(min_size=1, max_size=80),
    segment_size=st.one_of(st.integers(MIN_S, MAX_S), st.sampled_from([MIN_S, MAX_S, 4096])),
    content_type=st.one_of(
        ascii_text,
        st.sampled_from([CONTENT_TYPE_BINARY, CONTENT_TYPE_CSV_HEADER, CONTENT_TYPE_CSV_NO_HEADER]),
    ),
)


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with a few random byte replacements, insertions, deletions or a truncation."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["replace", "insert", "delete", "truncate", "xor"]))
        pos = draw(st.integers(0, max(len(buf) - 1, 0)))
        if op == "replace" and buf:
            buf[pos] = draw(st.integers(0, 255))
        elif op == "xor" and buf:
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=3))
        elif op == "delete" and buf:
            del buf[pos]
        elif op == "truncate":
            del buf[pos:]
    return bytes(buf)


def check_decode(data: bytes) -> None:
    """``decode`` either parses ``data`` canonically or raises FormatError / NotEncryptedError."""
    try:
        header = ContainerHeader.decode(data)
    except NotEncryptedError:
        # Only when the bytes cannot be the start of a container at all.
        assert not data or not MAGIC.startswith(data[: len(MAGIC)])
    except FormatError:
        assert data and MAGIC.startswith(data[: len(MAGIC)])
    else:
        assert header.encode() == data


def check_read_header(data: bytes, trailing: bytes) -> None:
    """``read_header`` on a stream holding ``data + trailing``: same contract, plus position."""
    full = data + trailing
    stream = io.BytesIO(full)
    try:
        header, raw = read_header(stream)
    except NotEncryptedError:
        assert not full or not MAGIC.startswith(full[: len(MAGIC)])
    except FormatError:
        assert full and MAGIC.startswith(full[: len(MAGIC)])
    else:
        assert full.startswith(raw)
        assert stream.tell() == len(raw)
        assert header.encode() == raw


# -- header: round trip and fuzz ----------------------------------------------------------------

@given(headers)
@settings(max_examples=300, deadline=None)
def test_header_round_trip(header: ContainerHeader) -> None:
    data = header.encode()
    assert ContainerHeader.decode(data) == header
    assert len(data) == struct.unpack_from(">H", data, 10)[0]
    stream = io.BytesIO(data + b"body bytes follow")
    assert read_header(stream) == (header, data)
    assert stream.tell() == len(data)


@given(st.binary(max_size=300))
@settings(max_examples=500, deadline=None)
@example(b"")
@example(MAGIC[:3])
@example(MAGIC)
@example(MAGIC + b"\x01\x01\x00\x10")
@example(MAGIC + b"\x01\x01\x00\x0f\x00\x00\x10\x00")
@example(MAGIC + b"\x01\x01\xff\xff\x00\x00\x10\x00")
def test_decode_random_bytes(data: bytes) -> None:
    check_decode(data)
    check_read_header(data, b"")


@given(st.binary(max_size=200), st.binary(max_size=40))
@settings(max_examples=500, deadline=None)
def test_decode_random_bytes_after_magic(rest: bytes, trailing: bytes) -> None:
    for prefix in (MAGIC, MAGIC + b"\x01\x01"):
        check_decode(prefix + rest)
        check_read_header(prefix + rest, trailing)


@given(
    key_id=st.binary(max_size=300), wrapped=st.binary(max_size=80),
    segment_size=st.integers(0, 2**32 - 1), content_type=st.binary(max_size=300),
    length_delta=st.sampled_from([0, 0, 0, -1, 1, -3, 5]), trailing=st.binary(max_size=20),
)
@settings(max_examples=500, deadline=None)
def test_decode_structured_garbage(
    key_id: bytes, wrapped: bytes, segment_size: int, content_type: bytes, length_delta: int,
    trailing: bytes,
) -> None:
    """Well-framed headers whose fields hold anything: invalid UTF-8, sizes, lengths."""
    data = pack_header(key_id, wrapped, segment_size, content_type)
    length = len(data) + length_delta
    assume(0 <= length < 1 << 16)
    data = data[:10] + struct.pack(">H", length) + data[12:]
    check_decode(data)
    check_read_header(data, trailing)
    valid = (
        length_delta == 0 and MIN_S <= segment_size <= MAX_S and 0 < len(wrapped) <= 4096
        and 0 < len(key_id) <= 255 and len(content_type) <= 255 and content_type.isascii()
    )
    try:
        key_id.decode("utf-8")
    except UnicodeDecodeError:
        valid = False
    if valid:
        assert ContainerHeader.decode(data).encode() == data
    else:
        with pytest.raises(FormatError):
            ContainerHeader.decode(data)


@given(st.data(), headers, st.binary(max_size=30))
@settings(max_examples=500, deadline=None)
def test_decode_mutated_valid_headers(
    data: st.DataObject, header: ContainerHeader, trailing: bytes
) -> None:
    mutant = data.draw(mutated(header.encode()))
    check_decode(mutant)
    check_read_header(mutant, trailing)


@given(st.integers(0, MIN_S - 1) | st.integers(MAX_S + 1, 2**32 - 1))
@settings(max_examples=100, deadline=None)
@example(MIN_S - 1)
@example(MAX_S + 1)
@example(0)
@example(2**32 - 1)
def test_segment_size_out_of_range_rejected(segment_size: int) -> None:
    with pytest.raises(FormatError):
        ContainerHeader("k", WRAPPED, segment_size)
    with pytest.raises(FormatError):
        ContainerHeader.decode(pack_header(b"k", WRAPPED, segment_size, b""))
    with pytest.raises(FormatError):
        read_header(io.BytesIO(pack_header(b"k", WRAPPED, segment_size, b"") + b"x" * 64))


@pytest.mark.parametrize("segment_size", [MIN_S, MIN_S + 1, 4096, DEFAULT_SEGMENT_SIZE, MAX_S])
def test_segment_size_bounds_accepted(segment_size: int) -> None:
    header = ContainerHeader("k", WRAPPED, segment_size)
    assert ContainerHeader.decode(header.encode()).segment_size == segment_size
    packed = pack_header(b"k", WRAPPED, segment_size, b"")
    assert ContainerHeader.decode(packed) == ContainerHeader("k", WRAPPED, segment_size, "")


@pytest.mark.parametrize(
    ("key_id", "ok"),
    [("a" * 255, True), ("a" * 256, False), ("é" * 127 + "a", True), ("é" * 128, False),
     ("", False), ("€" * 85, True), ("€" * 86, False)],
)
def test_key_id_length_is_counted_in_utf8_bytes(key_id: str, ok: bool) -> None:
    raw = pack_header(key_id.encode(), WRAPPED, 4096, b"")
    if ok:
        assert ContainerHeader(key_id, WRAPPED, 4096, "").encode() == raw
        assert ContainerHeader.decode(raw).key_id == key_id
    else:
        with pytest.raises(FormatError):
            ContainerHeader(key_id, WRAPPED, 4096)
        with pytest.raises(FormatError):
            ContainerHeader.decode(raw)


@pytest.mark.parametrize(
    ("wrapped", "content_type", "ok"),
    [(b"", b"", False), (b"w", b"", True), (b"w" * 4096, b"", True), (b"w" * 4097, b"", False),
     (b"w", b"t" * 255, True), (b"w", b"t" * 256, False), (b"w", "é".encode(), False),
     (b"w", b"\x80", False)],
)
def test_wrapped_key_and_content_type_bounds(wrapped: bytes, content_type: bytes,
                                             ok: bool) -> None:
    raw = pack_header(b"k", wrapped, 4096, content_type)
    if ok:
        header = ContainerHeader.decode(raw)
        assert (header.wrapped_key, header.content_type) == (wrapped, content_type.decode())
    else:
        with pytest.raises(FormatError):
            ContainerHeader.decode(raw)


_GOOD = pack_header(b"k", WRAPPED, 4096, b"text/csv")
MALFORMED = {
    "version": pack_header(b"k", WRAPPED, 4096, b"", version=2),
    "algorithm": pack_header(b"k", WRAPPED, 4096, b"", algorithm=0),
    "length too large": pack_header(b"k", WRAPPED, 4096, b"", length=len(_GOOD) + 50),
    "length too small": pack_header(b"k", WRAPPED, 4096, b"", length=15),
    "trailing byte": _GOOD[:10] + struct.pack(">H", len(_GOOD) + 1) + _GOOD[12:] + b"\x00",
    "truncated": _GOOD[:-1],
    "fixed part only": _GOOD[:16],
    "magic only": MAGIC,
    "half the magic": MAGIC[:4],
    "key id bad utf-8": pack_header(b"\xff", WRAPPED, 4096, b""),
    "key id lone surrogate": pack_header(b"\xed\xa0\x80", WRAPPED, 4096, b""),
    "key id overlong": pack_header(b"\xc0\xaf", WRAPPED, 4096, b""),
}
NOT_CONTAINERS = {
    "empty": b"",
    "zip": b"PK\x03\x04" + bytes(20),
    "csv": b"id,name\n1,x\n",
    "magic off by one byte": MAGIC[:7] + b"X" + bytes(30),
    "one wrong byte": b"X",
}


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_header_is_format_error(raw: bytes) -> None:
    assert ContainerHeader.decode(_GOOD).content_type == "text/csv"
    with pytest.raises(FormatError):
        ContainerHeader.decode(raw)
    with pytest.raises(FormatError):
        read_header(io.BytesIO(raw))


@pytest.mark.parametrize("raw", NOT_CONTAINERS.values(), ids=NOT_CONTAINERS.keys())
def test_not_a_container_is_not_encrypted_error(raw: bytes) -> None:
    with pytest.raises(NotEncryptedError):
        ContainerHeader.decode(raw)
    with pytest.raises(NotEncryptedError):
        read_header(io.BytesIO(raw))


def test_csv_has_header() -> None:
    assert ContainerHeader("k", WRAPPED, content_type=CONTENT_TYPE_CSV_HEADER).csv_has_header
    assert not ContainerHeader("k", WRAPPED, content_type=CONTENT_TYPE_CSV_NO_HEADER).csv_has_header
    assert not ContainerHeader("k", WRAPPED).csv_has_header
    assert ContainerHeader("k", WRAPPED).segment_size == DEFAULT_SEGMENT_SIZE == 1 << 20


# -- layout ---------------------------------------------------------------------------------------

def test_worked_example_of_the_spec() -> None:
    """The numbers in docs/format.md's worked example."""
    header = ContainerHeader("k1", b"w" * 61, 4096, CONTENT_TYPE_BINARY)
    assert len(header.encode()) == 109
    data = encrypt(header, bytes(10_000))
    assert len(data) == 109 + 10_088
    chunks = list(decrypt_stream(io.BytesIO(data), lambda _h: KEY))
    assert [len(c) for c in chunks] == [4040, 4080, 1880]
    layout = header.layout
    assert layout.segment_count(10_088) == 3
    assert layout.plaintext_size_of(10_088) == 10_000
    assert [layout.plaintext_offset(i) for i in range(3)] == [0, 4040, 8120]
    assert [layout.ciphertext_range(i, 10_088) for i in range(3)] == [
        (40, 4096), (4096, 8192), (8192, 10_088)]


@given(st.integers(MIN_S, 5000), st.integers(0, 20_000))
@settings(max_examples=300, deadline=None)
def test_layout_arithmetic(segment_size: int, n: int) -> None:
    layout = SegmentLayout(segment_size)
    count = expected_segment_count(segment_size, n)
    body_size = BODY_HEADER_SIZE + n + TAG_SIZE * count
    assert layout.segment_count(body_size) == count
    assert layout.plaintext_size_of(body_size) == n
    assert layout.plaintext_offset(count - 1) <= n <= layout.plaintext_offset(count)
    ranges = [layout.ciphertext_range(i, body_size) for i in range(count)]
    assert ranges[0][0] == BODY_HEADER_SIZE
    assert ranges[-1][1] == body_size
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    assert all(end - start == segment_size for start, end in ranges[1:-1])


@pytest.mark.parametrize("body_size", [0, 1, 55, 100 + 1, 100 + 15, 300 + 15])
def test_impossible_body_sizes_rejected(body_size: int) -> None:
    with pytest.raises(IntegrityError):
        SegmentLayout(100).segment_count(body_size)


def test_segment_cipher_input_checks() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        SegmentCipher(b"short", b"", bytes(32), bytes(7))
    good = SegmentCipher.new(KEY, b"aad").body_header
    assert len(good) == BODY_HEADER_SIZE and good[0] == BODY_HEADER_SIZE
    for bad in (good[:-1], b"\x27" + good[1:], b""):
        with pytest.raises(IntegrityError):
            SegmentCipher.from_body_header(KEY, b"aad", bad)
    # Fresh salt and nonce prefix per body.
    assert SegmentCipher.new(KEY, b"aad").body_header != good


# -- writer ---------------------------------------------------------------------------------------

@given(
    segment_size=st.integers(MIN_S, 300),
    plaintext=st.binary(max_size=1500),
    cuts=st.lists(st.integers(0, 1500), max_size=12),
    kind=st.sampled_from([bytes, bytearray, memoryview]),
)
@settings(max_examples=300, deadline=None)
def test_writer_any_chunking(segment_size: int, plaintext: bytes, cuts: list[int],
                             kind: type) -> None:
    header = ContainerHeader("k", WRAPPED, segment_size)
    out = io.BytesIO()
    writer = EncryptingWriter(out, header, KEY)
    bounds = sorted({0, len(plaintext), *(c for c in cuts if c <= len(plaintext))})
    for a, b in itertools.pairwise(bounds):
        assert writer.write(kind(plaintext[a:b])) == b - a
    writer.close()
    data = out.getvalue()
    count = expected_segment_count(segment_size, len(plaintext))
    assert len(data) == len(header.encode()) + BODY_HEADER_SIZE + len(plaintext) + TAG_SIZE * count
    chunks = list(decrypt_stream(io.BytesIO(data), lambda _h: KEY))
    assert b"".join(chunks) == plaintext
    assert len(chunks) == count
    layout = header.layout
    assert [len(c) for c in chunks[:-1]] == [
        layout.first_plaintext_size if i == 0 else layout.plaintext_size
        for i in range(count - 1)]


def test_writer_close_and_write_after_close() -> None:
    header = ContainerHeader("k", WRAPPED, 64)
    out = io.BytesIO()
    writer = EncryptingWriter(out, header, KEY)
    assert out.getvalue().startswith(header.encode())
    assert len(out.getvalue()) == len(header.encode()) + BODY_HEADER_SIZE
    writer.write(b"abc")
    writer.close()
    size = len(out.getvalue())
    writer.close()
    assert len(out.getvalue()) == size
    with pytest.raises(ValueError):
        writer.write(b"more")
    assert not out.closed  # closing the writer does not close the sink
    assert b"".join(decrypt_stream(io.BytesIO(out.getvalue()), lambda _h: KEY)) == b"abc"


def test_same_plaintext_encrypts_differently() -> None:
    header = ContainerHeader("k", WRAPPED, 64)
    a, b = encrypt(header, b"x" * 200), encrypt(header, b"x" * 200)
    assert len(a) == len(b) and a != b
    body_start = len(header.encode()) + BODY_HEADER_SIZE
    assert a[body_start:] != b[body_start:]


def test_decrypt_stream_with_pre_read_header() -> None:
    header = ContainerHeader("k", WRAPPED, 100, CONTENT_TYPE_CSV_HEADER)
    plaintext = b"a,b\n" * 100
    stream = io.BytesIO(encrypt(header, plaintext))
    parsed = read_header(stream)
    seen: list[ContainerHeader] = []

    def key_for(h: ContainerHeader) -> bytes:
        seen.append(h)
        return KEY

    assert b"".join(decrypt_stream(stream, key_for, header=parsed)) == plaintext
    assert seen == [header]


def test_is_container(tmp_path: Path) -> None:
    good = tmp_path / "good.cspk"
    good.write_bytes(encrypt(ContainerHeader("k", WRAPPED, 64), b"data"))
    plain = tmp_path / "plain.csv"
    plain.write_bytes(b"id,name\n")
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    short = tmp_path / "short"
    short.write_bytes(MAGIC[:5])
    assert is_container(good)
    assert not is_container(plain)
    assert not is_container(empty)
    assert not is_container(short)


# -- random access --------------------------------------------------------------------------------

FILE_SHAPES = [(64, 0), (64, 500), (57, 50), (100, 44 + 84 * 3), (100, 1000), (4096, 20_000)]


@pytest.fixture(scope="module")
def container_files(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, bytes, int]]:
    directory = tmp_path_factory.mktemp("random-access")
    files = []
    for number, (segment_size, n) in enumerate(FILE_SHAPES):
        plaintext = random.Random(number).randbytes(n)
        path = directory / f"f{number}.cspk"
        path.write_bytes(encrypt(ContainerHeader("k", WRAPPED, segment_size), plaintext))
        files.append((str(path), plaintext, segment_size))
    return files


def test_container_file_metadata(container_files: list[tuple[str, bytes, int]]) -> None:
    for path, plaintext, segment_size in container_files:
        container_file = ContainerFile(path, KEY)
        header_size = len(ContainerHeader("k", WRAPPED, segment_size).encode())
        assert container_file.header == ContainerHeader("k", WRAPPED, segment_size)
        assert container_file.body_offset == header_size
        assert container_file.file_size == Path(path).stat().st_size
        assert container_file.body_size == container_file.file_size - header_size
        assert container_file.segment_count == expected_segment_count(segment_size, len(plaintext))
        assert b"".join(container_file.iter_segments()) == plaintext


@given(st.data())
@settings(max_examples=400, deadline=None)
def test_read_segments_is_a_slice(
    container_files: list[tuple[str, bytes, int]], data: st.DataObject
) -> None:
    path, plaintext, segment_size = data.draw(st.sampled_from(container_files))
    container_file = ContainerFile(path, KEY)
    count = container_file.segment_count
    start = data.draw(st.integers(0, count + 1), label="start")
    stop = data.draw(st.integers(0, count + 2), label="stop")
    layout = SegmentLayout(segment_size)
    got = container_file.read_segments(start, stop)
    if start >= min(stop, count):
        assert got == b""
    else:
        end = layout.plaintext_offset(min(stop, count))
        assert got == plaintext[layout.plaintext_offset(start) : end]
        assert len(got) > 0 or len(plaintext) == 0
    iterated = list(container_file.iter_segments(min(start, count)))
    assert b"".join(iterated) == plaintext[layout.plaintext_offset(min(start, count)) :]
