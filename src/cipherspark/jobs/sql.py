"""Any Spark SQL over encrypted tables, with the result written encrypted."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from pyspark.sql import SparkSession

from cipherspark.errors import UsageError
from cipherspark.spark import (
    cipherspark_errors,
    encrypted_sql,
    read_encrypted_csv,
    write_encrypted_csv,
    written_rows,
)

__all__ = ["SqlResult", "run_sql"]

_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


@dataclass(frozen=True)
class SqlResult:
    """The result's shape: its columns and the number of rows written."""

    columns: tuple[str, ...]
    rows: int


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
) -> SqlResult:
    """Register each encrypted CSV in ``tables`` (name -> path) as a view, run ``query`` (reading
    only the columns it uses, see :func:`~cipherspark.spark.encrypted_sql`), and write its
    result encrypted to ``output_path``. ``input_key`` refuses a table under another primary
    key (checked by the readers, where they decrypt)."""
    if not tables:
        raise UsageError("name at least one table (--table NAME=PATH)")
    frames = {}
    for name, path in tables.items():
        if not _TABLE_NAME.fullmatch(name):
            raise UsageError(f"invalid table name {name!r}")
        frames[name] = read_encrypted_csv(
            spark, path, kms_url=kms_url, infer_schema=infer_schema, key=input_key
        )
    with cipherspark_errors():
        result = encrypted_sql(spark, query, frames)
        columns = tuple(result.columns)
    write_encrypted_csv(result, output_path, kms_url=kms_url, key=key, overwrite=overwrite)
    return SqlResult(columns=columns, rows=written_rows(output_path, kms_url=kms_url))
