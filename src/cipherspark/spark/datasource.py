"""``cipherspark_csv``: encrypted CSV as a Spark Python data source (stock PySpark 4.1+).

Reading yields pyarrow record batches and splits every container at segment boundaries, so one
large file spreads over many partitions. Writing encrypts each task's part file and publishes the
whole output directory with one rename at commit: a failed job or a failed or retried task leaves
no visible part, and the directory appears complete or not at all.

Options (all strings, as Spark passes them):

=================  ======================================================================
``path``           file or folder to read, folder to write (``load(path)`` / ``save(path)``)
``kms``            KMS URL (``file://...``); credentials come from the worker environment
``key``            (write) primary key that wraps the output's data key
``header``         ``true`` / ``false``; when reading, defaults to what the container says
``inferSchema``    (read) ``true`` to infer column types from the first segment
``mode``           (read) ``PERMISSIVE`` (default) / ``DROPMALFORMED`` / ``FAILFAST``
``fileColumns``    (read) JSON list of all the file's columns, when the schema selects some
``partitionBytes`` (read) target plaintext bytes per partition, default 128 MiB
``minPartitions``  (read) the session's cores: partitions come in whole waves of this many
``countRows``      (read) ``true``: yield record counts (schema ``rows bigint``), not records
``pushedFilters`` (read) JSON filters rows must pass (set by ``encrypted_sql``; see ``_filters``)
``segmentSize``    (write) ciphertext segment size, default 1 MiB
=================  ======================================================================
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
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
from pyspark.sql.types import IntegerType, LongType, StringType, StructField, StructType

from cipherspark._atomic import publish, remove_path
from cipherspark.crypto import (
    CONTENT_TYPE_CSV_HEADER,
    CONTENT_TYPE_CSV_NO_HEADER,
    DEFAULT_SEGMENT_SIZE,
    ContainerFile,
    ContainerHeader,
    EncryptingWriter,
    read_header,
)
from cipherspark.crypto.manifest import (
    Manifest,
    PartEntry,
    describe_part,
    list_parts,
    require_manifest,
    write_manifest,
)
from cipherspark.errors import InputError, OutputExistsError, UsageError
from cipherspark.spark._csv import (
    MODES,
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
from cipherspark.spark._filters import apply_filters, combine, filters_from_json

__all__ = ["FORMAT_NAME", "EncryptedCsvDataSource"]

FORMAT_NAME = "cipherspark_csv"
# Spark's own spark.sql.files.maxPartitionBytes default. A task streams its split a few segments
# at a time, so memory does not grow with it, while every task has a fixed cost (measured).
DEFAULT_PARTITION_BYTES = 128 << 20
_BATCH_ROWS = 1 << 17


def _flag(options: Mapping[str, str], name: str) -> bool | None:
    value = options.get(name)
    if value is None:
        return None
    lowered = value.strip().lower()
    if lowered not in ("true", "false"):
        raise UsageError(f"option {name} must be true or false, not {value!r}")
    return lowered == "true"


def _int_option(options: Mapping[str, str], name: str, default: int) -> int:
    value = options.get(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError as exc:
        raise UsageError(f"option {name} must be an integer, not {value!r}") from exc
    if number <= 0:
        raise UsageError(f"option {name} must be positive")
    return number


def _column_list(value: str) -> list[str]:
    try:
        names = json.loads(value)
    except ValueError as exc:
        raise UsageError("option fileColumns must be a JSON list of column names") from exc
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise UsageError("option fileColumns must be a JSON list of column names")
    return names


def _required(options: Mapping[str, str], name: str) -> str:
    value = options.get(name)
    if not value:
        raise UsageError(f"the {FORMAT_NAME} source needs the option {name!r}")
    return value


def _input_files(path: str, kms_url: str) -> list[str]:
    # Absolute (against the driver's folder): cluster executors run in their own work dirs.
    source = Path(path).absolute()
    if source.is_dir():
        parts = list_parts(source)
        if not parts:
            raise InputError(f"folder {source} holds no data files")
        require_manifest(
            source, lambda h: executor_data_key(kms_url, h.key_id, h.wrapped_key), parts
        )
        return [str(p) for p in parts]
    if not source.exists():
        raise InputError(f"{source} does not exist")
    return [str(source)]


def _open(path: str, kms_url: str) -> ContainerFile:
    with open(path, "rb") as f:
        header, _ = read_header(f)
    key = executor_data_key(kms_url, header.key_id, header.wrapped_key)
    return ContainerFile(path, key)


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
class _Partition(InputPartition):
    slices: tuple[FileSlice, ...]


class _Reader(DataSourceReader):
    def __init__(self, options: Mapping[str, str], schema: StructType) -> None:
        self.path = _required(options, "path")
        self.kms_url = _required(options, "kms")
        self.header = _flag(options, "header")
        self.mode = options.get("mode", "PERMISSIVE").upper()
        if self.mode not in MODES:
            raise UsageError(f"option mode must be one of {', '.join(MODES)}")
        self.partition_bytes = _int_option(options, "partitionBytes", DEFAULT_PARTITION_BYTES)
        self.min_partitions = _int_option(options, "minPartitions", 1)
        self.arrow_schema = to_arrow_schema(schema)
        if not self.arrow_schema.names:
            # parse_csv cannot carry a row count without columns (it would return no rows).
            raise UsageError("the schema must select at least one column")
        # Filters are options, so they belong to this relation alone: nothing a query pushes can
        # stick to a DataFrame and change the rows of the next query (see _filters' docstring).
        pushed = options.get("pushedFilters")
        try:
            self.filters = () if pushed is None else filters_from_json(pushed)
        except ValueError as exc:
            raise UsageError(f"option pushedFilters: {exc}") from exc
        columns = options.get("fileColumns")
        self.file_columns = None if columns is None else _column_list(columns)
        if self.file_columns is not None:
            unknown = [n for n in self.arrow_schema.names if n not in self.file_columns]
            if unknown:
                raise UsageError(f"column {unknown[0]!r} is not in fileColumns")

    def partitions(self) -> Sequence[InputPartition]:
        files = []
        total = 0
        for path in _input_files(self.path, self.kms_url):
            with open(path, "rb") as f:
                header, raw = read_header(f)
                size = os.fstat(f.fileno()).st_size
            segments = header.layout.segment_count(size - len(raw))
            files.append((path, segments, header.segment_size))
            total += size
        # Whole waves: as many partitions as cores (minPartitions), or a multiple of it, each at
        # most partitionBytes. 3 partitions on 2 cores would leave one core idle half the time.
        cores = self.min_partitions
        waves = max(1, -(-total // (cores * self.partition_bytes)))
        target = -(-total // (cores * waves))
        return [_Partition(tuple(group)) for group in plan_slices(files, max(1, target))]

    def _records(self, piece: FileSlice) -> Iterator[bytes]:
        """The CSV records (complete lines, header removed) that ``piece`` owns, in chunks."""
        container = _open(piece.path, self.kms_url)
        header = self.header if self.header is not None else container.header.csv_has_header
        skip_header = piece.start == 0 and header
        for chunk in owned_chunks(container, piece.start, piece.stop):
            if skip_header:
                skip_header = False
                newline = chunk.find(b"\n")
                chunk = b"" if newline < 0 else chunk[newline + 1 :]
            yield chunk

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        assert isinstance(partition, _Partition)
        expression = self._expression()
        for piece in partition.slices:
            for index, text in enumerate(self._records(piece)):
                try:
                    table = parse_csv(text, self.arrow_schema, self.mode, self.file_columns)
                except MalformedRecord as exc:
                    line = self._lines_before(piece, index) + exc.line
                    raise InputError(f"{piece.path}: line {line}: {exc}") from exc
                except InputError as exc:
                    raise InputError(f"{piece.path}: {exc}") from exc
                table = apply_filters(table, expression)
                yield from table.to_batches(max_chunksize=_BATCH_ROWS)

    def _lines_before(self, piece: FileSlice, index: int) -> int:
        """Lines of the file before chunk ``index`` of ``piece``: FAILFAST names the line of a
        malformed record. Only ever computed for that error, so it may decrypt the prefix."""
        container = _open(piece.path, self.kms_url)
        lines = 0
        if piece.start > 0:
            # Segments before the split, plus the line the split skips (an earlier split's).
            lines = sum(segment.count(b"\n") for segment in
                        itertools.islice(container.iter_segments(0), piece.start)) + 1
        header = self.header if self.header is not None else container.header.csv_has_header
        if piece.start == 0 and header:
            lines += 1
        for chunk in itertools.islice(self._records(piece), index):
            lines += chunk.count(b"\n")
        return lines

    def _expression(self) -> Any:
        # Built on the executor: the reader is pickled, Arrow expressions need not be.
        return combine(self.filters, self.arrow_schema)


COUNT_SCHEMA = StructType([StructField("rows", LongType(), False)])


class _CountingReader(_Reader):
    """Counts records without parsing them: one row per piece holding its record count.

    Spark's own CSV source answers ``count()`` without tokenising columns; this is the same fast
    path. A record is a non-empty line (Spark's CSV skips empty lines; multi-line values are not
    supported by either reader), so the count equals the row count of a PERMISSIVE read.
    """

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        assert isinstance(partition, _Partition)
        total = sum(count_records(chunk) for piece in partition.slices
                    for chunk in self._records(piece))
        yield pa.RecordBatch.from_arrays([pa.array([total], pa.int64())], names=["rows"])


@dataclass(frozen=True)
class _Committed(WriterCommitMessage):
    part: PartEntry | None


class _Writer(DataSourceArrowWriter):
    def __init__(self, options: Mapping[str, str], schema: StructType, overwrite: bool) -> None:
        self.path = Path(_required(options, "path")).absolute()
        self.kms_url = _required(options, "kms")
        self.key_id = _required(options, "key")
        header = _flag(options, "header")
        self.header = True if header is None else header
        self.segment_size = _int_option(options, "segmentSize", DEFAULT_SEGMENT_SIZE)
        self.overwrite = overwrite
        self.arrow_schema = to_arrow_schema(schema)
        if self.path.exists() and not overwrite:
            raise OutputExistsError(f"{self.path} exists already (use mode 'overwrite')")
        if not self.path.parent.is_dir():
            raise InputError(f"the output's folder {self.path.parent} does not exist")
        # One data key per written dataset; only its wrapped form travels to the tasks.
        self.wrapped_key = executor_kms(self.kms_url).generate_wrapped_data_key(self.key_id)
        self.staging = self.path.with_name(
            f".{self.path.name}.cipherspark-{uuid.uuid4().hex[:12]}.staging"
        )
        self.staging.mkdir(mode=0o700)

    def _container_header(self) -> ContainerHeader:
        return ContainerHeader(
            key_id=self.key_id,
            wrapped_key=self.wrapped_key,
            segment_size=self.segment_size,
            content_type=CONTENT_TYPE_CSV_HEADER if self.header else CONTENT_TYPE_CSV_NO_HEADER,
        )

    def write(self, iterator: Iterator[pa.RecordBatch]) -> _Committed:
        context = TaskContext.get()
        partition = context.partitionId() if context is not None else 0
        name = f"part-{partition:05d}-{uuid.uuid4().hex}.csv.cspk"
        data_key = executor_data_key(self.kms_url, self.key_id, self.wrapped_key)
        container = self._container_header()
        tmp = self.staging / f".{name}.inprogress"
        rows = 0
        try:
            with open(tmp, "xb") as out:
                writer = EncryptingWriter(out, container, data_key)
                if self.header:
                    writer.write(csv_header_line(self.arrow_schema.names))
                for batch in iterator:
                    if batch.num_rows:
                        writer.write(csv_rows(batch))
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
        parts = sorted((m.part for m in messages if isinstance(m, _Committed) and m.part),
                       key=lambda p: p.name)
        keep = {p.name for p in parts}
        # Parts of failed or speculative attempts that did not win are removed before publishing.
        for entry in self.staging.iterdir():
            if entry.name not in keep:
                remove_path(entry)
        write_manifest(self.staging, Manifest(tuple(parts)), self._container_header(),
                       executor_data_key(self.kms_url, self.key_id, self.wrapped_key))
        try:
            publish(self.staging, self.path, self.overwrite)
        except OutputExistsError:
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

    def schema(self) -> StructType:
        """Column names from the header line (or ``_c0``...), types strings or inferred."""
        options = self.options
        path = _required(options, "path")
        kms_url = _required(options, "kms")
        first = _input_files(path, kms_url)[0]
        container = _open(first, kms_url)
        text = owned_text(container, 0, 1)
        header = _flag(options, "header")
        if header is None:
            header = container.header.csv_has_header
        first_line = text.split(b"\n", 1)[0].rstrip(b"\r")
        try:
            fields = next(csv.reader([first_line.decode()]), [])
        except UnicodeDecodeError as exc:
            raise InputError(f"{first}: line 1 (the header) is not UTF-8 text") from exc
        names = fields if header else [f"_c{i}" for i in range(len(fields))]
        if not names:
            raise InputError(f"{first}: no CSV header or first line to take columns from")
        if not _flag(options, "inferSchema"):
            return StructType([StructField(n, StringType(), True) for n in names])
        body = text.split(b"\n", 1)[1] if header and b"\n" in text else text
        body = body[: body.rfind(b"\n") + 1]
        table = pacsv.read_csv(
            pa.py_buffer(body),
            pacsv.ReadOptions(column_names=names, use_threads=False),
            convert_options=pacsv.ConvertOptions(null_values=[""], strings_can_be_null=True),
        ) if body.strip() else None
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
        if _flag(self.options, "countRows"):
            if schema != COUNT_SCHEMA:
                raise UsageError("option countRows needs the schema 'rows bigint not null'")
            return _CountingReader(self.options, schema)
        return _Reader(self.options, schema)

    def writer(self, schema: StructType, overwrite: bool) -> DataSourceArrowWriter:
        """A writer that encrypts each task's part file."""
        return _Writer(self.options, schema, overwrite)
