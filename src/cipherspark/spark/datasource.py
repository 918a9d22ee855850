"""``cipherspark_csv``: encrypted CSV as a Spark Python data source (stock PySpark 4.1+).

Reading yields pyarrow record batches and splits every container at segment boundaries, so one
large file spreads over many partitions. Writing encrypts each task's part file and publishes the
whole output directory with one rename at commit: a failed job or a failed or retried task leaves
no visible part, and the directory appears complete or not at all.

Options are described and parsed in ``_options`` (:class:`ReadOptions`, :class:`WriteOptions`).

Verify where you decrypt: planning checks a folder's manifest, its key and the reader's pins
(options ``key``, ``datasetId``) once, and every split carries its part's
:class:`~cipherspark.crypto.ExpectedPart` (size, header digest, header with key id and wrapped
key). The executor opens the part once and checks that descriptor against it before it unwraps
a key or decrypts a byte, so a part swapped on disk after planning is refused, not read.

One DataFrame, one dataset: every split also carries the commit planning read (a
:class:`~cipherspark.spark._options.LoadPin`: the manifest's digest, id and generation), and
:func:`~cipherspark.spark.encrypted_sql` pins the relations it re-plans to it (option
``manifestDigest``), so a dataset replaced between two queries of a DataFrame is refused.
"""

from __future__ import annotations

import csv
import itertools
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
from pyspark import TaskContext
from pyspark.sql.datasource import (
    DataSource,
    DataSourceArrowWriter,
    DataSourceReader,
    InputPartition,
    WriterCommitMessage,
)
from pyspark.sql.pandas.types import from_arrow_type, to_arrow_schema
from pyspark.sql.types import (
    BooleanType,
    ByteType,
    DateType,
    DecimalType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    ShortType,
    StringType,
    StructField,
    StructType,
)

from cipherspark._atomic import publish, remove_path
from cipherspark._dataset_registry import (
    check_file,
    check_folder,
    identity_for,
    register_folder,
    registered_at,
)
from cipherspark._ddl import struct_ddl
from cipherspark.crypto import (
    CONTENT_TYPE_CSV_HEADER,
    CONTENT_TYPE_CSV_NO_HEADER,
    CONTENT_TYPE_JSON_LINES,
    ContainerFile,
    ContainerHeader,
    EncryptingWriter,
    ExpectedPart,
)
from cipherspark.crypto.manifest import (
    Manifest,
    PartEntry,
    describe_part,
    open_dataset,
    write_manifest,
)
from cipherspark.errors import InputError, IntegrityError, OutputExistsError, UsageError
from cipherspark.spark._csv import (
    FileSlice,
    MalformedRecord,
    count_records,
    csv_header_line,
    csv_rows,
    owned_chunks,
    owned_text,
    parse_csv,
    plan_slices,
)
from cipherspark.spark._executor import executor_data_key, executor_kms
from cipherspark.spark._filters import apply_filters, combine
from cipherspark.spark._options import (
    FORMAT_NAME,
    TEXT_FORMAT_NAME,
    LoadPin,
    ReadOptions,
    WriteOptions,
)

__all__ = [
    "FORMAT_NAME",
    "TEXT_FORMAT_NAME",
    "TEXT_SCHEMA",
    "EncryptedCsvDataSource",
    "EncryptedTextDataSource",
]

_BATCH_ROWS = 1 << 17


def _data_key_for(kms_url: str) -> Callable[[ContainerHeader], bytes]:
    return lambda h: executor_data_key(kms_url, h.key_id, h.wrapped_key)


def _expected_parts(
    options: ReadOptions,
) -> tuple[tuple[ExpectedPart, ...], LoadPin, str | None]:
    """What every file of the input must be when an executor opens it, checked now: a folder's
    manifest, key binding and listing, and the options' pins (``key``, ``datasetId``,
    ``manifestDigest``); the commit read (its :class:`LoadPin`); and the schema that commit
    records (canonical DDL), if any."""
    # Absolute (against the driver's folder): cluster executors run in their own work dirs.
    source = Path(options.path).absolute()
    if source.is_dir():
        dataset = open_dataset(
            source,
            _data_key_for(options.kms_url),
            key_id=options.key_id,
            # With a digest pin the id is checked below, so that a replaced dataset gets one
            # message, whether it is another generation of the dataset or another dataset.
            dataset_id=None if options.manifest_digest is not None else options.dataset_id,
        )
        identity = dataset.identity
        pin = LoadPin(
            dataset.manifest_sha256,
            None if identity is None else identity.dataset_id,
            None if identity is None else identity.generation,
        )
        _check_loaded(source, pin, options)
        if not options.unsafe_skip_registry:
            check_folder(executor_kms(options.kms_url), source, dataset)
        return dataset.parts, pin, dataset.schema
    if options.dataset_id is not None:
        raise UsageError(f"{source} is a single file: it has no dataset id (option datasetId)")
    if options.dataset_generation is not None:
        raise UsageError(f"{source} is a single file: it has no generation (datasetGeneration)")
    # A single file has no manifest: the splits are bound to the file as planning saw it.
    part = ExpectedPart.of(source)
    if options.key_id is not None and part.header.key_id != options.key_id:
        raise IntegrityError(
            f"{source}: the file is under key {part.header.key_id!r}, not {options.key_id!r} "
            "(it may have been replaced by another file)"
        )
    if options.manifest_digest is not None and part.header_sha256 != options.manifest_digest:
        raise IntegrityError(f"the file at {source} changed since it was loaded")
    if not options.unsafe_skip_registry:
        check_file(executor_kms(options.kms_url), source, part)
    return (part,), LoadPin(part.header_sha256), None


def _check_loaded(source: Path, now: LoadPin, options: ReadOptions) -> None:
    """Refuse a folder that is not the commit the options pin (``manifestDigest``, with the id
    that commit names in ``datasetId``): the relation it was loaded as read another one."""
    if options.manifest_digest is None:
        return
    loaded_id = options.dataset_id
    if now.digest == options.manifest_digest:
        if loaded_id is not None and now.dataset_id != loaded_id:
            # Only inconsistent options get here: the digest names a manifest of another id.
            raise IntegrityError(
                f"{source}: option manifestDigest names a commit that is not dataset {loaded_id}"
            )
        return
    if now.dataset_id is None:
        change = "its manifest is not the one loaded"
    elif loaded_id is not None and now.dataset_id != loaded_id:
        change = f"dataset {loaded_id} -> {now.dataset_id}"
    elif options.dataset_generation is not None:
        change = f"generation {options.dataset_generation} -> {now.generation}"
    else:
        change = f"now generation {now.generation}"
    raise IntegrityError(f"the dataset at {source} changed since it was loaded ({change})")


# The column types whose CSV text the reader parses and the writer writes as Spark's CSV source
# does (tests/spark/test_differential.py). Others are refused by name rather than read with
# other semantics: timestamps (Spark parses them in the session's time zone, with its own
# lenient formats; not implemented), and what Spark's CSV source refuses itself (binary,
# arrays, maps, structs, intervals, variants).
_CSV_TYPES = (
    StringType,
    BooleanType,
    ByteType,
    ShortType,
    IntegerType,
    LongType,
    FloatType,
    DoubleType,
    DecimalType,
    DateType,
)


def _csv_arrow_schema(schema: StructType) -> pa.Schema:
    """``schema`` as Arrow, if every column is of a type encrypted CSV reads and writes as
    Spark does; :class:`UsageError` naming the first that is not."""
    for field in schema.fields:
        if not isinstance(field.dataType, _CSV_TYPES):
            raise UsageError(
                f"column {field.name!r} is {field.dataType.simpleString()}: encrypted CSV holds "
                "strings, booleans, numbers, decimals and dates (read it as a string, or keep "
                "such columns in encrypted Parquet or JSON)"
            )
    return to_arrow_schema(schema)


def _open(part: ExpectedPart, kms_url: str) -> ContainerFile:
    """The part, opened once and checked against ``part`` before its key is unwrapped."""
    return ContainerFile(part.path, _data_key_for(kms_url), expected=part)


def _spark_type(arrow_type: pa.DataType, sample: pa.Array) -> Any:
    # Spark's CSV inference picks int when every value fits in 32 bits.
    if pa.types.is_integer(arrow_type):
        import pyarrow.compute as pc

        bounds = pc.min_max(sample)
        low, high = bounds["min"].as_py(), bounds["max"].as_py()
        fits = low is None or (-(1 << 31) <= low and high < (1 << 31))
        return IntegerType() if fits else LongType()
    try:
        return from_arrow_type(arrow_type)
    except Exception:  # types Spark cannot take (e.g. time32) stay strings
        return StringType()


@dataclass(frozen=True)
class _Piece:
    """Segments of one file, and what that file must be (checked where it is decrypted)."""

    slice: FileSlice
    part: ExpectedPart


@dataclass(frozen=True)
class _Partition(InputPartition):
    pieces: tuple[_Piece, ...]
    #: The commit the relation's read was planned over: encrypted_sql pins its re-plans to it.
    pin: LoadPin


class _Reader(DataSourceReader):
    def __init__(self, options: ReadOptions, schema: StructType) -> None:
        self.options = options
        self.kms_url = options.kms_url
        self.header = options.header
        self.mode = options.mode
        self.partition_bytes = options.partition_bytes
        self.min_partitions = options.min_partitions
        # Filters are options, so they belong to this relation alone: nothing a query pushes can
        # stick to a DataFrame and change the rows of the next query (see _filters' docstring).
        self.filters = options.filters
        self.file_columns = options.file_columns
        self.arrow_schema = _csv_arrow_schema(schema)
        if not self.arrow_schema.names:
            # parse_csv cannot carry a row count without columns (it would return no rows).
            raise UsageError("the schema must select at least one column")
        if self.file_columns is not None:
            unknown = [n for n in self.arrow_schema.names if n not in self.file_columns]
            if unknown:
                raise UsageError(f"column {unknown[0]!r} is not in fileColumns")

    def partitions(self) -> Sequence[InputPartition]:
        expected, pin, _ = _expected_parts(self.options)
        parts = {p.path: p for p in expected}
        if self.options.wholetext:
            # One row per file: each file is one partition, as in Spark's text source.
            return [
                _Partition(
                    (_Piece(FileSlice(p.path, 0, p.segment_count, p.segment_count), p),), pin
                )
                for p in parts.values()
            ]
        files = [(p.path, p.segment_count, p.header.segment_size) for p in parts.values()]
        total = sum(p.size for p in parts.values())
        # Whole waves: as many partitions as cores (minPartitions), or a multiple of it, each at
        # most partitionBytes. 3 partitions on 2 cores would leave one core idle half the time.
        cores = self.min_partitions
        waves = max(1, -(-total // (cores * self.partition_bytes)))
        target = -(-total // (cores * waves))
        return [
            _Partition(tuple(_Piece(s, parts[s.path]) for s in group), pin)
            for group in plan_slices(files, max(1, target))
        ]

    def _records(self, piece: _Piece) -> Iterator[bytes]:
        """The CSV records (complete lines, header removed) that ``piece`` owns, in chunks."""
        with _open(piece.part, self.kms_url) as container:
            header = self.header if self.header is not None else container.header.csv_has_header
            skip_header = piece.slice.start == 0 and header
            for chunk in owned_chunks(container, piece.slice.start, piece.slice.stop):
                if skip_header:
                    skip_header = False
                    newline = chunk.find(b"\n")
                    chunk = b"" if newline < 0 else chunk[newline + 1 :]
                yield chunk

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        assert isinstance(partition, _Partition)
        expression = self._expression()
        for piece in partition.pieces:
            path = piece.part.path
            for index, text in enumerate(self._records(piece)):
                try:
                    table = parse_csv(text, self.arrow_schema, self.mode, self.file_columns)
                except MalformedRecord as exc:
                    line = self._lines_before(piece, index) + exc.line
                    raise InputError(f"{path}: line {line}: {exc}") from exc
                except InputError as exc:
                    raise InputError(f"{path}: {exc}") from exc
                table = apply_filters(table, expression)
                yield from table.to_batches(max_chunksize=_BATCH_ROWS)

    def _lines_before(self, piece: _Piece, index: int) -> int:
        """Lines of the file before chunk ``index`` of ``piece``: FAILFAST names the line of a
        malformed record. Only ever computed for that error, so it may decrypt the prefix."""
        start = piece.slice.start
        with _open(piece.part, self.kms_url) as container:
            lines = 0
            if start > 0:
                # Segments before the split, plus the line the split skips (an earlier split's).
                segments = itertools.islice(container.iter_segments(0), start)
                lines = sum(segment.count(b"\n") for segment in segments) + 1
            has_header = container.header.csv_has_header
        header = self.header if self.header is not None else has_header
        if start == 0 and header:
            lines += 1
        for chunk in itertools.islice(self._records(piece), index):
            lines += chunk.count(b"\n")
        return lines

    def _expression(self) -> Any:
        # Built on the executor: the reader is pickled, Arrow expressions need not be.
        return combine(self.filters, self.arrow_schema)


COUNT_SCHEMA = StructType([StructField("rows", LongType(), False)])
_COUNT_ARROW = pa.schema([pa.field("rows", pa.int64(), nullable=False)])


class _CountingReader(_Reader):
    """Counts records without parsing them: one row per piece holding its record count.

    Spark's own CSV source answers ``count()`` without tokenising columns; this is the same fast
    path. A record is a non-empty line (Spark's CSV skips empty lines; multi-line values are not
    supported by either reader), so the count equals the row count of a PERMISSIVE read.
    """

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        assert isinstance(partition, _Partition)
        total = sum(
            count_records(chunk) for piece in partition.pieces for chunk in self._records(piece)
        )
        # Exactly COUNT_SCHEMA, nullability included: PySpark 4.3 checks it (4.1 did not).
        yield pa.RecordBatch.from_arrays([pa.array([total], pa.int64())], schema=_COUNT_ARROW)


@dataclass(frozen=True)
class _Committed(WriterCommitMessage):
    part: PartEntry | None


class _Writer(DataSourceArrowWriter):
    def __init__(self, options: WriteOptions, schema: StructType, overwrite: bool) -> None:
        self.path = Path(options.path).absolute()
        self.kms_url = options.kms_url
        self.key_id = options.key_id
        self.header = options.header
        self.segment_size = options.segment_size
        self.overwrite = overwrite
        self.arrow_schema = _csv_arrow_schema(schema)
        #: What the manifest records: the rows' schema, so that readers infer nothing.
        self.recorded_schema = self._recorded_schema(options, schema)
        if self.path.exists() and not overwrite:
            raise OutputExistsError(f"{self.path} exists already (use mode 'overwrite')")
        if not self.path.parent.is_dir():
            raise InputError(f"the output's folder {self.path.parent} does not exist")
        # One data key per written dataset; only its wrapped form travels to the tasks.
        kms = executor_kms(self.kms_url)
        self.wrapped_key = kms.generate_wrapped_data_key(self.key_id)
        # Read before any task writes: the compare-and-swap's previous record, at commit.
        self.previous = registered_at(kms, self.path)
        self.staging = self.path.with_name(
            f".{self.path.name}.cipherspark-{uuid.uuid4().hex[:12]}.staging"
        )
        self.staging.mkdir(mode=0o700)

    #: What the part files' names end with.
    suffix = ".csv.cspk"

    def _recorded_schema(self, options: WriteOptions, schema: StructType) -> str | None:
        """CSV: the DataFrame's own columns (``None`` if a type has no DDL spelling)."""
        return struct_ddl(schema)

    def _content_type(self) -> str:
        return CONTENT_TYPE_CSV_HEADER if self.header else CONTENT_TYPE_CSV_NO_HEADER

    def _first_lines(self) -> bytes:
        """What every part starts with (CSV: its header line, if written)."""
        return csv_header_line(self.arrow_schema.names) if self.header else b""

    def _lines(self, batch: pa.RecordBatch) -> bytes:
        return csv_rows(batch)

    def _container_header(self) -> ContainerHeader:
        return ContainerHeader(
            key_id=self.key_id,
            wrapped_key=self.wrapped_key,
            segment_size=self.segment_size,
            content_type=self._content_type(),
        )

    def write(self, iterator: Iterator[pa.RecordBatch]) -> _Committed:
        context = TaskContext.get()
        partition = context.partitionId() if context is not None else 0
        name = f"part-{partition:05d}-{uuid.uuid4().hex}{self.suffix}"
        data_key = executor_data_key(self.kms_url, self.key_id, self.wrapped_key)
        container = self._container_header()
        tmp = self.staging / f".{name}.inprogress"
        rows = 0
        try:
            with open(tmp, "xb") as out:
                writer = EncryptingWriter(out, container, data_key)
                writer.write(self._first_lines())
                for batch in iterator:
                    if batch.num_rows:
                        writer.write(self._lines(batch))
                        rows += batch.num_rows
                writer.close()
                out.flush()
                os.fsync(out.fileno())
            if rows == 0 and partition != 0:
                tmp.unlink()  # like Spark: empty tasks add no part, but one part always exists
                return _Committed(None)
            os.replace(tmp, self.staging / name)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return _Committed(describe_part(self.staging / name, rows))

    def commit(self, messages: list[WriterCommitMessage | None]) -> None:
        parts = sorted(
            (m.part for m in messages if isinstance(m, _Committed) and m.part), key=lambda p: p.name
        )
        keep = {p.name for p in parts}
        # Parts of failed or speculative attempts that did not win are removed before publishing.
        for entry in self.staging.iterdir():
            if entry.name not in keep:
                remove_path(entry)
        # Overwriting a dataset in place continues it: same id, next generation.
        identity = identity_for(
            self.path,
            self.key_id,
            overwrite=self.overwrite,
            previous=self.previous,
            data_key_for=_data_key_for(self.kms_url),
        )
        data_key = executor_data_key(self.kms_url, self.key_id, self.wrapped_key)
        try:
            write_manifest(
                self.staging,
                Manifest(tuple(parts), identity, self.recorded_schema),
                self._container_header(),
                data_key,
            )
            # Registered before it is published; refused (another writer committed first):
            # nothing is published, and the staging goes.
            register_folder(
                executor_kms(self.kms_url),
                self.path,
                self.staging,
                identity,
                previous=self.previous,
                wrapped_key=self.wrapped_key,
                data_key=data_key,
            )
            publish(self.staging, self.path, self.overwrite)
        except BaseException:
            shutil.rmtree(self.staging, ignore_errors=True)
            raise

    def abort(self, messages: list[WriterCommitMessage | None]) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


class EncryptedCsvDataSource(DataSource):
    """Encrypted CSV files (cipherspark containers) as the Spark data source ``cipherspark_csv``.

    Register with ``spark.dataSource.register(EncryptedCsvDataSource)``; the helpers
    :func:`cipherspark.spark.read_encrypted_csv` and :func:`cipherspark.spark.write_encrypted_csv`
    set the options.
    """

    @classmethod
    def name(cls) -> str:
        """The format name for ``spark.read.format(...)``."""
        return FORMAT_NAME

    def schema(self) -> StructType | str:
        """The columns the dataset records (its manifest's schema); else names from the header
        line (or ``_c0``...) and types strings or inferred (``inferSchema``)."""
        options = ReadOptions.parse(self.options)
        parts, _, recorded = _expected_parts(options)
        if recorded is not None:
            # Spark parses it (a DDL string is a schema here); authenticated with the manifest.
            return recorded
        first_part = parts[0]
        first = first_part.path
        with _open(first_part, options.kms_url) as container:
            text = owned_text(container, 0, 1)
            has_header = container.header.csv_has_header
        header = options.header
        if header is None:
            header = has_header
        first_line = text.split(b"\n", 1)[0].rstrip(b"\r")
        try:
            fields = next(csv.reader([first_line.decode()]), [])
        except UnicodeDecodeError as exc:
            raise InputError(f"{first}: line 1 (the header) is not UTF-8 text") from exc
        names = fields if header else [f"_c{i}" for i in range(len(fields))]
        if not names:
            raise InputError(f"{first}: no CSV header or first line to take columns from")
        if not options.infer_schema:
            return StructType([StructField(n, StringType(), True) for n in names])
        body = text.split(b"\n", 1)[1] if header and b"\n" in text else text
        body = body[: body.rfind(b"\n") + 1]
        table = (
            pacsv.read_csv(
                pa.py_buffer(body),
                pacsv.ReadOptions(column_names=names, use_threads=False),
                convert_options=pacsv.ConvertOptions(null_values=[""], strings_can_be_null=True),
            )
            if body.strip()
            else None
        )
        fields_out = []
        for i, name in enumerate(names):
            if table is None:
                fields_out.append(StructField(name, StringType(), True))
                continue
            column = table.column(i)
            fields_out.append(StructField(name, _spark_type(column.type, column), True))
        return StructType(fields_out)

    def reader(self, schema: StructType) -> DataSourceReader:
        """A reader for ``schema`` (the user's, or :meth:`schema`'s).

        It keeps no state between queries: whatever it filters or projects comes from this
        relation's options (``pushedFilters``, ``fileColumns``), never from a query.
        """
        options = ReadOptions.parse(self.options)
        if options.count_rows:
            if schema != COUNT_SCHEMA:
                raise UsageError("option countRows needs the schema 'rows bigint not null'")
            return _CountingReader(options, schema)
        return _Reader(options, schema)

    def writer(self, schema: StructType, overwrite: bool) -> DataSourceArrowWriter:
        """A writer that encrypts each task's part file."""
        return _Writer(WriteOptions.parse(self.options), schema, overwrite)


# -- cipherspark_text -----------------------------------------------------------------------------

#: Spark's text source's schema: one nullable string column ``value``.
TEXT_SCHEMA = StructType([StructField("value", StringType(), True)])
_TEXT_ARROW = to_arrow_schema(TEXT_SCHEMA)


def _split_lines(chunk: bytes) -> list[str]:
    """The lines of complete text, as Hadoop's ``LineReader`` cuts them for Spark's text source:
    at ``\\n``, ``\\r\\n`` or a lone ``\\r``, with no row after a final line end. Invalid UTF-8
    becomes U+FFFD, as Java's decoder makes it. (``str.splitlines`` would also cut at U+2028,
    form feeds and more, which Spark does not.)"""
    text = chunk.decode("utf-8", errors="replace")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


class _TextReader(_Reader):
    """Rows of one ``value`` column: the lines of the files (or each whole file, ``wholetext``),
    in file order, split at segment boundaries with the line ownership CSV uses."""

    def __init__(self, options: ReadOptions, schema: StructType) -> None:
        if schema != TEXT_SCHEMA:
            raise UsageError(f"the {TEXT_FORMAT_NAME} source's schema is 'value string'")
        self.options = options
        self.kms_url = options.kms_url
        self.partition_bytes = options.partition_bytes
        self.min_partitions = options.min_partitions

    def _text(self, piece: _Piece) -> Iterator[list[str]]:
        with _open(piece.part, self.kms_url) as container:
            if self.options.wholetext:
                data = b"".join(container.iter_segments(0))
                if data:  # Spark lists no empty file, so it has no row (measured, 4.3.0)
                    yield [data.decode("utf-8", errors="replace")]
                return
            for chunk in owned_chunks(container, piece.slice.start, piece.slice.stop):
                yield _split_lines(chunk)

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        assert isinstance(partition, _Partition)
        for piece in partition.pieces:
            for lines in self._text(piece):
                if lines:
                    table = pa.table([pa.array(lines, pa.string())], schema=_TEXT_ARROW)
                    yield from table.to_batches(max_chunksize=_BATCH_ROWS)


class _TextWriter(_Writer):
    """Writes a one-string-column DataFrame as lines (a null value as an empty line, as Spark's
    text writer does), under the content type the options name (text or JSON Lines)."""

    def __init__(self, options: WriteOptions, schema: StructType, overwrite: bool) -> None:
        if len(schema.fields) != 1 or not isinstance(schema.fields[0].dataType, StringType):
            # Spark's own text source refuses the same: it writes one string column.
            raise UsageError(
                f"the {TEXT_FORMAT_NAME} source writes one string column, "
                f"not {len(schema.fields)} column(s) of {schema.simpleString()}"
            )
        self.content_type = options.content_type
        self.suffix = ".json.cspk" if self.content_type == CONTENT_TYPE_JSON_LINES else ".txt.cspk"
        super().__init__(options, schema, overwrite)

    def _content_type(self) -> str:
        return self.content_type

    def _recorded_schema(self, options: WriteOptions, schema: StructType) -> str | None:
        """The lines' own schema is ``value string``; what they hold (JSON's columns) is what
        the writer says (option ``schema``)."""
        return options.schema

    def _first_lines(self) -> bytes:
        return b""

    def _lines(self, batch: pa.RecordBatch) -> bytes:
        import pyarrow.compute as pc

        values = pc.fill_null(batch.column(0), "")
        # All rows joined in one vectorised step (one list of every value, joined by newlines).
        rows = pa.ListArray.from_arrays(pa.array([0, len(values)], pa.int32()), values)
        joined = pc.binary_join(rows, "\n")[0].as_py()
        return str(joined).encode() + b"\n"


class EncryptedTextDataSource(DataSource):
    """Encrypted text files (cipherspark containers) as the Spark data source ``cipherspark_text``:
    Spark's text source over encrypted files (one ``value`` row per line, or per file with
    option ``wholetext``), with the same manifests, pins and checks as ``cipherspark_csv``.

    JSON Lines are read through it (:func:`cipherspark.spark.read_encrypted_json` hands the
    decrypted lines to Spark's own JSON reader) and written through it (option
    ``contentType`` ``jsonLines``).
    """

    @classmethod
    def name(cls) -> str:
        """The format name for ``spark.read.format(...)``."""
        return TEXT_FORMAT_NAME

    def schema(self) -> StructType:
        """``value string``. The input is checked now (manifest, pins, registry), so that a
        missing or wrong input fails at load, as Spark's own text source fails."""
        _expected_parts(ReadOptions.parse(self.options))
        return TEXT_SCHEMA

    def reader(self, schema: StructType) -> DataSourceReader:
        """A reader of the lines (or whole files) of the input."""
        return _TextReader(ReadOptions.parse(self.options), schema)

    def writer(self, schema: StructType, overwrite: bool) -> DataSourceArrowWriter:
        """A writer that encrypts each task's lines into a part file."""
        return _TextWriter(WriteOptions.parse(self.options), schema, overwrite)
