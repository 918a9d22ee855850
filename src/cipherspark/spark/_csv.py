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
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from cipherspark.crypto import ContainerFile
from cipherspark.crypto._records import count_records
from cipherspark.errors import InputError

__all__ = [
    "MODES",
    "FileSlice",
    "MalformedRecord",
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


def plan_slices(files: list[tuple[str, int, int]], target_bytes: int) -> list[list[FileSlice]]:
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


def owned_chunks(
    container: ContainerFile, start: int, stop: int, chunk_segments: int = CHUNK_SEGMENTS
) -> Iterator[bytes]:
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


def _options(
    names: list[str], arrow_schema: pa.Schema
) -> tuple[pacsv.ReadOptions, pacsv.ParseOptions, pacsv.ConvertOptions]:
    read = pacsv.ReadOptions(column_names=names, use_threads=False, block_size=64 << 20)
    # Only the schema's columns are converted (and sent to Spark): a projection of the file.
    parse = pacsv.ParseOptions(
        delimiter=",", quote_char='"', double_quote=True, newlines_in_values=False
    )
    # Spark reads an empty field as null (nullValue ""), for strings too.
    convert = pacsv.ConvertOptions(
        include_columns=arrow_schema.names,
        column_types={f.name: f.type for f in arrow_schema},
        null_values=_FAST_NULLS,
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,  # Spark reads "" as null too (measured, 4.1.4)
        true_values=["true", "True", "TRUE"],
        false_values=["false", "False", "FALSE"],
    )
    return read, parse, convert


class MalformedRecord(InputError):
    """A record FAILFAST refuses: ``line`` counts the lines of the parsed text from 1. The
    message says what is wrong, never the record's values (they may be sensitive)."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"malformed CSV record (mode FAILFAST): {reason}")
        self.line = line
        self.reason = reason


# Spark's CSV parses int, long, decimal and boolean values without trimming them (" 34 " is
# malformed there, measured on 4.1.4); pyarrow trims. Only text with a space next to a delimiter
# or a line end can hold such a value, so only then are those columns checked.
_SPACED = (b" ,", b", ", b" \n", b" \r", b"\n ")


def _strict(kind: pa.DataType) -> bool:
    return bool(pa.types.is_integer(kind) or pa.types.is_decimal(kind) or pa.types.is_boolean(kind))


def _has_spaced_values(text: bytes, names: list[str], arrow_schema: pa.Schema) -> bool:
    strict = [f.name for f in arrow_schema if _strict(f.type)]
    if not strict or not (text[:1] == b" " or any(p in text for p in _SPACED)):
        return False
    read, parse, _ = _options(names, arrow_schema)
    raw = pacsv.read_csv(
        pa.py_buffer(text),
        read,
        parse,
        pacsv.ConvertOptions(
            include_columns=strict,
            column_types={n: pa.string() for n in strict},
            null_values=_FAST_NULLS,
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
        ),
    )
    return any(
        pc.any(pc.not_equal(pc.utf8_trim_whitespace(col), col)).as_py() is True
        for col in raw.columns
    )


def parse_csv(
    text: bytes, arrow_schema: pa.Schema, mode: str, file_columns: Sequence[str] | None = None
) -> pa.Table:
    """Parse complete CSV lines into a table of exactly ``arrow_schema``, as Spark's CSV source
    parses them (the differential tests hold the two side by side).

    ``file_columns`` names every column of the file, in order, when ``arrow_schema`` selects only
    some of them (default: the file's columns are exactly the schema's).

    Well-formed input takes pyarrow's vectorised parser. If it rejects the input (or the input
    holds a value pyarrow would read more leniently than Spark), the text is parsed row by row
    with Spark's rules, and ``mode`` decides as in Spark: PERMISSIVE pads short rows with nulls,
    drops extra fields and turns unparseable values into nulls; DROPMALFORMED drops every row
    that PERMISSIVE would have repaired; FAILFAST raises :class:`MalformedRecord` for the first.
    Invalid UTF-8 becomes U+FFFD, as Java's decoder makes it.
    """
    names = list(file_columns) if file_columns is not None else list(arrow_schema.names)
    if not text.strip():
        return arrow_schema.empty_table()
    read, parse, convert = _options(names, arrow_schema)
    try:
        table = pacsv.read_csv(pa.py_buffer(text), read, parse, convert)
        if not _has_spaced_values(text, names, arrow_schema):
            return table
    except pa.ArrowInvalid:
        pass
    return _parse_slow(text, arrow_schema, names, mode)


def _java_int(bits: int) -> Callable[[str], int]:
    def to_int(value: str) -> int:
        # Integer.parseInt: an optional sign and ASCII digits, nothing else (no spaces).
        if not _INT.fullmatch(value):
            raise ValueError("not an integer")
        number = int(value)
        if not -(1 << (bits - 1)) <= number < 1 << (bits - 1):
            raise ValueError("out of range")
        return number

    return to_int


_INT = re.compile(r"[+-]?[0-9]+")
# java.math.BigDecimal(String): sign, digits with an optional point, optional exponent.
_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
# Double.parseDouble after Spark's nanValue / positiveInf / negativeInf ("NaN", "Inf", "-Inf"):
# Java trims, accepts Infinity and a float/double suffix (hexadecimal forms are left out).
_DOUBLE = re.compile(r"[+-]?(NaN|Infinity|([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?[fFdD]?)")
# DateTimeUtils.stringToDate, Spark's fallback for dates: trimmed, a year of 4+ digits, then
# optional -month and -day of 1-2 digits, then anything after a space or a 'T'.
_DATE = re.compile(r"([+-]?)([0-9]{4,})(?:-([0-9]{1,2})(?:-([0-9]{1,2}))?)?(?:[ T].*)?", re.DOTALL)


def _to_double(value: str) -> float:
    if value in ("NaN", "Inf", "-Inf"):
        return {"NaN": math.nan, "Inf": math.inf, "-Inf": -math.inf}[value]
    stripped = value.strip()
    if not _DOUBLE.fullmatch(stripped):
        raise ValueError("not a double")
    return float(stripped.rstrip("fFdD"))


def _to_date(value: str) -> date:
    match = _DATE.fullmatch(value.strip())
    if not match or match.group(1) == "-":
        raise ValueError("not a date")
    year, month, day = match.group(2), match.group(3) or "1", match.group(4) or "1"
    return date(int(year), int(month), int(day))


def _to_bool(value: str) -> bool:
    lowered = value.lower()  # Scala's toBoolean: case-insensitive, not trimmed
    if lowered not in ("true", "false"):
        raise ValueError("not a boolean")
    return lowered == "true"


def _converter(kind: pa.DataType) -> Callable[[str], Any]:
    if pa.types.is_integer(kind):
        return _java_int(kind.bit_width)
    if pa.types.is_floating(kind):
        return _to_double
    if pa.types.is_boolean(kind):
        return _to_bool
    if pa.types.is_date(kind):
        return _to_date
    if pa.types.is_timestamp(kind):
        return lambda value: datetime.fromisoformat(value.strip())
    if pa.types.is_decimal(kind):
        scale, precision = kind.scale, kind.precision
        quantum = Decimal(1).scaleb(-scale)

        def to_decimal(value: str) -> Decimal:
            if not _DECIMAL.fullmatch(value):
                raise ValueError("not a decimal")
            try:
                # Spark rounds to the column's scale half up, and a value that then needs more
                # digits than the precision is malformed (null in PERMISSIVE; measured).
                number = Decimal(value).quantize(quantum, rounding=ROUND_HALF_UP)
            except InvalidOperation as exc:
                raise ValueError("not a decimal") from exc
            if len(number.as_tuple().digits) > precision and number != 0:
                raise ValueError("too many digits")
            return number

        return to_decimal
    return str


def _parse_slow(
    text: bytes, arrow_schema: pa.Schema, file_columns: list[str], mode: str
) -> pa.Table:
    drop_malformed = mode == "DROPMALFORMED"
    converters = [_converter(f.type) for f in arrow_schema]
    positions = [file_columns.index(name) for name in arrow_schema.names]
    width = len(file_columns)
    columns: list[list[Any]] = [[] for _ in converters]
    reader = csv.reader(io.StringIO(text.decode("utf-8", errors="replace")), strict=False)
    for fields in reader:
        if not fields or fields == [""]:
            continue  # Spark skips empty lines
        problem = None if len(fields) == width else f"{len(fields)} fields, expected {width}"
        values: list[Any] = []
        for i, convert in zip(positions, converters, strict=True):
            raw = fields[i] if i < len(fields) else ""
            if raw == "":
                values.append(None)
                continue
            try:
                values.append(convert(raw))
            except (ValueError, OverflowError):
                problem = (
                    problem
                    or f"field {i + 1} ({file_columns[i]}) is not a valid "
                    f"{arrow_schema.field(file_columns[i]).type}"
                )
                values.append(None)
        if problem is not None:
            if mode == "FAILFAST":
                raise MalformedRecord(reader.line_num, problem)
            if drop_malformed:
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
