"""``cipherspark run APP.py [ARGS...]``: an unmodified PySpark application in a secure session.

A thin layer over :func:`cipherspark.jobs.application.run_application`: check the KMS, the key
and the tables before Spark starts (a KMS that is down, an unknown key or a tampered table is one
line, and nothing is written), start the secure session with Parquet encryption under ``--key``,
then run the application. Everything after ``APP.py`` is the application's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cipherspark.cli import _help
from cipherspark.cli._options import (
    DEFAULT_MASTER,
    ApiKeyFileOpt,
    ApiKeyOpt,
    AppIdOpt,
    ColumnKeyOpt,
    KmsCaOpt,
    KmsOpt,
    MasterOpt,
    ParquetKeyOpt,
    SchemaOpt,
    SparkPropertiesOpt,
    TableOpt,
    UnsafePlaintextOutputOpt,
    UnsafePlaintextParquetInputOpt,
    UnsafePlaintextParquetOpt,
    UnsafeSkipRegistryOpt,
)
from cipherspark.cli._services import credentials
from cipherspark.cli._spark import check_before_spark, session
from cipherspark.errors import AttestationError, UsageError

__all__ = ["app", "run"]

app = _help.Typer()


def _column_keys(items: list[str]) -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for item in items:
        key, sep, columns = item.partition("=")
        if not sep or not key or not columns:
            raise UsageError(f"--column-key takes KEY=COLUMN[,COLUMN...], not {item!r}")
        keys.setdefault(key, []).extend(c.strip() for c in columns.split(","))
    return keys


# Options stop at APP.py: what follows is the application's, even if it looks like ours.
@app.command(
    context_settings={"allow_interspersed_args": False},
    epilog=_help.examples(
        "cipherspark run --key simple examples/report.py people.parquet report.parquet",
        "cipherspark run --key simple --table people=people.csv.cspk app.py --top 10",
        "cipherspark run --unsafe-plaintext-parquet app.py",
    ),
)
def run(
    script: Annotated[Path, typer.Argument(help="The PySpark application (a .py file).")],
    args: Annotated[
        list[str] | None, typer.Argument(help="The application's own arguments.")
    ] = None,
    key: ParquetKeyOpt = None,
    column_key: ColumnKeyOpt = None,
    unsafe_plaintext_parquet: UnsafePlaintextParquetOpt = False,
    unsafe_plaintext_parquet_input: UnsafePlaintextParquetInputOpt = False,
    unsafe_plaintext_output: UnsafePlaintextOutputOpt = False,
    table: TableOpt = None,
    schema: SchemaOpt = None,
    unsafe_skip_registry: UnsafeSkipRegistryOpt = False,
    kms: KmsOpt = None,
    kms_ca: KmsCaOpt = None,
    app_id: AppIdOpt = None,
    api_key: ApiKeyOpt = None,
    api_key_file: ApiKeyFileOpt = None,
    master: MasterOpt = DEFAULT_MASTER,
    spark_properties: SparkPropertiesOpt = None,
) -> None:
    """Run an unmodified PySpark application on encrypted data.

    Its SparkSession.builder.getOrCreate() returns cipherspark's secure session.

    Every Parquet file it writes is encrypted under --key; encrypted Parquet reads as is,
    and plaintext Parquet files are refused unless --unsafe-plaintext-parquet-input.
    Spark's plaintext writers (CSV, JSON, ORC, text) are refused unless
    --unsafe-plaintext-output.

    Its exit status is this command's.
    """
    from cipherspark.jobs.application import parse_tables, run_application
    from cipherspark.jobs.sql import check_schemas, parse_schemas
    from cipherspark.spark.pme import ParquetEncryption

    if key is None and not unsafe_plaintext_parquet:
        raise UsageError(
            "name the key of the Parquet files the application writes (--key or "
            "CIPHERSPARK_KEY), or pass --unsafe-plaintext-parquet to write them in plaintext"
        )
    if key is not None and unsafe_plaintext_parquet:
        raise UsageError("give --key or --unsafe-plaintext-parquet, not both")
    if not script.is_file():
        raise UsageError(f"application {script} does not exist")
    tables = parse_tables(table or [])
    schemas = parse_schemas(schema or [])
    check_schemas(schemas, tables)
    columns = _column_keys(column_key or [])
    creds = credentials(app_id, api_key)
    # Before Spark starts: the KMS answers, the keys exist, the tables verify.
    kms_url = check_before_spark(
        kms,
        kms_ca,
        creds,
        keys=filter(None, [key, *columns]),
        inputs=tables.values(),
        unsafe_skip_registry=unsafe_skip_registry,
    )
    parquet = None if key is None else ParquetEncryption(kms_url, key, columns)
    spark = session(
        master,
        creds,
        script.stem,
        spark_properties,
        kms_ca,
        parquet=parquet,
        unsafe_plaintext_parquet=unsafe_plaintext_parquet,
        unsafe_plaintext_parquet_reads=unsafe_plaintext_parquet_input,
        unsafe_plaintext_writes=unsafe_plaintext_output,
    )
    try:
        code = run_application(
            spark,
            script,
            args or [],
            tables=tables,
            kms_url=kms_url,
            unsafe_skip_registry=unsafe_skip_registry,
            schemas=schemas,
        )
    except AttestationError as exc:
        # The reason is the part users act on; the CLI's error line shows only the message.
        raise type(exc)(f"attested key release refused ({exc.reason}): {exc}", exc.reason) from exc
    if code:
        raise typer.Exit(code)
