"""Reading and writing encrypted tables as DataFrames: encrypted CSV through the
``cipherspark_csv`` source, encrypted Parquet through Spark's own reader (public through
:mod:`cipherspark.spark`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from pyspark.sql import DataFrame, DataFrameReader, SparkSession
from pyspark.sql.types import StructType

from cipherspark.crypto.manifest import read_manifest
from cipherspark.errors import InputError, UsageError
from cipherspark.spark._conf import conf_bytes
from cipherspark.spark._errors import cipherspark_errors
from cipherspark.spark._executor import executor_data_key
from cipherspark.spark.datasource import COUNT_SCHEMA, FORMAT_NAME

__all__ = [
    "count_encrypted_csv",
    "read_encrypted_csv",
    "read_encrypted_parquet",
    "write_encrypted_csv",
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
