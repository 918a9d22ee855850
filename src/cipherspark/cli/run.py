"""``cipherspark run APP.py [ARGS...]``: an unmodified PySpark application in a secure session.

A thin layer over :func:`cipherspark.jobs.application.run_application`: check the KMS, the key
and the tables before Spark starts (a KMS that is down, an unknown key or a tampered table is one
line, and nothing is written), start the secure session with Parquet encryption under ``--key``,
then run the application. Everything after ``APP.py`` is the application's.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Annotated

import typer

from cipherspark import settings
from cipherspark.cli._options import (
    DEFAULT_MASTER,
    ApiKeyFileOpt,
    ApiKeyOpt,
    AppIdOpt,
    KmsCaOpt,
    KmsOpt,
    MasterOpt,
    SparkPropertiesOpt,
)
from cipherspark.cli._services import credentials, open_service
from cipherspark.errors import AttestationError, UsageError

__all__ = ["app", "run"]

app = typer.Typer()

_PARQUET_PANEL = "Parquet"


def _column_keys(items: list[str]) -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for item in items:
        key, sep, columns = item.partition("=")
        if not sep or not key or not columns:
            raise UsageError(f"--column-key takes KEY=COLUMN[,COLUMN...], not {item!r}")
        keys.setdefault(key, []).extend(c.strip() for c in columns.split(","))
    return keys


# Options stop at APP.py: what follows is the application's, even if it looks like ours.
@app.command(context_settings={"allow_interspersed_args": False})
def run(
    script: Annotated[Path, typer.Argument(help="The PySpark application (a .py file).")],
    args: Annotated[
        list[str] | None, typer.Argument(help="The application's own arguments.")
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            envvar=settings.ENV_KEY,
            show_envvar=True,
            rich_help_panel=_PARQUET_PANEL,
            help="Primary key of the Parquet files the application writes (footer and every "
            "column not given another key). Required unless --unsafe-plaintext-parquet.",
        ),
    ] = None,
    column_key: Annotated[
        list[str] | None,
        typer.Option(
            "--column-key",
            rich_help_panel=_PARQUET_PANEL,
            help="KEY=COLUMN[,COLUMN...]: these columns of every Parquet write under KEY "
            "(readers without it still read the others); repeatable.",
        ),
    ] = None,
    unsafe_plaintext_parquet: Annotated[
        bool,
        typer.Option(
            "--unsafe-plaintext-parquet",
            rich_help_panel=_PARQUET_PANEL,
            help="Write Parquet in plaintext (anyone who can read the files reads every value).",
        ),
    ] = False,
    table: Annotated[
        list[str] | None,
        typer.Option(
            "--table", "-t", help="NAME=PATH: an encrypted CSV table as a view; repeatable."
        ),
    ] = None,
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

    Every Parquet file it writes is encrypted under --key; encrypted Parquet reads as is.

    Its exit status is this command's.
    """
    from cipherspark.cli._spark import spark_log
    from cipherspark.files import verify_input
    from cipherspark.jobs.application import parse_tables, run_application
    from cipherspark.settings import ExecutorConfig
    from cipherspark.spark import secure_session
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
    columns = _column_keys(column_key or [])
    creds = credentials(app_id, api_key)
    # Before Spark starts: the KMS answers, the keys exist, the tables verify.
    with open_service(kms, kms_ca, creds) as service:
        for name in filter(None, [key, *columns]):
            service.describe_key(name)
        for path in tables.values():
            verify_input(path, service)
        kms_url = service.url
    parquet = None if key is None else ParquetEncryption(kms_url, key, columns)
    executor = ExecutorConfig.from_environ(os.environ)
    if kms_ca is not None:
        executor = dataclasses.replace(executor, kms_ca=kms_ca.absolute())
    spark = secure_session(
        master=master,
        app_name=script.stem,
        credentials=creds,
        properties_file=spark_properties,
        log_file=spark_log(Path(".cipherspark")),
        executor=executor,
        parquet=parquet,
        unsafe_plaintext_parquet=unsafe_plaintext_parquet,
    )
    try:
        code = run_application(spark, script, args or [], tables=tables, kms_url=kms_url)
    except AttestationError as exc:
        # The reason is the part users act on; the CLI's error line shows only the message.
        raise type(exc)(f"attested key release refused ({exc.reason}): {exc}", exc.reason) from exc
    if code:
        raise typer.Exit(code)
