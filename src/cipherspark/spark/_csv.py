"""CSV machinery of the encrypted data source: splitting, line ownership, parsing, writing.

Kept free of Spark's DataSource classes so the rules can be tested directly.

Line ownership follows Hadoop's ``LineRecordReader``: a split covering plaintext bytes ``[A, B)``
owns every line that starts right after a newline lying in ``[A, B)``, plus the line at offset 0
when ``A == 0``. So a split other than the first skips its leading partial line, and every split
reads past ``B`` to finish its last line. Every line is owned by exactly one split.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from cipherspark._records import count_records
from cipherspark.crypto import ContainerFile
from cipherspark.errors import InputError

__all__ = [
    "MODES",
    "FileSlice",
    "count_records",
    "csv_header_line",
    "csv_rows",
    "owned_chunks",
    "owned_text",
    "parse_csv",
    "plan_slices",
]

MODES = ("PERMISSIVE", "DROPMALFORMED", "FAILFAST")


@dataclass(frozen=True)
class FileSlice:
    """Segments ``[start, stop)`` of the container at ``path`` (``segments`` in all)."""

    path: str
    start: int
    stop: int
    segments: int


def plan_slices(
    files: list[tuple[str, int, int]], target_bytes: int
) -> list[list[FileSlice]]:
    """Group ``(path, segment_count, segment_size)`` files into ~``target_bytes`` partitions.

    Large files are cut at segment boundaries; consecutive small files share a partition.
    """
    partitions: list[list[FileSlice]] = []
    current: list[FileSlice] = []
    filled = 0
    for path, segments, segment_size in files:
        start = 0
        while start < segments:
            # Ceiling: a partition takes enough segments to reach the target, so a large file is
            # cut into equal slices instead of a slice plus a one-segment remainder.
            room = max(1, -(-(target_bytes - filled) // segment_size))
            stop = min(segments, start + room)
            current.append(FileSlice(path, start, stop, segments))
            filled += (stop - start) * segment_size
            start = stop
            if filled >= target_bytes:
                partitions.append(current)
                current, filled = [], 0
    if current:
        partitions.append(current)
    return partitions


CHUNK_SEGMENTS = 4


def owned_chunks(container: ContainerFile, start: int, stop: int,
                 chunk_segments: int = CHUNK_SEGMENTS) -> Iterator[bytes]:
    """The lines owned by segments ``[start, stop)`` (see module doc), a few segments at a time.

    Every chunk but the last ends with a newline, so each parses on its own; joined they are
    :func:`owned_text`. A task holds about ``chunk_segments`` segments at once whatever its
    partition size, so executor memory stays flat as inputs grow.
    """
    skipping = start > 0  # a split other than the first starts after its first newline
    carry = b""
    for first in range(start, stop, chunk_segments):
        data = container.read_segments(first, min(stop, first + chunk_segments))
        if skipping:
            newline = data.find(b"\n")
            if newline < 0:
                continue
            data = data[newline + 1 :]
            skipping = False
        data = carry + data if carry else data
        cut = data.rfind(b"\n") + 1
        if cut:
            yield data[:cut]
        carry = data[cut:]
    if skipping:
        return  # no newline in the whole split: its only line started in an earlier split
    # Finish the last line (or read the line starting right at the split's end).
    for segment in container.iter_segments(stop):
        newline = segment.find(b"\n")
        if newline >= 0:
            carry += segment[: newline + 1]
            break
        carry += segment
    if carry:
        yield carry


def owned_text(container: ContainerFile, start: int, stop: int) -> bytes:
    """The complete lines owned by segments ``[start, stop)`` of ``container`` (see module doc)."""
    return b"".join(owned_chunks(container, start, stop))


# -- parsing --------------------------------------------------------------------------------------

_FAST_NULLS = [""]


def _options(names: list[str], arrow_schema: pa.Schema) -> tuple[
    pacsv.ReadOptions, pacsv.ParseOptions, pacsv.ConvertOptions
]:
    read = pacsv.ReadOptions(column_names=names, use_threads=False, block_size=64 << 20)
    # Only the schema's columns are converted (and sent to Spark): a projection of the file.
    parse = pacsv.ParseOptions(delimiter=",", quote_char='"', double_quote=True,
                               newlines_in_values=False)
    # Spark reads an empty field as null (nullValue ""), for strings too.
    convert = pacsv.ConvertOptions(
        include_columns=arrow_schema.names,
        column_types={f.name: f.type for f in arrow_schema},
        null_values=_FAST_NULLS,
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
        true_values=["true", "True", "TRUE"],
        false_values=["false", "False", "FALSE"],
    )
    return read, parse, convert


def parse_csv(text: bytes, arrow_schema: pa.Schema, mode: str,
              file_columns: list[str] | None = None) -> pa.Table:
    """Parse complete CSV lines into a table of exactly ``arrow_schema``.

    ``file_columns`` names every column of the file, in order, when ``arrow_schema`` selects only
    some of them (default: the file's columns are exactly the schema's).

    Well-formed input takes pyarrow's vectorised parser. If it rejects the input, ``mode`` decides
    as in Spark: FAILFAST raises :class:`InputError`; PERMISSIVE re-parses row by row, padding
    short rows with nulls, dropping extra fields and turning unparseable values into nulls;
    DROPMALFORMED re-parses and drops every row that PERMISSIVE would have repaired.
    """
    names = file_columns if file_columns is not None else arrow_schema.names
    if not text.strip():
        return arrow_schema.empty_table()
    read, parse, convert = _options(names, arrow_schema)
    try:
        return pacsv.read_csv(pa.py_buffer(text), read, parse, convert)
    except pa.ArrowInvalid as exc:
        if mode == "FAILFAST":
            # pyarrow appends the offending row after the last ": "; keep it out of the message.
            reason = ": ".join(str(exc).split(": ")[:2])
            raise InputError(f"malformed CSV record (mode FAILFAST): {reason}") from exc
    return _parse_slow(text, arrow_schema, names, drop_malformed=mode == "DROPMALFORMED")


def _converter(kind: pa.DataType) -> Callable[[str], Any]:
    if pa.types.is_integer(kind):
        bits = kind.bit_width

        def to_int(value: str) -> int:
            number = int(value.strip())
            if not -(1 << (bits - 1)) <= number < 1 << (bits - 1):
                raise ValueError("out of range")
            return number

        return to_int
    if pa.types.is_floating(kind):
        return lambda value: float(value.strip())
    if pa.types.is_boolean(kind):
        def to_bool(value: str) -> bool:
            lowered = value.strip().lower()
            if lowered not in ("true", "false"):
                raise ValueError("not a boolean")
            return lowered == "true"

        return to_bool
    if pa.types.is_date(kind):
        return lambda value: date.fromisoformat(value.strip())
    if pa.types.is_timestamp(kind):
        return lambda value: datetime.fromisoformat(value.strip())
    if pa.types.is_decimal(kind):
        def to_decimal(value: str) -> Decimal:
            try:
                return Decimal(value.strip())
            except InvalidOperation as exc:
                raise ValueError("not a decimal") from exc

        return to_decimal
    return str


def _parse_slow(text: bytes, arrow_schema: pa.Schema, file_columns: list[str], *,
                drop_malformed: bool) -> pa.Table:
    converters = [_converter(f.type) for f in arrow_schema]
    positions = [file_columns.index(name) for name in arrow_schema.names]
    width = len(file_columns)
    columns: list[list[Any]] = [[] for _ in converters]
    reader = csv.reader(io.StringIO(text.decode("utf-8", errors="replace")), strict=False)
    for fields in reader:
        if not fields:
            continue
        malformed = len(fields) != width
        values: list[Any] = []
        for i, convert in zip(positions, converters, strict=True):
            raw = fields[i] if i < len(fields) else ""
            if raw == "":
                values.append(None)
                continue
            try:
                value = convert(raw)
                if isinstance(value, float) and math.isnan(value) and raw.strip() != "NaN":
                    raise ValueError("nan")
                values.append(value)
            except (ValueError, OverflowError):
                malformed = True
                values.append(None)
        if malformed and drop_malformed:
            continue
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    arrays = [pa.array(col, type=f.type) for col, f in zip(columns, arrow_schema, strict=True)]
    return pa.Table.from_arrays(arrays, schema=arrow_schema)


def iter_batches(table: pa.Table, rows: int = 65536) -> Iterator[pa.RecordBatch]:
    """The table's record batches, at most ``rows`` each."""
    yield from table.to_batches(max_chunksize=rows)


def csv_header_line(names: list[str]) -> bytes:
    """A CSV header line, quoting a name only where RFC 4180 requires it (as Spark does)."""
    return (",".join(_quote_if_needed(n) for n in names) + "\n").encode()


def _quote_if_needed(value: str) -> str:
    if any(c in value for c in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


_UNQUOTED = pacsv.WriteOptions(include_header=False, quoting_style="none")
_QUOTED = pacsv.WriteOptions(include_header=False, quoting_style="needed")


def _has_empty_string(data: pa.RecordBatch | pa.Table) -> bool:
    for column, field in zip(data.columns, data.schema, strict=True):
        if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
            if pc.any(pc.equal(pc.utf8_length(column), 0)).as_py():
                return True
    return False


def csv_rows(data: pa.RecordBatch | pa.Table) -> bytes:
    """CSV lines for ``data`` without a header.

    Like Spark, values are quoted only when they must be. pyarrow's unquoted style refuses such
    values, so a batch holding one is written again with pyarrow's style that quotes every string.
    Empty strings must be written ``""`` (an empty field reads back as null, as in Spark), which
    the unquoted style cannot do either.
    """
    sink = pa.BufferOutputStream()
    try:
        pacsv.write_csv(data, sink, _QUOTED if _has_empty_string(data) else _UNQUOTED)
    except pa.ArrowInvalid:
        sink = pa.BufferOutputStream()
        pacsv.write_csv(data, sink, _QUOTED)
    return bytes(sink.getvalue().to_pybytes())
