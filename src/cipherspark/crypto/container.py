"""The cipherspark container: an authenticated header followed by a segmented AEAD body.

See ``docs/format.md`` for the byte-level specification. In short::

    file   = header || body
    header = magic(8) version(1) algorithm(1) header_length(u16) segment_size(u32)
             key_id(u16 length + UTF-8) wrapped_key(u16 length + bytes)
             content_type(u16 length + ASCII)
    body   = Tink AES256_GCM_HKDF streaming AEAD ciphertext, associated data = header

The header is the associated data of the body (it is Tink's HKDF ``info``), so editing any header
byte makes every segment fail authentication. Segments decrypt independently, which is what lets
Spark split one file across partitions (:class:`ContainerFile`).
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

from cipherspark._descriptors import read_at
from cipherspark.crypto._streaming import (
    BODY_HEADER_SIZE,
    MAX_SEGMENT_SIZE,
    MIN_SEGMENT_SIZE,
    SegmentCipher,
    SegmentLayout,
)
from cipherspark.errors import FormatError, InputError, IntegrityError, NotEncryptedError

__all__ = [
    "ALGORITHM_AES256_GCM_HKDF_SHA256",
    "CONTENT_TYPE_BINARY",
    "CONTENT_TYPE_CSV_HEADER",
    "CONTENT_TYPE_CSV_NO_HEADER",
    "CONTENT_TYPE_JSON_LINES",
    "CONTENT_TYPE_TEXT",
    "DEFAULT_SEGMENT_SIZE",
    "FORMAT_VERSION",
    "MAGIC",
    "ContainerFile",
    "ContainerHeader",
    "EncryptingWriter",
    "ExpectedPart",
    "decrypt_stream",
    "is_container",
    "open_regular",
    "read_header",
    "read_prefix",
]

# PNG-style magic: a high byte and CR LF / SUB catch 7-bit and newline-translating transports.
MAGIC = b"\x89CSPK\r\n\x1a"
FORMAT_VERSION = 1
ALGORITHM_AES256_GCM_HKDF_SHA256 = 1

# 1 MiB ciphertext segments: Tink's standard AES256_GCM_HKDF_1MB template. Measured with
# bench/segment_size.py (5M rows, read + filter + count): 256 KiB to 4 MiB all within +-6% of each
# other, so the choice is Tink's template, and a split reads at most 1 MiB past its end.
DEFAULT_SEGMENT_SIZE = 1 << 20

# RFC 4180 / RFC 7111 media type with its "header" parameter.
CONTENT_TYPE_CSV_HEADER = "text/csv; header=present"
CONTENT_TYPE_CSV_NO_HEADER = "text/csv; header=absent"
CONTENT_TYPE_BINARY = "application/octet-stream"
#: Lines of UTF-8 text (Spark's text source: one row per line).
CONTENT_TYPE_TEXT = "text/plain; charset=utf-8"
#: JSON Lines (one JSON value per line, https://jsonlines.org), UTF-8.
CONTENT_TYPE_JSON_LINES = "application/x-ndjson"

_FIXED = struct.Struct(">8sBBHI")  # magic, version, algorithm, header length, segment size
_MAX_KEY_ID = 255
_MAX_WRAPPED_KEY = 4096
_MAX_CONTENT_TYPE = 255
_READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class ContainerHeader:
    """The authenticated header of a container.

    ``wrapped_key`` is the file's data key as wrapped by the KMS primary key ``key_id``; it is
    opaque to the format.
    """

    key_id: str
    wrapped_key: bytes = field(repr=False)
    segment_size: int = DEFAULT_SEGMENT_SIZE
    content_type: str = CONTENT_TYPE_BINARY

    def __post_init__(self) -> None:
        if not MIN_SEGMENT_SIZE <= self.segment_size <= MAX_SEGMENT_SIZE:
            raise FormatError(
                f"segment size {self.segment_size} is outside "
                f"{MIN_SEGMENT_SIZE}..{MAX_SEGMENT_SIZE}"
            )
        if not 0 < len(self.key_id.encode()) <= _MAX_KEY_ID:
            raise FormatError("key id must be 1 to 255 bytes of UTF-8")
        if not 0 < len(self.wrapped_key) <= _MAX_WRAPPED_KEY:
            raise FormatError("wrapped key must be 1 to 4096 bytes")
        if len(self.content_type) > _MAX_CONTENT_TYPE or not self.content_type.isascii():
            raise FormatError("content type must be at most 255 ASCII characters")

    @property
    def layout(self) -> SegmentLayout:
        """The segment layout of the body."""
        return SegmentLayout(self.segment_size)

    @property
    def csv_has_header(self) -> bool:
        """True if the plaintext is CSV whose first line is a header."""
        return self.content_type == CONTENT_TYPE_CSV_HEADER

    def encode(self) -> bytes:
        """The header's exact bytes (also the body's associated data)."""
        variable = b"".join(
            struct.pack(">H", len(part)) + part
            for part in (self.key_id.encode(), self.wrapped_key, self.content_type.encode("ascii"))
        )
        length = _FIXED.size + len(variable)
        fixed = _FIXED.pack(
            MAGIC, FORMAT_VERSION, ALGORITHM_AES256_GCM_HKDF_SHA256, length, self.segment_size
        )
        return fixed + variable

    @classmethod
    def decode(cls, data: bytes) -> ContainerHeader:
        """Parse exactly one encoded header; raise :class:`FormatError` on any deviation."""
        if len(data) < _FIXED.size:
            if MAGIC.startswith(data[: len(MAGIC)]) and data:
                raise FormatError("the container header is truncated")
            raise NotEncryptedError("not a cipherspark encrypted file (no container magic)")
        magic, version, algorithm, length, segment_size = _FIXED.unpack_from(data)
        if magic != MAGIC:
            raise NotEncryptedError("not a cipherspark encrypted file (no container magic)")
        if version != FORMAT_VERSION:
            raise FormatError(f"unsupported container version {version} (this build reads 1)")
        if algorithm != ALGORITHM_AES256_GCM_HKDF_SHA256:
            raise FormatError(f"unsupported container algorithm {algorithm}")
        if length != len(data):
            raise FormatError("the container header length field does not match the header")
        parts: list[bytes] = []
        offset = _FIXED.size
        for _ in range(3):
            if offset + 2 > length:
                raise FormatError("the container header is truncated")
            (size,) = struct.unpack_from(">H", data, offset)
            offset += 2
            if offset + size > length:
                raise FormatError("the container header is truncated")
            parts.append(bytes(data[offset : offset + size]))
            offset += size
        if offset != length:
            raise FormatError("the container header has trailing bytes")
        try:
            key_id = parts[0].decode()
            content_type = parts[2].decode("ascii")
        except UnicodeDecodeError as exc:
            raise FormatError("the container header has a malformed text field") from exc
        return cls(key_id, parts[1], segment_size, content_type)


class _Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


def read_header(stream: _Readable) -> tuple[ContainerHeader, bytes]:
    """Read and parse the header at the stream's position; return it and its raw bytes."""
    fixed = stream.read(_FIXED.size)
    if len(fixed) < _FIXED.size or fixed[:8] != MAGIC:
        ContainerHeader.decode(fixed)  # raises the precise error
    length = struct.unpack_from(">H", fixed, 10)[0]
    if length < _FIXED.size:
        raise FormatError("the container header length field is too small")
    raw = fixed + stream.read(length - _FIXED.size)
    return ContainerHeader.decode(raw), raw


def is_container(path: str | os.PathLike[str]) -> bool:
    """True if the file at ``path`` starts with the container magic."""
    with open(path, "rb") as f:
        return f.read(len(MAGIC)) == MAGIC


def open_regular(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Open ``path`` for reading; return the descriptor and the size ``fstat`` gives for it.

    Everything a reader checks and decrypts is then read from this one descriptor: replacing
    the path afterwards does not change what it reads. ``O_NONBLOCK`` keeps a FIFO planted at
    the path from blocking the open; anything but a regular file is refused (:class:`InputError`).
    A missing file raises :class:`FileNotFoundError`, other failures :class:`InputError`.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise InputError(f"cannot read {os.fspath(path)}: {exc.strerror}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"{os.fspath(path)} is not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd, info.st_size


class _FdReader:
    """Sequential reads by ``pread`` on a borrowed descriptor (no shared file offset)."""

    def __init__(self, fd: int, offset: int = 0) -> None:
        self._fd = fd
        self.offset = offset

    def read(self, size: int, /) -> bytes:
        data = read_at(self._fd, size, self.offset)
        self.offset += len(data)
        return data


def read_prefix(fd: int) -> tuple[ContainerHeader, bytes, bytes]:
    """The parsed header, the raw header and the body header (up to 40 bytes; fewer if the file
    ends) read from descriptor ``fd``: the first ``H + 40`` bytes a manifest entry digests."""
    reader = _FdReader(fd)
    header, raw = read_header(reader)
    return header, raw, reader.read(BODY_HEADER_SIZE)


@dataclass(frozen=True)
class ExpectedPart:
    """A container file as a reader must find it: a dataset manifest's entry for one part (or,
    for a single file, what planning a read saw), with the header that entry's digest covers.

    It is small and picklable: the Spark reader puts one in every split, and the executor
    checks the file it opens against it (:class:`ContainerFile` ``expected=``) before it asks
    for a key or decrypts a byte. The header carries the key id and wrapped data key, so a part
    that passes is under the dataset's key.
    """

    path: str
    size: int
    header_sha256: str
    header: ContainerHeader

    @property
    def header_length(self) -> int:
        """``H``, the header's length in bytes."""
        return len(self.header.encode())

    @property
    def segment_count(self) -> int:
        """Segments of the body (the size and header say where the last one is)."""
        return self.header.layout.segment_count(self.size - self.header_length)

    def mismatch(self) -> IntegrityError:
        """The error for a file at :attr:`path` that is not this part: it names the file only."""
        return IntegrityError(
            f"{self.path} is not the file that was verified when the read began "
            "(it was replaced or modified since)"
        )

    def check(self, header: ContainerHeader, prefix: bytes, size: int) -> None:
        """Raise :meth:`mismatch` unless the opened file has this part's size, digest and header.

        ``prefix`` is the file's first ``H + 40`` bytes, ``size`` its ``fstat`` size, both from
        the descriptor that will be decrypted.
        """
        if (
            size != self.size
            or hashlib.sha256(prefix).hexdigest() != self.header_sha256
            or header != self.header
        ):
            raise self.mismatch()

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> ExpectedPart:
        """What the file at ``path`` is now (its size, digest and header), read from one open.

        A file that has no valid header raises the container's error
        (:class:`NotEncryptedError`, :class:`FormatError`).
        """
        name = os.fspath(path)
        try:
            fd, size = open_regular(name)
        except FileNotFoundError as exc:
            raise InputError(f"{name} does not exist") from exc
        try:
            header, raw, body_header = read_prefix(fd)
        finally:
            os.close(fd)
        return cls(name, size, hashlib.sha256(raw + body_header).hexdigest(), header)


class EncryptingWriter:
    """Streams plaintext into a container on ``raw``; call :meth:`close` to write the last segment.

    Memory stays at about one segment whatever the input size. Closing does not close ``raw``.
    """

    def __init__(self, raw: BinaryIO, header: ContainerHeader, data_key: bytes) -> None:
        header_bytes = header.encode()
        self._raw = raw
        self._cipher = SegmentCipher.new(data_key, header_bytes)
        self._layout = header.layout
        # One reused segment buffer: a fresh one per segment costs a 1 MiB allocation and its
        # page faults, which halved encryption throughput.
        self._buffer = bytearray(self._layout.plaintext_size)
        self._filled = 0
        self._index = 0
        self._closed = False
        raw.write(header_bytes)
        raw.write(self._cipher.body_header)
        self._prefix_sha256 = hashlib.sha256(header_bytes + self._cipher.body_header).hexdigest()

    @property
    def header_sha256(self) -> str:
        """The digest a manifest entry (and the dataset registry) names this container by: the
        SHA-256 of its header and body header, as :meth:`ExpectedPart.of` computes it."""
        return self._prefix_sha256

    def _capacity(self) -> int:
        layout = self._layout
        return layout.first_plaintext_size if self._index == 0 else layout.plaintext_size

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Buffer ``data``; write every segment that is known not to be the last."""
        if self._closed:
            raise ValueError("write to a closed EncryptingWriter")
        view = memoryview(data).cast("B")
        size = len(view)
        # Strictly greater: a full segment may still be the last one (Tink does the same), so it
        # is written only once at least one more byte is known to follow.
        if self._filled:
            room = self._capacity() - self._filled
            if size <= room:
                self._buffer[self._filled : self._filled + size] = view
                self._filled += size
                return size
            self._buffer[self._filled : self._filled + room] = view[:room]
            view = view[room:]
            self._emit(memoryview(self._buffer)[: self._filled + room])
            self._filled = 0
        while len(view) > self._capacity():
            capacity = self._capacity()
            self._emit(view[:capacity])
            view = view[capacity:]
        self._buffer[: len(view)] = view
        self._filled = len(view)
        return size

    def _emit(self, chunk: bytes | bytearray | memoryview) -> None:
        self._raw.write(self._cipher.encrypt(self._index, chunk, last=False))
        self._index += 1

    def close(self) -> None:
        """Write the final segment (possibly empty, if nothing was written)."""
        if self._closed:
            return
        self._closed = True
        tail = memoryview(self._buffer)[: self._filled]
        self._raw.write(self._cipher.encrypt(self._index, tail, last=True))
        self._filled = 0


def decrypt_stream(
    stream: BinaryIO,
    data_key_for: Callable[[ContainerHeader], bytes],
    *,
    header: tuple[ContainerHeader, bytes] | None = None,
) -> Iterator[bytes]:
    """Yield the plaintext of the container read sequentially from ``stream``, segment by segment.

    ``data_key_for`` maps the header to the unwrapped data key. Each yielded chunk has been
    authenticated; the last-segment flag is checked, so a stream cut at a segment boundary raises
    :class:`IntegrityError` at the end rather than ending early. Consumers that must not release
    unverified output write to a temporary file and publish it only once the iterator finishes.
    """
    parsed, raw_header = header if header is not None else read_header(stream)
    data_key = data_key_for(parsed)
    body_header = stream.read(BODY_HEADER_SIZE)
    if len(body_header) < BODY_HEADER_SIZE:
        raise IntegrityError("the encrypted body is truncated (no body header)")
    cipher = SegmentCipher.from_body_header(data_key, raw_header, body_header)
    size = parsed.segment_size
    index = 0
    current = stream.read(size - BODY_HEADER_SIZE)
    while True:
        following = stream.read(size)
        last = not following
        yield cipher.decrypt(index, current, last)
        if last:
            return
        index += 1
        current = following


class ContainerFile:
    """Random access to the segments of one container file, for splitting across partitions.

    The file is opened once: its size comes from ``fstat`` of that descriptor, its header is read
    from it, and every segment is read from it (``os.pread``), so what is decrypted is the file
    that was opened and checked, even if the path is replaced meanwhile. With ``expected``, the
    file must be that part (size, header digest, header: :meth:`ExpectedPart.check`) before the
    key is asked for. ``data_key`` is the data key, or a function of the header that returns it
    (called only after the checks). Close it (or use it as a context manager); the descriptor
    is also closed when the object is collected.
    """

    _fd: int | None = None

    def __init__(
        self,
        path: str | os.PathLike[str],
        data_key: bytes | Callable[[ContainerHeader], bytes],
        *,
        expected: ExpectedPart | None = None,
    ) -> None:
        self.path = os.fspath(path)
        try:
            fd, size = open_regular(self.path)
        except FileNotFoundError as exc:
            if expected is not None:
                raise IntegrityError(
                    f"{self.path} is missing: the dataset changed after it was verified"
                ) from exc
            raise InputError(f"{self.path} does not exist") from exc
        try:
            try:
                header, raw_header, body_header = read_prefix(fd)
            except (NotEncryptedError, FormatError):
                if expected is not None:
                    raise expected.mismatch() from None
                raise
            if expected is not None:
                expected.check(header, raw_header + body_header, size)
            key = data_key(header) if callable(data_key) else data_key
            self.header = header
            self.body_offset = len(raw_header)
            self.file_size = size
            self.layout = header.layout
            self.body_size = size - self.body_offset
            self.segment_count = self.layout.segment_count(self.body_size)
            self._cipher = SegmentCipher.from_body_header(key, raw_header, body_header)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def close(self, _close: Callable[[int], None] = os.close) -> None:
        """Close the descriptor (idempotent)."""
        # os.close is bound at definition: __del__ may run while the interpreter shuts down.
        fd, self._fd = self._fd, None
        if fd is not None:
            _close(fd)

    def __enter__(self) -> ContainerFile:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def read_segments(self, start: int, stop: int) -> bytes:
        """Authenticated plaintext of segments ``start`` up to (not including) ``stop``."""
        stop = min(stop, self.segment_count)
        if start >= stop:
            return b""
        if self._fd is None:
            raise ValueError("read from a closed ContainerFile")
        first_begin, _ = self.layout.ciphertext_range(start, self.body_size)
        _, last_end = self.layout.ciphertext_range(stop - 1, self.body_size)
        data = read_at(self._fd, last_end - first_begin, self.body_offset + first_begin)
        if len(data) != last_end - first_begin:
            raise IntegrityError(f"{self.path}: the file changed size while being read")
        view = memoryview(data)
        out = []
        for index in range(start, stop):
            begin, end = self.layout.ciphertext_range(index, self.body_size)
            chunk = view[begin - first_begin : end - first_begin]
            last = index == self.segment_count - 1
            out.append(self._cipher.decrypt(index, chunk, last))
        return b"".join(out)

    def iter_segments(self, start: int = 0) -> Iterator[bytes]:
        """Yield the plaintext of each segment from ``start`` to the end, one at a time."""
        for index in range(start, self.segment_count):
            yield self.read_segments(index, index + 1)
