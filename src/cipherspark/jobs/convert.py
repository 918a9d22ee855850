"""Conversions between plaintext files and encrypted Parquet, through a secure session.

``cipherspark encrypt --to parquet`` reads plaintext CSV with Spark's own CSV reader (header and
schema inference, as ``sql`` reads encrypted CSV) and writes it as Parquet, which the session
encrypts (Parquet Modular Encryption under its key). ``cipherspark decrypt`` of an encrypted
Parquet table writes one plaintext CSV file or a plaintext Parquet folder (the explicit opt-out,
:func:`~cipherspark.spark.pme.unsafe_plaintext_parquet_options`).

Every output is published atomically (:mod:`cipherspark._atomic`): Spark writes into a hidden
staging folder beside the output, renamed into place only when the job succeeded; on failure
the staging folder is removed and the output does not exist.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from cipherspark._atomic import atomic_output, atomic_output_dir
from cipherspark.errors import InputError, UsageError
from cipherspark.spark import read_encrypted_parquet
from cipherspark.spark._errors import cipherspark_errors
from cipherspark.spark.pme import (
    unsafe_plaintext_parquet_options,
    unsafe_plaintext_parquet_read_options,
)

__all__ = ["ConvertResult", "csv_to_parquet", "parquet_to_plaintext"]

#: What ``decrypt`` of encrypted Parquet may write.
PLAINTEXT_FORMATS = ("csv", "parquet")


@dataclass(frozen=True)
class ConvertResult:
    """The rows written and the number of data files they are in."""

    rows: int
    files: int


def _parts(folder: Path, suffix: str) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(suffix))


def csv_to_parquet(
    spark: SparkSession,
    src: Path,
    dst: Path,
    *,
    overwrite: bool = False,
    schema: str | None = None,
) -> ConvertResult:
    """Read the plaintext CSV file (or folder of CSV files) ``src`` (header; types from
    ``schema``, Spark DDL, or inferred) and write it as Parquet folder ``dst``, encrypted by
    ``spark``'s Parquet encryption."""
    if not src.exists():
        raise InputError(f"{src} does not exist")
    with cipherspark_errors():
        reader = spark.read.option("header", "true")
        if schema is None:
            reader = reader.option("inferSchema", "true")
        else:
            reader = reader.schema(schema)
        frame = reader.csv(str(src.absolute()))
        with atomic_output_dir(dst.absolute(), overwrite=overwrite) as staging:
            frame.write.mode("overwrite").parquet(str(staging))
            files = len(_parts(staging, ".parquet"))
            # From the footers just written (row counts: no pass over the data).
            # Its own plaintext output, just written: the named opt-out of the readers' refusal.
            back = spark.read.options(**unsafe_plaintext_parquet_read_options())
            rows = back.parquet(str(staging)).count()
    return ConvertResult(rows=rows, files=files)


def _write_one_csv(frame: DataFrame, dst: Path, overwrite: bool) -> None:
    """``frame`` as one CSV file ``dst`` (header once), written atomically."""
    with atomic_output(dst, overwrite=overwrite) as out:
        # Spark's CSV writer makes a folder of parts: one part, beside the output, hidden.
        scratch = dst.with_name(f".{dst.name}.parts.tmp")
        try:
            frame.coalesce(1).write.mode("overwrite").option("header", "true").csv(str(scratch))
            for part in _parts(scratch, ".csv"):
                with part.open("rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def parquet_to_plaintext(
    spark: SparkSession,
    src: Path,
    dst: Path,
    *,
    to: str = "csv",
    key: str | None = None,
    overwrite: bool = False,
) -> ConvertResult:
    """Decrypt the encrypted Parquet table ``src`` into one plaintext CSV file ``dst`` (header
    once; ``to="csv"``) or a plaintext Parquet folder (``to="parquet"``). ``key`` refuses a
    table under another footer key (see :func:`~cipherspark.spark.read_encrypted_parquet`)."""
    if to not in PLAINTEXT_FORMATS:
        raise UsageError(f"cannot decrypt Parquet to {to!r} (choose from csv, parquet)")
    frame = read_encrypted_parquet(spark, str(src), key=key)
    with cipherspark_errors():
        if to == "csv":
            _write_one_csv(frame, dst.absolute(), overwrite)
            return ConvertResult(rows=frame.count(), files=1)
        with atomic_output_dir(dst.absolute(), overwrite=overwrite) as staging:
            plain = frame.write.options(**unsafe_plaintext_parquet_options())
            plain.mode("overwrite").parquet(str(staging))
            files = len(_parts(staging, ".parquet"))
            # Its own plaintext output, just written: the named opt-out of the readers' refusal.
            back = spark.read.options(**unsafe_plaintext_parquet_read_options())
            rows = back.parquet(str(staging)).count()
    return ConvertResult(rows=rows, files=files)
