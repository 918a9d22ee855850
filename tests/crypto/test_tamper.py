"""Every modification of a container is rejected, and no unauthenticated plaintext is released.

Each tampered container goes through both readers, consumed to the end:

* :func:`decrypt_stream` may yield chunks before it fails (one segment at a time), but each yielded
  chunk must be the original plaintext of that segment, and it must fail;
* :class:`ContainerFile` must fail on construction or on reading some segment; every segment it
  does return must be the original plaintext of that segment.

The exception class is asserted exactly wherever the modification determines it.
"""

from __future__ import annotations

import io
import itertools
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cipherspark.crypto import (
    CONTENT_TYPE_CSV_HEADER,
    MAGIC,
    ContainerFile,
    ContainerHeader,
    EncryptingWriter,
    decrypt_stream,
)
from cipherspark.crypto._streaming import BODY_HEADER_SIZE, SegmentLayout
from cipherspark.errors import CipherSparkError, FormatError, IntegrityError, NotEncryptedError

KEY = bytes(range(32))
WRAPPED = b"\x01" + bytes(range(100, 160))


@dataclass(frozen=True)
class Sample:
    """One valid container and everything needed to judge what a reader returns for it."""

    header: ContainerHeader
    header_bytes: bytes
    plaintext: bytes
    data: bytes
    segments: tuple[bytes, ...]  # ciphertext of each segment (segment 0 without body header)
    segment_plaintexts: tuple[bytes, ...]

    @property
    def body_header(self) -> bytes:
        start = len(self.header_bytes)
        return self.data[start : start + BODY_HEADER_SIZE]

    def rebuild(self, segments: list[bytes] | tuple[bytes, ...]) -> bytes:
        return self.header_bytes + self.body_header + b"".join(segments)

    def segment_of(self, offset: int) -> int:
        """Index of the segment holding file byte ``offset`` (-1 for the body header)."""
        body_offset = offset - len(self.header_bytes) - BODY_HEADER_SIZE
        assert body_offset < sum(map(len, self.segments))
        if body_offset < 0:
            return -1
        for index, segment in enumerate(self.segments):
            if body_offset < len(segment):
                return index
            body_offset -= len(segment)
        raise AssertionError("unreachable")


def make_sample(segment_size: int, n: int, *, key_id: str = "tamper-key", seed: int = 0,
                content_type: str = CONTENT_TYPE_CSV_HEADER) -> Sample:
    header = ContainerHeader(key_id, WRAPPED, segment_size, content_type)
    plaintext = random.Random(seed * 1000 + n).randbytes(n)
    out = io.BytesIO()
    writer = EncryptingWriter(out, header, KEY)
    writer.write(plaintext)
    writer.close()
    data = out.getvalue()
    header_bytes = header.encode()
    body = data[len(header_bytes) :]
    layout = SegmentLayout(segment_size)
    count = layout.segment_count(len(body))
    segments = []
    plaintexts = []
    for index in range(count):
        start, end = layout.ciphertext_range(index, len(body))
        segments.append(body[start:end])
        offset = layout.plaintext_offset(index)
        plaintexts.append(
            plaintext[offset : layout.plaintext_offset(index + 1)] if index < count - 1
            else plaintext[offset:])
    assert b"".join(plaintexts) == plaintext
    return Sample(header, header_bytes, plaintext, data, tuple(segments), tuple(plaintexts))


# Small segments, so that a few hundred bytes span many segments; every boundary shape.
SAMPLES = [
    make_sample(64, 0),  # one empty segment
    make_sample(64, 5),  # one partial segment
    make_sample(64, 8),  # exactly one full first segment (S - 56 = 8)
    make_sample(64, 8 + 48 * 3),  # the last segment exactly full
    make_sample(64, 8 + 48 * 3 + 1),  # one byte in the last segment
    make_sample(100, 400, key_id="clé-ü"),
    make_sample(57, 30),  # smallest segment size: one plaintext byte in segment 0
    make_sample(4096, 9000, content_type=""),
]
MULTI = [s for s in SAMPLES if len(s.segments) >= 2]

samples = st.sampled_from(SAMPLES)


# -- judging ---------------------------------------------------------------------------------------

def stream_outcome(data: bytes, key: bytes = KEY) -> tuple[list[bytes], CipherSparkError | None]:
    """Chunks ``decrypt_stream`` yields for ``data`` (consumed fully), and the error it raised."""
    chunks: list[bytes] = []
    try:
        for chunk in decrypt_stream(io.BytesIO(data), lambda _h: key):
            chunks.append(chunk)
    except CipherSparkError as exc:
        return chunks, exc
    return chunks, None


def file_outcome(path: Path, key: bytes = KEY) -> tuple[dict[int, bytes], CipherSparkError | None]:
    """Segments ``ContainerFile`` returns, read one by one and then all at once, and its error."""
    try:
        container_file = ContainerFile(str(path), key)
    except CipherSparkError as exc:
        return {}, exc
    released: dict[int, bytes] = {}
    first_error: CipherSparkError | None = None
    for index in range(container_file.segment_count):
        try:
            released[index] = container_file.read_segments(index, index + 1)
        except CipherSparkError as exc:
            first_error = first_error or exc
    try:
        whole = container_file.read_segments(0, container_file.segment_count)
    except CipherSparkError as exc:
        first_error = first_error or exc
        assert isinstance(exc, IntegrityError)
    else:
        assert first_error is None, "a range read succeeded although one of its segments failed"
        released[-1] = whole  # only possible for an untampered file
    return released, first_error


def assert_rejected(
    sample: Sample, data: bytes, path: Path, expected: type[CipherSparkError] | None,
    *, key: bytes = KEY, stream_chunks: int | None = None,
) -> None:
    """Both readers reject ``data`` (with ``expected`` if given) and release only true plaintext.

    ``stream_chunks``: how many (authentic) chunks decrypt_stream may yield before failing, when
    the modification determines it.
    """
    assert data != sample.data or key != KEY, "nothing was modified"

    chunks, error = stream_outcome(data, key)
    for index, chunk in enumerate(chunks):
        assert index < len(sample.segment_plaintexts), "decrypt_stream yielded an extra segment"
        assert chunk == sample.segment_plaintexts[index], f"wrong plaintext for segment {index}"
    assert error is not None, "decrypt_stream accepted a modified container"
    if expected is not None:
        assert type(error) is expected, repr(error)
    if stream_chunks is not None:
        assert len(chunks) == stream_chunks

    put(path, data)
    released, error = file_outcome(path, key)
    assert -1 not in released
    for index, chunk in released.items():
        assert index < len(sample.segment_plaintexts), "ContainerFile returned an extra segment"
        assert chunk == sample.segment_plaintexts[index], f"wrong plaintext for segment {index}"
    assert error is not None, "ContainerFile accepted a modified container"
    if expected is not None:
        assert type(error) is expected, repr(error)


def put(path: Path, data: bytes) -> None:
    """Overwrite ``path`` with ``data`` in place (truncating to zero first is slow on ext4)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.write(fd, data)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One file that every example overwrites (hypothesis runs examples one at a time)."""
    return tmp_path_factory.mktemp("tamper") / "container.cspk"


def test_untampered_samples_decrypt(scratch: Path) -> None:
    """The judging helpers accept the originals (so rejection below means something)."""
    for sample in SAMPLES:
        chunks, error = stream_outcome(sample.data)
        assert error is None and chunks == list(sample.segment_plaintexts)
        put(scratch, sample.data)
        released, error = file_outcome(scratch)
        assert error is None and released[-1] == sample.plaintext
    assert {len(s.segments) for s in SAMPLES} >= {1, 2, 4, 5}


# -- which error a header change must give -------------------------------------------------------

def _field_spans(sample: Sample) -> dict[str, tuple[int, int]]:
    key_id = sample.header.key_id.encode()
    content_type = sample.header.content_type.encode()
    spans = {"magic": (0, 8), "version": (8, 9), "algorithm": (9, 10), "length": (10, 12),
             "segment_size": (12, 16)}
    offset = 16
    for name, size in (("key_id", len(key_id)), ("wrapped_key", len(WRAPPED)),
                       ("content_type", len(content_type))):
        spans[f"{name}_length"] = (offset, offset + 2)
        spans[name] = (offset + 2, offset + 2 + size)
        offset += 2 + size
    assert offset == len(sample.header_bytes)
    return spans


def expected_for_header_edit(sample: Sample, mutant: bytes, offset: int) -> type[CipherSparkError]:
    """The error an edit of header byte ``offset`` (giving ``mutant``) must raise."""
    field = next(name for name, (a, b) in _field_spans(sample).items() if a <= offset < b)
    if field == "magic":
        return NotEncryptedError
    if field in ("version", "algorithm", "length", "key_id_length", "wrapped_key_length",
                 "content_type_length"):
        return FormatError
    a, b = _field_spans(sample)[field]
    value = mutant[a:b]
    if field == "segment_size":
        size = int.from_bytes(value, "big")
        return IntegrityError if 57 <= size <= 64 << 20 else FormatError
    if field == "key_id":
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            return FormatError
        return IntegrityError
    if field == "content_type":
        return IntegrityError if value.isascii() else FormatError
    assert field == "wrapped_key"
    return IntegrityError


# -- bit flips -----------------------------------------------------------------------------------

def flip(data: bytes, bit: int) -> bytes:
    buf = bytearray(data)
    buf[bit // 8] ^= 1 << (bit % 8)
    return bytes(buf)


def _check_flip(sample: Sample, bit: int, path: Path) -> None:
    mutant = flip(sample.data, bit)
    offset = bit // 8
    if offset < len(sample.header_bytes):
        expected = expected_for_header_edit(sample, mutant, offset)
        chunks: int | None = 0
    else:
        expected = IntegrityError
        # decrypt_stream releases exactly the segments before the damaged one.
        chunks = max(sample.segment_of(offset), 0)
    assert_rejected(sample, mutant, path, expected, stream_chunks=chunks)


@given(sample=samples, data=st.data())
@settings(max_examples=1000, deadline=None)
def test_flipped_bit_anywhere(sample: Sample, data: st.DataObject, scratch: Path) -> None:
    bit = data.draw(st.integers(0, len(sample.data) * 8 - 1), label="bit")
    _check_flip(sample, bit, scratch)


def test_every_header_bit_flip(scratch: Path) -> None:
    """Exhaustively, every bit of every sample header (each header field, each edge)."""
    for sample in SAMPLES:
        for bit in range(len(sample.header_bytes) * 8):
            _check_flip(sample, bit, scratch)


def test_every_body_bit_flip_of_a_small_container(scratch: Path) -> None:
    """Exhaustively, with both readers: every bit of a 5-segment body."""
    sample = SAMPLES[4]
    assert len(sample.segments) == 5
    for bit in range(len(sample.header_bytes) * 8, len(sample.data) * 8):
        _check_flip(sample, bit, scratch)


# -- truncation and extension --------------------------------------------------------------------

def expected_for_truncation(sample: Sample, length: int) -> type[CipherSparkError]:
    if length == 0:
        return NotEncryptedError
    if length < len(sample.header_bytes):
        return FormatError  # a prefix of a header is a truncated header
    return IntegrityError


@given(sample=samples, data=st.data())
@settings(max_examples=500, deadline=None)
def test_truncated_at_any_length(sample: Sample, data: st.DataObject, scratch: Path) -> None:
    length = data.draw(st.integers(0, len(sample.data) - 1), label="length")
    assert_rejected(sample, sample.data[:length], scratch, expected_for_truncation(sample, length))


def test_truncated_at_every_length_and_segment_boundary(scratch: Path) -> None:
    for sample in SAMPLES[:6]:
        for length in range(len(sample.data)):
            chunks, error = stream_outcome(sample.data[:length])
            assert type(error) is expected_for_truncation(sample, length), (length, error)
            assert chunks == list(sample.segment_plaintexts[: len(chunks)])
    # Cut exactly after whole segments: the new last segment lacks the last flag.
    for sample in MULTI:
        for keep in range(len(sample.segments)):
            truncated = sample.rebuild(sample.segments[:keep])
            assert_rejected(sample, truncated, scratch, IntegrityError,
                            stream_chunks=max(keep - 1, 0))


@given(sample=samples, extra=st.binary(min_size=1, max_size=300))
@settings(max_examples=500, deadline=None)
def test_extended_by_any_bytes(sample: Sample, extra: bytes, scratch: Path) -> None:
    assert_rejected(sample, sample.data + extra, scratch, IntegrityError)


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: f"S{s.header.segment_size}")
def test_extended_by_a_copy_of_a_segment(sample: Sample, scratch: Path) -> None:
    for segment in sample.segments:
        assert_rejected(sample, sample.data + segment, scratch, IntegrityError,
                        stream_chunks=len(sample.segments) - 1)


# -- whole segments: swap, duplicate, drop, splice -----------------------------------------------

multi_samples = st.sampled_from(MULTI)


@given(sample=multi_samples, data=st.data())
@settings(max_examples=200, deadline=None)
def test_swapped_segments(sample: Sample, data: st.DataObject, scratch: Path) -> None:
    count = len(sample.segments)
    i = data.draw(st.integers(0, count - 2), label="i")
    j = data.draw(st.integers(i + 1, count - 1), label="j")
    segments = list(sample.segments)
    segments[i], segments[j] = segments[j], segments[i]
    assert_rejected(sample, sample.rebuild(segments), scratch, IntegrityError)


@given(sample=multi_samples, order=st.permutations(range(8)))
@settings(max_examples=200, deadline=None)
def test_reordered_segments(sample: Sample, order: list[int], scratch: Path) -> None:
    indices = [i for i in order if i < len(sample.segments)]
    assume(indices != sorted(indices))
    segments = [sample.segments[i] for i in indices]
    first_moved = next(k for k, i in enumerate(indices) if k != i)
    assert_rejected(sample, sample.rebuild(segments), scratch, IntegrityError,
                    stream_chunks=first_moved)


@given(sample=samples, data=st.data())
@settings(max_examples=200, deadline=None)
def test_duplicated_segment(sample: Sample, data: st.DataObject, scratch: Path) -> None:
    count = len(sample.segments)
    i = data.draw(st.integers(0, count - 1), label="copy")
    at = data.draw(st.integers(0, count), label="insert at")
    segments = list(sample.segments)
    segments.insert(at, sample.segments[i])
    assert_rejected(sample, sample.rebuild(segments), scratch, IntegrityError)


@given(sample=samples, data=st.data())
@settings(max_examples=200, deadline=None)
def test_dropped_segments(sample: Sample, data: st.DataObject, scratch: Path) -> None:
    count = len(sample.segments)
    start = data.draw(st.integers(0, count - 1), label="start")
    stop = data.draw(st.integers(start + 1, count), label="stop")
    segments = list(sample.segments[:start]) + list(sample.segments[stop:])
    assert_rejected(sample, sample.rebuild(segments), scratch, IntegrityError,
                    stream_chunks=max(start - 1, 0) if stop == count else start)


def test_segments_spliced_from_another_container(scratch: Path) -> None:
    """Same key, same header, same plaintext, but another salt: no segment can be transplanted."""
    for sample in MULTI:
        twin = make_sample(sample.header.segment_size, len(sample.plaintext),
                           key_id=sample.header.key_id, content_type=sample.header.content_type)
        assert twin.header_bytes == sample.header_bytes and twin.plaintext == sample.plaintext
        for index in range(len(sample.segments)):
            segments = list(sample.segments)
            segments[index] = twin.segments[index]
            assert_rejected(sample, sample.rebuild(segments), scratch, IntegrityError,
                            stream_chunks=index)
        # The twin's body header (salt, nonce prefix) with this container's segments.
        mixed = twin.header_bytes + twin.body_header + b"".join(sample.segments)
        assert_rejected(sample, mixed, scratch, IntegrityError, stream_chunks=0)


# -- header fields and keys ----------------------------------------------------------------------

def with_header(sample: Sample, header: ContainerHeader) -> bytes:
    return header.encode() + sample.data[len(sample.header_bytes) :]


@given(sample=samples, key_id=st.text(min_size=1, max_size=50))
@settings(max_examples=100, deadline=None)
def test_edited_key_id(sample: Sample, key_id: str, scratch: Path) -> None:
    assume(key_id != sample.header.key_id)
    header = ContainerHeader(key_id, WRAPPED, sample.header.segment_size,
                             sample.header.content_type)
    assert_rejected(sample, with_header(sample, header), scratch, IntegrityError, stream_chunks=0)


@given(sample=samples, wrapped=st.binary(min_size=1, max_size=200))
@settings(max_examples=100, deadline=None)
def test_edited_wrapped_key(sample: Sample, wrapped: bytes, scratch: Path) -> None:
    assume(wrapped != WRAPPED)
    header = ContainerHeader(sample.header.key_id, wrapped, sample.header.segment_size,
                             sample.header.content_type)
    assert_rejected(sample, with_header(sample, header), scratch, IntegrityError, stream_chunks=0)


@given(sample=samples, content_type=st.text(st.characters(max_codepoint=127), max_size=60))
@settings(max_examples=100, deadline=None)
def test_edited_content_type(sample: Sample, content_type: str, scratch: Path) -> None:
    assume(content_type != sample.header.content_type)
    header = ContainerHeader(sample.header.key_id, WRAPPED, sample.header.segment_size,
                             content_type)
    assert_rejected(sample, with_header(sample, header), scratch, IntegrityError, stream_chunks=0)


@given(sample=samples, segment_size=st.integers(57, 300) | st.integers(57, 64 << 20))
@settings(max_examples=100, deadline=None)
def test_edited_segment_size(sample: Sample, segment_size: int, scratch: Path) -> None:
    assume(segment_size != sample.header.segment_size)
    header = ContainerHeader(sample.header.key_id, WRAPPED, segment_size,
                             sample.header.content_type)
    assert_rejected(sample, with_header(sample, header), scratch, IntegrityError, stream_chunks=0)


@pytest.mark.parametrize("field", ["version", "algorithm"])
def test_unknown_version_or_algorithm(field: str, scratch: Path) -> None:
    sample = SAMPLES[5]
    offset = {"version": 8, "algorithm": 9}[field]
    for value in (0, 2, 255):
        mutant = bytearray(sample.data)
        mutant[offset] = value
        assert_rejected(sample, bytes(mutant), scratch, FormatError, stream_chunks=0)


@given(sample=samples, key=st.binary(min_size=32, max_size=32))
@settings(max_examples=100, deadline=None)
def test_wrong_data_key(sample: Sample, key: bytes, scratch: Path) -> None:
    assume(key != KEY)
    assert_rejected(sample, sample.data, scratch, IntegrityError, key=key, stream_chunks=0)


def _one_bit_keys() -> Iterator[bytes]:
    for bit in range(0, 256, 37):
        yield flip(KEY, bit)


def test_keys_one_bit_away(scratch: Path) -> None:
    sample = SAMPLES[5]
    for key in itertools.chain(_one_bit_keys(), [bytes(32), b"\xff" * 32]):
        assert_rejected(sample, sample.data, scratch, IntegrityError, key=key, stream_chunks=0)


def test_plaintext_is_not_a_container(scratch: Path) -> None:
    sample = SAMPLES[5]
    for data in (sample.plaintext, b"id,name\n1,a\n", MAGIC[1:] + sample.data):
        assert_rejected(sample, data, scratch, NotEncryptedError, stream_chunks=0)
