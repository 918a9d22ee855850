"""Any Spark SQL over encrypted tables (encrypted CSV, JSON Lines, text or Parquet, told apart by
their bytes: Parquet's magic, or the content type in the container's authenticated header),
with the result written encrypted."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from cipherspark.crypto import CONTENT_TYPE_JSON_LINES, CONTENT_TYPE_TEXT
from cipherspark.crypto.container import read_header
from cipherspark.crypto.manifest import list_parts
from cipherspark.errors import CipherSparkError, InputError, UsageError
from cipherspark.spark import (
    cipherspark_errors,
    encrypted_sql,
    read_encrypted_csv,
    read_encrypted_json,
    read_encrypted_parquet,
    read_encrypted_text,
    write_encrypted_csv,
    written_rows,
)
from cipherspark.spark.pme import is_parquet

__all__ = [
    "SqlResult",
    "check_schemas",
    "parse_schemas",
    "read_table",
    "run_sql",
    "table_content_type",
]

_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


@dataclass(frozen=True)
class SqlResult:
    """The result's shape: its columns and the number of rows written."""

    columns: tuple[str, ...]
    rows: int


def table_content_type(path: Path) -> str:
    """The content type recorded in the header of the encrypted file ``path``, or of a
    dataset folder's first part. Read without the key: the header is authenticated when the
    reader decrypts the container (it is the body's associated data), so a header changed in
    storage to pick another reader fails there."""
    first = path
    if path.is_dir():
        parts = list_parts(path)
        if not parts:
            raise InputError(f"folder {path} holds no data files")
        first = parts[0]
    try:
        with first.open("rb") as stream:
            header, _ = read_header(stream)
    except OSError as exc:
        raise InputError(f"cannot read {first}: {exc.strerror or exc}") from exc
    except CipherSparkError as exc:
        raise InputError(f"{first} is not a cipherspark container: {exc}") from exc
    return header.content_type


def read_table(
    spark: SparkSession,
    path: str,
    *,
    kms_url: str,
    infer_schema: bool = True,
    key: str | None = None,
    unsafe_skip_registry: bool = False,
    schema: str | None = None,
) -> DataFrame:
    """The encrypted table at ``path``: encrypted Parquet (Parquet's magic in its files; read by
    Spark's Parquet reader, its schema the files'), or a cipherspark container or dataset read
    by its content type: JSON Lines (Spark's JSON reader, schema inferred), text (one ``value``
    column) or CSV (anything else, as before content types named formats). ``key`` refuses a
    table under another primary key; ``unsafe_skip_registry`` reads a table the dataset
    registry does not name (Parquet is not registered). ``schema`` (Spark DDL, all of the
    table's columns in order) declares the columns' types of CSV and JSON instead of inferring
    them: dates as dates, money as decimals."""
    if is_parquet(Path(path)):
        if schema is not None:
            raise UsageError(f"{path} is Parquet, which carries its own schema: drop --schema")
        return read_encrypted_parquet(spark, path, key=key)
    try:
        content_type = table_content_type(Path(path))
    except InputError:
        content_type = None  # the CSV reader below reports what is wrong, as it always has
    if content_type == CONTENT_TYPE_JSON_LINES:
        return read_encrypted_json(
            spark,
            path,
            kms_url=kms_url,
            schema=schema,
            key=key,
            unsafe_skip_registry=unsafe_skip_registry,
        )
    if content_type == CONTENT_TYPE_TEXT:
        if schema is not None:
            raise UsageError(f"{path} is text, one 'value string' column: drop --schema")
        return read_encrypted_text(
            spark, path, kms_url=kms_url, key=key, unsafe_skip_registry=unsafe_skip_registry
        )
    return read_encrypted_csv(
        spark,
        path,
        kms_url=kms_url,
        schema=schema,
        infer_schema=infer_schema and schema is None,
        key=key,
        unsafe_skip_registry=unsafe_skip_registry,
    )


def parse_schemas(items: Sequence[str]) -> dict[str, str]:
    """``--schema NAME=DDL`` values as a mapping; :class:`UsageError` for a malformed one or a
    table named twice."""
    schemas: dict[str, str] = {}
    for item in items:
        name, sep, ddl = item.partition("=")
        name, ddl = name.strip(), ddl.strip()
        if not sep or not name or not ddl:
            raise UsageError(
                f"--schema takes NAME=DDL, e.g. 'people=name string, age int', not {item!r}"
            )
        if name in schemas:
            raise UsageError(f"--schema names table {name!r} twice")
        schemas[name] = ddl
    return schemas


def check_schemas(schemas: Mapping[str, str], tables: Mapping[str, object]) -> None:
    """:class:`UsageError` for a schema declared for a table that is not named."""
    for name in schemas:
        if name not in tables:
            raise UsageError(f"--schema {name}=...: no table {name!r} (--table {name}=PATH)")


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
    schemas: Mapping[str, str] | None = None,
) -> SqlResult:
    """Register each encrypted table in ``tables`` (name -> path, see :func:`read_table`) as a
    view, run ``query`` (reading only the columns it uses, see
    :func:`~cipherspark.spark.encrypted_sql`), and write its result as encrypted CSV to
    ``output_path``. ``input_key`` refuses a table under another primary
    key (checked by the readers, where they decrypt); ``schemas`` (name -> Spark DDL) declares
    tables' column types."""
    if not tables:
        raise UsageError("name at least one table (--table NAME=PATH)")
    schemas = schemas or {}
    check_schemas(schemas, tables)
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
            schema=schemas.get(name),
        )
    with cipherspark_errors():
        result = encrypted_sql(spark, query, frames)
        columns = tuple(result.columns)
    write_encrypted_csv(result, output_path, kms_url=kms_url, key=key, overwrite=overwrite)
    return SqlResult(columns=columns, rows=written_rows(output_path, kms_url=kms_url))
