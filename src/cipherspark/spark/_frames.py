"""Reading and writing encrypted tables as DataFrames: encrypted CSV through the
``cipherspark_csv`` source, text and JSON Lines through the ``cipherspark_text`` source (JSON
parsed by Spark's own JSON reader), encrypted Parquet through Spark's own reader (public through
:mod:`cipherspark.spark`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, DataFrameReader, SparkSession
from pyspark.sql.types import StructType

from cipherspark._ddl import struct_ddl
from cipherspark.crypto.manifest import open_dataset, read_manifest
from cipherspark.errors import InputError, UsageError
from cipherspark.spark._conf import conf_bytes
from cipherspark.spark._errors import cipherspark_errors
from cipherspark.spark._executor import executor_data_key
from cipherspark.spark.datasource import COUNT_SCHEMA, FORMAT_NAME, TEXT_FORMAT_NAME

__all__ = [
    "count_encrypted_csv",
    "read_encrypted_csv",
    "read_encrypted_json",
    "read_encrypted_parquet",
    "read_encrypted_text",
    "write_encrypted_csv",
    "write_encrypted_json",
    "write_encrypted_text",
    "written_rows",
]


def read_encrypted_csv(
    spark: SparkSession,
    path: str,
    *,
    kms_url: str,
    schema: StructType | str | None = None,
    header: bool | None = None,
    infer_schema: bool = False,
    mode: str = "PERMISSIVE",
    partition_bytes: int | None = None,
    columns: Sequence[str] | None = None,
    key: str | None = None,
    dataset_id: str | None = None,
    unsafe_skip_registry: bool = False,
) -> DataFrame:
    """A DataFrame over encrypted CSV at ``path`` (one container or a folder of parts).

    Partitions are at most ``partition_bytes`` (default: the session's
    ``spark.sql.files.maxPartitionBytes``, 128 MiB unless set, as for Spark's own file sources),
    and small inputs are split so that every core of the session gets work. With an explicit
    ``schema`` (all of the file's columns), ``columns`` selects some of them: only those are
    converted and handed to Spark, which Python data sources cannot otherwise prune (SQL through
    :func:`encrypted_sql` does this by itself). ``key`` refuses an input under another primary
    key, ``dataset_id`` a folder whose manifest names another dataset (the source's options
    ``key`` and ``datasetId``: checked when the read is planned, and by every part's check
    where it is decrypted). The input must be the commit the KMS's dataset registry names at
    its location, unless ``unsafe_skip_registry`` (docs/security.md, "Whole-dataset replay").
    """
    reader = (
        spark.read.format(FORMAT_NAME)
        .option("kms", kms_url)
        .option("mode", mode)
        .option("inferSchema", str(infer_schema).lower())
        .option("minPartitions", str(spark.sparkContext.defaultParallelism))
    )
    if header is not None:
        reader = reader.option("header", str(header).lower())
    reader = _pinned(reader, key, dataset_id, unsafe_skip_registry)
    if partition_bytes is None:
        partition_bytes = conf_bytes(spark, "spark.sql.files.maxPartitionBytes", 128 << 20)
    reader = reader.option("partitionBytes", str(partition_bytes))
    if columns is not None:
        if not isinstance(schema, StructType):
            raise UsageError("columns= needs the file's full schema as a StructType")
        missing = [name for name in columns if name not in schema.fieldNames()]
        if missing:
            raise UsageError(f"column {missing[0]!r} is not in the schema")
        reader = reader.option("fileColumns", json.dumps(schema.fieldNames()))
        schema = StructType([schema[name] for name in columns])
    if schema is not None:
        reader = reader.schema(schema)
    with cipherspark_errors():
        # Absolute: executors of a cluster run in their own work folders.
        return reader.load(str(Path(path).absolute()))


def read_encrypted_parquet(spark: SparkSession, path: str, *, key: str | None = None) -> DataFrame:
    """A DataFrame over the encrypted Parquet table at ``path`` (a file, or a folder of parts).

    Spark's own Parquet reader decrypts it (the session's Parquet encryption names the KMS).
    First, every file Spark would read must have an encrypted footer under one key, ``key`` if
    given (:func:`~cipherspark.spark.pme.check_encrypted_parquet`), and that key stays pinned:
    each file is checked again as it is read, where it is decrypted.
    """
    from cipherspark.spark.pme import FOOTER_KEY_PIN, check_encrypted_parquet

    table = Path(path).absolute()
    footer_key = check_encrypted_parquet(table, key_id=key)
    # The early check above is the driver's, once; storage could still change a file after it.
    # Pinned as a reader option, the footer key is checked again by each JVM that reads a file,
    # as it reads it (and plaintext files are refused there by the session's crypto factory).
    reader = spark.read.option(FOOTER_KEY_PIN, footer_key)
    with cipherspark_errors():
        return reader.parquet(str(table))


def _pinned(
    reader: DataFrameReader, key: str | None, dataset_id: str | None, unsafe_skip_registry: bool
) -> DataFrameReader:
    """``reader`` with the reader's pins as source options."""
    if unsafe_skip_registry:
        reader = reader.option("unsafeSkipRegistry", "true")
    if key is not None:
        reader = reader.option("key", key)
    if dataset_id is not None:
        reader = reader.option("datasetId", dataset_id)
    return reader


def count_encrypted_csv(
    spark: SparkSession,
    path: str,
    *,
    kms_url: str,
    header: bool | None = None,
    key: str | None = None,
    dataset_id: str | None = None,
    unsafe_skip_registry: bool = False,
) -> int:
    """Rows of the encrypted CSV at ``path``, counted without parsing columns.

    Equal to ``read_encrypted_csv(...).count()`` in PERMISSIVE mode, at a fraction of the cost
    (Spark's own CSV source has the same shortcut for ``count()``). ``key`` and ``dataset_id``
    pin the input, and ``unsafe_skip_registry`` skips the registry, as in
    :func:`read_encrypted_csv`.
    """
    reader = (
        spark.read.format(FORMAT_NAME)
        .option("kms", kms_url)
        .option("countRows", "true")
        .option("minPartitions", str(spark.sparkContext.defaultParallelism))
        .schema(COUNT_SCHEMA)
    )
    if header is not None:
        reader = reader.option("header", str(header).lower())
    reader = _pinned(reader, key, dataset_id, unsafe_skip_registry)
    with cipherspark_errors():
        row = reader.load(str(Path(path).absolute())).agg({"rows": "sum"}).collect()[0]
    return int(row[0] or 0)


def write_encrypted_csv(
    df: DataFrame,
    path: str,
    *,
    kms_url: str,
    key: str,
    header: bool = True,
    overwrite: bool = False,
) -> None:
    """Write ``df`` as encrypted CSV parts in folder ``path`` under a fresh data key."""
    writer = (
        df.write.format(FORMAT_NAME)
        .option("kms", kms_url)
        .option("key", key)
        .option("header", str(header).lower())
        .mode("overwrite" if overwrite else "append")
    )
    with cipherspark_errors():
        writer.save(str(Path(path).absolute()))


def written_rows(path: str, *, kms_url: str) -> int:
    """Rows committed to the encrypted dataset at ``path``, from its authenticated manifest."""
    manifest = read_manifest(
        Path(path), lambda h: executor_data_key(kms_url, h.key_id, h.wrapped_key)
    )
    if manifest is None:
        raise InputError(f"{path} has no dataset manifest (not written by cipherspark's Spark)")
    return manifest.rows


def read_encrypted_text(
    spark: SparkSession,
    path: str,
    *,
    kms_url: str,
    wholetext: bool = False,
    partition_bytes: int | None = None,
    key: str | None = None,
    dataset_id: str | None = None,
    unsafe_skip_registry: bool = False,
) -> DataFrame:
    """A DataFrame of one ``value`` column over encrypted text at ``path`` (a container or a
    folder of parts): a row per line, as ``spark.read.text`` gives for the plaintext, or a row
    per file with ``wholetext``. Splitting, pins (``key``, ``dataset_id``) and the registry check
    are those of :func:`read_encrypted_csv`."""
    return _text_lines(
        spark,
        path,
        kms_url=kms_url,
        wholetext=wholetext,
        partition_bytes=partition_bytes,
        key=key,
        dataset_id=dataset_id,
        unsafe_skip_registry=unsafe_skip_registry,
    )


def _text_lines(
    spark: SparkSession,
    path: str,
    *,
    kms_url: str,
    wholetext: bool,
    partition_bytes: int | None,
    key: str | None,
    dataset_id: str | None,
    unsafe_skip_registry: bool,
    manifest_digest: str | None = None,
) -> DataFrame:
    """:func:`read_encrypted_text`, optionally pinned to one commit (``manifestDigest``)."""
    reader = (
        spark.read.format(TEXT_FORMAT_NAME)
        .option("kms", kms_url)
        .option("minPartitions", str(spark.sparkContext.defaultParallelism))
        .option("wholetext", str(wholetext).lower())
    )
    reader = _pinned(reader, key, dataset_id, unsafe_skip_registry)
    if manifest_digest is not None:
        reader = reader.option("manifestDigest", manifest_digest)
    if partition_bytes is None:
        partition_bytes = conf_bytes(spark, "spark.sql.files.maxPartitionBytes", 128 << 20)
    reader = reader.option("partitionBytes", str(partition_bytes))
    with cipherspark_errors():
        return reader.load(str(Path(path).absolute()))


# JSON options that name a file layout the line reader fixes: UTF-8 lines, or whole files.
_LAYOUT_OPTIONS = ("encoding", "charset", "linesep")


def _option_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def read_encrypted_json(
    spark: SparkSession,
    path: str,
    *,
    kms_url: str,
    schema: StructType | str | None = None,
    options: Mapping[str, Any] | None = None,
    partition_bytes: int | None = None,
    key: str | None = None,
    dataset_id: str | None = None,
    unsafe_skip_registry: bool = False,
) -> DataFrame:
    """A DataFrame over encrypted JSON Lines at ``path``, exactly as ``spark.read.json`` reads
    the plaintext: the schema given (a ``StructType`` or DDL), else the one the dataset records
    (written by :func:`write_encrypted_json` or ``cipherspark encrypt --schema``), else inferred
    by Spark over the data; nested types, and Spark's JSON options (``mode``,
    ``columnNameOfCorruptRecord``, ``primitivesAsString``, ``timestampFormat``,
    ``samplingRatio``, ...; ``multiLine`` reads each file as one JSON document).

    Why through the text source: a Python data source must build its rows itself, and no
    Python parser gives Spark's answers (its type coercions, corrupt-record handling and
    inference). So the ``cipherspark_text`` source decrypts the lines inside the executor, with
    every check of :func:`read_encrypted_text`, and Spark's own JSON parser parses them in the
    same task, fed each line's bytes as its file reader feeds them (the JVM class
    ``org.cipherspark.spark.ExactJson``: the public ``json(Dataset[String])`` would answer
    differently for non-string values read as strings). The DataFrame reads the
    commit planned here, however often it is used.
    """
    json_options = {str(k): _option_text(v) for k, v in (options or {}).items()}
    lowered = {k.lower(): k for k in json_options}
    for name in _LAYOUT_OPTIONS:
        if name in lowered:
            raise UsageError(
                f"JSON option {lowered[name]!r} is not supported: encrypted JSON is UTF-8, "
                "one document per line (or per file, multiLine)"
            )
    multi_line = json_options.pop(lowered["multiline"], "false") if "multiline" in lowered else ""
    digest = None
    if schema is None:
        recorded = _recorded_schema(Path(path).absolute(), kms_url, key, dataset_id)
        if recorded is not None:
            # The lines are pinned to the commit whose schema this is: a dataset replaced in
            # between is refused, never read under another commit's columns.
            schema, digest = recorded
    lines = _text_lines(
        spark,
        path,
        kms_url=kms_url,
        wholetext=multi_line.strip().lower() == "true",
        partition_bytes=partition_bytes,
        key=key,
        dataset_id=dataset_id,
        unsafe_skip_registry=unsafe_skip_registry,
        manifest_digest=digest,
    )
    jvm = spark._jvm
    assert jvm is not None
    strings = getattr(lines._jdf, "as")(jvm.org.apache.spark.sql.Encoders.STRING())
    with cipherspark_errors():
        if isinstance(schema, StructType):
            jschema = jvm.org.apache.spark.sql.types.DataType.fromJson(schema.json())
        elif schema is not None:
            jschema = jvm.org.apache.spark.sql.types.StructType.fromDDL(schema)
        else:
            # Inference is Spark's own over the lines (TextInputJsonDataSource.inferFromDataset,
            # which its file reader calls too): it yields types only, no values.
            reader = spark._jsparkSession.read()
            for name, value in json_options.items():
                reader = reader.option(name, value)
            jschema = reader.json(strings).schema()
        jmap = jvm.java.util.HashMap()
        for name, value in json_options.items():
            jmap.put(name, value)
        # Not DataFrameReader.json(Dataset[String]): that one re-serialises a non-string value
        # read into a string column (12.50 -> "12.5"); ExactJson parses as the file reader does.
        jdf = jvm.org.cipherspark.spark.ExactJson.parse(
            spark._jsparkSession, lines._jdf, jmap, jschema
        )
        return DataFrame(jdf, spark)


def _recorded_schema(
    folder: Path, kms_url: str, key: str | None, dataset_id: str | None
) -> tuple[str, str] | None:
    """The schema a dataset folder's manifest records and that manifest's digest, or None (a
    single file, or a dataset that records none). The folder is checked as every reader
    checks it (the pins, the listing); the lines' reader checks it again, pinned to it."""
    if not folder.is_dir():
        return None
    with cipherspark_errors():
        dataset = open_dataset(
            folder,
            lambda h: executor_data_key(kms_url, h.key_id, h.wrapped_key),
            key_id=key,
            dataset_id=dataset_id,
        )
    if dataset.schema is None:
        return None
    return dataset.schema, dataset.manifest_sha256


def write_encrypted_text(
    df: DataFrame, path: str, *, kms_url: str, key: str, overwrite: bool = False
) -> None:
    """Write ``df`` (one string column) as encrypted lines in folder ``path``, as
    ``df.write.text`` writes the plaintext (a null as an empty line)."""
    _write_text(df, path, kms_url=kms_url, key=key, overwrite=overwrite, content="text")


def write_encrypted_json(
    df: DataFrame,
    path: str,
    *,
    kms_url: str,
    key: str,
    overwrite: bool = False,
    options: Mapping[str, Any] | None = None,
) -> None:
    """Write ``df`` as encrypted JSON Lines in folder ``path``: each row as ``df.write.json``
    writes it (Spark's own JSON generator, ``to_json``, with ``options`` such as
    ``ignoreNullFields`` or ``timestampFormat``), marked as JSON for the readers, with
    ``df``'s schema recorded in the manifest so that readers take its types as they are."""
    from pyspark.sql import functions as F

    json_options = {str(k): _option_text(v) for k, v in (options or {}).items()}
    lines = df.select(F.to_json(F.struct(F.col("*")), json_options).alias("value"))
    _write_text(
        lines,
        path,
        kms_url=kms_url,
        key=key,
        overwrite=overwrite,
        content="jsonLines",
        schema=struct_ddl(df.schema),
    )


def _write_text(
    df: DataFrame,
    path: str,
    *,
    kms_url: str,
    key: str,
    overwrite: bool,
    content: str,
    schema: str | None = None,
) -> None:
    writer = (
        df.write.format(TEXT_FORMAT_NAME)
        .option("kms", kms_url)
        .option("key", key)
        .option("contentType", content)
        .mode("overwrite" if overwrite else "append")
    )
    if schema is not None:
        writer = writer.option("schema", schema)
    with cipherspark_errors():
        writer.save(str(Path(path).absolute()))
