"""Any Spark SQL over encrypted tables (encrypted CSV or encrypted Parquet, told apart by their
bytes), with the result written encrypted."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from cipherspark.errors import UsageError
from cipherspark.spark import (
    cipherspark_errors,
    encrypted_sql,
    read_encrypted_csv,
    read_encrypted_parquet,
    write_encrypted_csv,
    written_rows,
)
from cipherspark.spark.pme import is_parquet

__all__ = ["SqlResult", "read_table", "run_sql"]

_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


@dataclass(frozen=True)
class SqlResult:
    """The result's shape: its columns and the number of rows written."""

    columns: tuple[str, ...]
    rows: int


def read_table(
    spark: SparkSession,
    path: str,
    *,
    kms_url: str,
    infer_schema: bool = True,
    key: str | None = None,
    unsafe_skip_registry: bool = False,
) -> DataFrame:
    """The encrypted table at ``path``: encrypted Parquet (Parquet's magic in its files; read by
    Spark's Parquet reader, its schema the files') or cipherspark's encrypted CSV. ``key``
    refuses a table under another primary key; ``unsafe_skip_registry`` reads an encrypted
    CSV table the dataset registry does not name (Parquet is not registered)."""
    if is_parquet(Path(path)):
        return read_encrypted_parquet(spark, path, key=key)
    return read_encrypted_csv(
        spark,
        path,
        kms_url=kms_url,
        infer_schema=infer_schema,
        key=key,
        unsafe_skip_registry=unsafe_skip_registry,
    )


def run_sql(
    spark: SparkSession,
    query: str,
    tables: Mapping[str, str],
    output_path: str,
    *,
    kms_url: str,
    key: str,
    infer_schema: bool = True,
    overwrite: bool = False,
    input_key: str | None = None,
    unsafe_skip_registry: bool = False,
) -> SqlResult:
    """Register each encrypted table in ``tables`` (name -> path, see :func:`read_table`) as a
    view, run ``query`` (reading only the columns it uses, see
    :func:`~cipherspark.spark.encrypted_sql`), and write its result as encrypted CSV to
    ``output_path``. ``input_key`` refuses a table under another primary
    key (checked by the readers, where they decrypt)."""
    if not tables:
        raise UsageError("name at least one table (--table NAME=PATH)")
    frames = {}
    for name, path in tables.items():
        if not _TABLE_NAME.fullmatch(name):
            raise UsageError(f"invalid table name {name!r}")
        frames[name] = read_table(
            spark,
            path,
            kms_url=kms_url,
            infer_schema=infer_schema,
            key=input_key,
            unsafe_skip_registry=unsafe_skip_registry,
        )
    with cipherspark_errors():
        result = encrypted_sql(spark, query, frames)
        columns = tuple(result.columns)
    write_encrypted_csv(result, output_path, kms_url=kms_url, key=key, overwrite=overwrite)
    return SqlResult(columns=columns, rows=written_rows(output_path, kms_url=kms_url))
