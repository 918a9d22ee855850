"""The data commands: ``generate``, ``encrypt``, ``decrypt``, ``query simple``, ``sql``, ``demo``.

A thin layer over :mod:`cipherspark.jobs.datagen`, :mod:`cipherspark.files` and
:mod:`cipherspark.jobs`. This Typer app has no name: its commands sit at the top of the
``cipherspark`` command.
"""

from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cipherspark import settings
from cipherspark.cli import _help
from cipherspark.cli._io import out as _out
from cipherspark.cli._io import progress
from cipherspark.cli._options import (
    DEFAULT_MASTER,
    DEFAULT_SEGMENT_SIZE,
    ApiKeyFileOpt,
    ApiKeyOpt,
    AppIdOpt,
    KeyOpt,
    KmsCaOpt,
    KmsOpt,
    MasterOpt,
    OutputFolderOpt,
    OverwriteOpt,
    SchemaOpt,
    SeedOpt,
    SegmentSizeOpt,
    SparkPropertiesOpt,
    UnsafeSkipRegistryOpt,
)
from cipherspark.cli._services import credentials, open_service
from cipherspark.cli._spark import check_before_spark, session, spark_log, spark_logs
from cipherspark.errors import UsageError
from cipherspark.kms import Credentials

if TYPE_CHECKING:
    from cipherspark.crypto.manifest import DatasetIdentity
    from cipherspark.spark.pme import ParquetEncryption

__all__ = ["app", "decrypt", "demo", "encrypt", "generate", "query_app", "query_simple", "sql"]

app = _help.Typer()
query_app = _help.Typer(
    help="Run the reference queries on encrypted data.",
    epilog=_help.examples(
        "cipherspark query simple --input people.csv.cspk --output developers.cspk --key simple"
    ),
    no_args_is_help=True,
)
app.add_typer(query_app, name="query")

# One default for the --rows of generate and demo; two options, because the demo's keeps its
# lower bound of 1,000 people.
_DEFAULT_ROWS = 1_000_000

# What a reader pins. Local to these commands (cli/_options.py holds the shared options): the
# shared --key names the key that wraps an output's data key, and is required; decrypt's --key
# is the key its input must be under, and optional (same flag and variable, for one habit).
ExpectedKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--key",
        metavar="NAME",
        envvar=settings.ENV_KEY,
        show_envvar=True,
        help="Refuse the input unless it is under this primary key (a file or dataset "
        "swapped for one under another key).",
    ),
]
DatasetIdOpt = Annotated[
    str | None,
    typer.Option(
        "--dataset-id",
        help="Refuse a folder unless its manifest names this dataset id ('encrypt' prints it): "
        "a dataset swapped for another one under the same key.",
    ),
]
InputKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--input-key",
        metavar="NAME",
        help="Primary key the inputs must be under (default: --key); an input under another "
        "key is refused.",
    ),
]


class EncryptedFormat(StrEnum):
    """What ``encrypt`` writes."""

    CONTAINER = "container"
    PARQUET = "parquet"


class InputFormat(StrEnum):
    """What the plaintext ``encrypt`` reads is: the content type its container records."""

    AUTO = "auto"
    CSV = "csv"
    CSV_NO_HEADER = "csv-no-header"
    JSON = "json"
    TEXT = "text"
    BINARY = "binary"


def _content_type(fmt: InputFormat) -> str | None:
    from cipherspark import crypto

    return {
        InputFormat.AUTO: None,
        InputFormat.CSV: crypto.CONTENT_TYPE_CSV_HEADER,
        InputFormat.CSV_NO_HEADER: crypto.CONTENT_TYPE_CSV_NO_HEADER,
        InputFormat.JSON: crypto.CONTENT_TYPE_JSON_LINES,
        InputFormat.TEXT: crypto.CONTENT_TYPE_TEXT,
        InputFormat.BINARY: crypto.CONTENT_TYPE_BINARY,
    }[fmt]


class PlaintextFormat(StrEnum):
    """What ``decrypt`` of encrypted Parquet writes."""

    CSV = "csv"
    PARQUET = "parquet"


def _parquet_reads(kms_url: str, key: str, inputs: list[str]) -> ParquetEncryption | None:
    """The session's Parquet encryption when an input is Parquet: it names the KMS that Spark's
    Parquet reader unwraps keys through (nothing is written as Parquet under ``key``)."""
    from cipherspark.spark.pme import ParquetEncryption, is_parquet

    if not any(is_parquet(Path(path)) for path in inputs):
        return None  # encrypted CSV only: no Parquet, no KMS client jar needed
    return ParquetEncryption(kms_url, key)


def _identity_line(identity: DatasetIdentity) -> str:
    return (
        f"dataset {identity.dataset_id} (generation {identity.generation}) "
        f"under key {identity.key_id}"
    )


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    return path.stat().st_size if path.exists() else 0


@app.command(
    epilog=_help.examples(
        "cipherspark generate people.csv",
        "cipherspark generate people.csv --rows 100000 --seed 1",
    )
)
def generate(
    out: Annotated[Path, typer.Argument(help="CSV file to write, e.g. people.csv.")],
    rows: Annotated[
        int, typer.Option("--rows", "-n", min=0, help="Number of people.")
    ] = _DEFAULT_ROWS,
    seed: SeedOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Generate the reference people.csv (name,age,job) and print the Simple Query's answer."""
    from cipherspark.jobs.datagen import generate_people

    with progress("generating", rows * 19) as advance:
        result = generate_people(
            out, rows, seed=seed, overwrite=overwrite, progress=lambda n: advance(n * 19)
        )
    _out.print(f"wrote {result.rows:,} rows ({result.size / 1e6:.1f} MB) to {out}")
    _out.print(f"Developers aged 20-40: {result.developers_20_40}")


@app.command(
    epilog=_help.examples(
        "cipherspark encrypt people.csv people.csv.cspk --key simple",
        "cipherspark encrypt people.csv people.parquet --key simple --to parquet",
        "cipherspark encrypt logs/ logs.cspk --key simple --format text",
    )
)
def encrypt(
    src: Annotated[Path, typer.Argument(help="Plaintext file, or folder of files.")],
    dst: Annotated[Path, typer.Argument(help="Encrypted file (or folder) to write.")],
    key: KeyOpt,
    kms: KmsOpt = None,
    kms_ca: KmsCaOpt = None,
    app_id: AppIdOpt = None,
    api_key: ApiKeyOpt = None,
    api_key_file: ApiKeyFileOpt = None,
    segment_size: SegmentSizeOpt = DEFAULT_SEGMENT_SIZE,
    to: Annotated[
        EncryptedFormat,
        typer.Option(
            "--to",
            help="container: cipherspark's encrypted container (any file); parquet: convert "
            "plaintext CSV (header, inferred schema) to Parquet encrypted with Parquet Modular "
            "Encryption, through a secure Spark session.",
        ),
    ] = EncryptedFormat.CONTAINER,
    fmt: Annotated[
        InputFormat,
        typer.Option(
            "--format",
            # The six choices, in the type column, would squeeze the help column of every
            # option: the help lists them.
            metavar="FORMAT",
            help="What the input is, recorded in the container for the readers (sql, run "
            "--table): auto, csv, csv-no-header, json, text or binary. auto takes it from the "
            "name (.csv: CSV with a header; .json, .jsonl, .ndjson: JSON Lines; .txt, .text, "
            ".log: text; anything else: binary).",
        ),
    ] = InputFormat.AUTO,
    schema: Annotated[
        str | None,
        typer.Option(
            "--schema",
            metavar="DDL",
            help="The columns' types, all columns in order, as Spark DDL (e.g. 'name string, "
            "age int, pay decimal(10,2), joined date'), recorded in the dataset for its "
            "readers (sql, run --table), which then infer nothing; CSV and JSON only. A file "
            "becomes a dataset folder of one part. With --to parquet: the types of the Parquet "
            "columns.",
        ),
    ] = None,
    master: MasterOpt = DEFAULT_MASTER,
    spark_properties: SparkPropertiesOpt = None,
    overwrite: OverwriteOpt = False,
    allow_encrypted_input: Annotated[
        bool,
        typer.Option(
            "--allow-encrypted-input",
            help="Encrypt an input that is a cipherspark container (or dataset) already; "
            "refused otherwise, as a likely slip.",
        ),
    ] = False,
) -> None:
    """Encrypt a file or folder under a fresh data key wrapped by primary key --key."""
    from cipherspark.files import encrypt_path

    if to is EncryptedFormat.PARQUET:
        if fmt not in (InputFormat.AUTO, InputFormat.CSV):
            raise UsageError("--to parquet converts CSV with a header: --format must be csv")
        _encrypt_to_parquet(
            src,
            dst,
            key,
            kms,
            kms_ca,
            credentials(app_id, api_key),
            master,
            spark_properties,
            overwrite,
            schema,
        )
        return
    with (
        open_service(kms, kms_ca, credentials(app_id, api_key)) as service,
        progress("encrypting", _size(src)) as advance,
    ):
        result = encrypt_path(
            src,
            dst,
            service,
            key,
            segment_size=segment_size,
            content_type=_content_type(fmt),
            overwrite=overwrite,
            progress=advance,
            allow_encrypted_input=allow_encrypted_input,
            schema=schema,
        )
    _out.print(f"encrypted {result.files} file(s), {result.plaintext_bytes:,} bytes -> {dst}")
    if result.dataset is not None:
        _out.print(_identity_line(result.dataset))


def _encrypt_to_parquet(
    src: Path,
    dst: Path,
    key: str,
    kms: str | None,
    kms_ca: Path | None,
    creds: Credentials,
    master: str,
    spark_properties: Path | None,
    overwrite: bool,
    schema: str | None,
) -> None:
    from cipherspark._atomic import check_output
    from cipherspark._ddl import canonical_ddl
    from cipherspark.files import check_not_the_input
    from cipherspark.jobs.convert import csv_to_parquet
    from cipherspark.spark.pme import ParquetEncryption

    if not src.exists():
        raise UsageError(f"{src} does not exist")
    check_not_the_input(src, dst)
    check_output(dst.absolute(), overwrite)
    if schema is not None:
        schema = canonical_ddl(schema)  # refused before Spark starts, not by its parser later
    kms_url = check_before_spark(kms, kms_ca, creds, keys=[key])
    spark = session(
        master,
        creds,
        "cipherspark-encrypt",
        spark_properties,
        kms_ca,
        parquet=ParquetEncryption(kms_url, key),
    )
    result = csv_to_parquet(spark, src, dst, overwrite=overwrite, schema=schema)
    _out.print(
        f"encrypted {result.rows:,} rows into {result.files} Parquet file(s) under key {key} "
        f"-> {dst}"
    )


def _decrypt_parquet(
    src: Path,
    dst: Path,
    to: PlaintextFormat,
    key: str | None,
    kms: str | None,
    kms_ca: Path | None,
    creds: Credentials,
    master: str,
    spark_properties: Path | None,
    overwrite: bool,
) -> None:
    from cipherspark._atomic import check_output
    from cipherspark.jobs.convert import parquet_to_plaintext
    from cipherspark.spark.pme import ParquetEncryption, check_encrypted_parquet

    check_output(dst.absolute(), overwrite)
    footer_key = check_encrypted_parquet(src, key_id=key)
    kms_url = check_before_spark(kms, kms_ca, creds, inputs=[src], input_key=key)
    # decrypt is the command whose output is plaintext: its session writes CSV with Spark's own
    # writer (refused in every other session).
    spark = session(
        master,
        creds,
        "cipherspark-decrypt",
        spark_properties,
        kms_ca,
        parquet=ParquetEncryption(kms_url, footer_key),
        unsafe_plaintext_writes=to is PlaintextFormat.CSV,
    )
    result = parquet_to_plaintext(spark, src, dst, to=to.value, key=footer_key, overwrite=overwrite)
    _out.print(
        f"decrypted {result.rows:,} rows of Parquet under key {footer_key} -> {dst} "
        f"(plaintext {to.value})"
    )


@app.command(
    epilog=_help.examples(
        "cipherspark decrypt developers.cspk developers.csv",
        "cipherspark decrypt people.csv.cspk people.csv --key simple",
        "cipherspark decrypt people.parquet people-plain.parquet --to parquet",
    )
)
def decrypt(
    src: Annotated[Path, typer.Argument(help="Encrypted file, or folder of encrypted parts.")],
    dst: Annotated[Path, typer.Argument(help="Plaintext file to write.")],
    key: ExpectedKeyOpt = None,
    dataset_id: DatasetIdOpt = None,
    kms: KmsOpt = None,
    kms_ca: KmsCaOpt = None,
    app_id: AppIdOpt = None,
    api_key: ApiKeyOpt = None,
    api_key_file: ApiKeyFileOpt = None,
    to: Annotated[
        PlaintextFormat | None,
        typer.Option(
            "--to",
            help="For encrypted Parquet: write one plaintext CSV file (csv, the default) or "
            "plaintext Parquet (parquet: anyone who can read the files reads every value).",
        ),
    ] = None,
    master: MasterOpt = DEFAULT_MASTER,
    spark_properties: SparkPropertiesOpt = None,
    overwrite: OverwriteOpt = False,
    unsafe_skip_registry: UnsafeSkipRegistryOpt = False,
) -> None:
    """Decrypt a file, or a folder of Spark parts into one file (CSV header written once).

    Every part is checked against the folder's manifest from the descriptor it is decrypted
    from; --key and --dataset-id refuse an input that is not the one expected, and an input
    that is not the dataset the KMS registered at its location (copied, moved, replaced or
    rolled back) is refused.

    An encrypted Parquet table (recognised from its bytes) is decrypted by a secure Spark
    session into plaintext CSV, or plaintext Parquet with --to parquet.
    """
    from cipherspark.crypto.manifest import check_dataset_id
    from cipherspark.files import decrypt_path
    from cipherspark.spark.pme import is_parquet

    if src.exists() and is_parquet(src):
        if dataset_id is not None:
            raise UsageError(f"{src} is Parquet: it has no dataset id to check (--dataset-id)")
        _decrypt_parquet(
            src,
            dst,
            to or PlaintextFormat.CSV,
            key,
            kms,
            kms_ca,
            credentials(app_id, api_key),
            master,
            spark_properties,
            overwrite,
        )
        return
    if to is not None:
        raise UsageError(f"--to is for encrypted Parquet; {src} is not Parquet")
    if dataset_id is not None:
        check_dataset_id(dataset_id)
    with (
        open_service(kms, kms_ca, credentials(app_id, api_key)) as service,
        progress("decrypting", _size(src)) as advance,
    ):
        result = decrypt_path(
            src,
            dst,
            service,
            key_id=key,
            dataset_id=dataset_id,
            overwrite=overwrite,
            progress=advance,
            unsafe_skip_registry=unsafe_skip_registry,
        )
    _out.print(f"decrypted {result.files} file(s), {result.plaintext_bytes:,} bytes -> {dst}")
    if result.dataset is not None:
        _out.print(_identity_line(result.dataset))


@query_app.command(
    "simple",
    epilog=_help.examples(
        "cipherspark query simple --input people.csv.cspk --output developers.cspk --key simple",
        "cipherspark query simple -i people.parquet -o developers-pq.cspk --key simple --show 5",
    ),
)
def query_simple(
    input: Annotated[
        Path,
        typer.Option(
            "--input", "-i", help="Encrypted people.csv (file or folder), or encrypted Parquet."
        ),
    ],
    output: OutputFolderOpt,
    key: KeyOpt,
    input_key: InputKeyOpt = None,
    kms: KmsOpt = None,
    kms_ca: KmsCaOpt = None,
    app_id: AppIdOpt = None,
    api_key: ApiKeyOpt = None,
    api_key_file: ApiKeyFileOpt = None,
    master: MasterOpt = DEFAULT_MASTER,
    spark_properties: SparkPropertiesOpt = None,
    show: Annotated[
        int,
        typer.Option(
            min=0,
            help="Print N rows of (name, age+1). Off by default: printed plaintext "
            "ends up in logs outside the TEE.",
        ),
    ] = 0,
    overwrite: OverwriteOpt = False,
    unsafe_skip_registry: UnsafeSkipRegistryOpt = False,
) -> None:
    """The reference Simple Query: count names, select Developers aged 20-40, write encrypted.

    The input must be under --input-key (default: --key).
    """
    from cipherspark._atomic import check_output
    from cipherspark.jobs import simple_query

    if not input.exists():
        raise UsageError(f"{input} does not exist")
    check_output(output.absolute(), overwrite)
    creds = credentials(app_id, api_key)
    # The driver checks the key exists and refuses an input under another key before Spark
    # starts; the job's tasks open the KMS themselves.
    kms_url = check_before_spark(
        kms,
        kms_ca,
        creds,
        keys=[key],
        inputs=[input],
        input_key=input_key or key,
        unsafe_skip_registry=unsafe_skip_registry,
    )
    spark = session(
        master,
        creds,
        "cipherspark-simple-query",
        spark_properties,
        kms_ca,
        parquet=_parquet_reads(kms_url, key, [str(input)]),
    )
    result = simple_query(
        spark,
        str(input),
        str(output),
        kms_url=kms_url,
        key=key,
        show=show,
        overwrite=overwrite,
        input_key=input_key or key,
        unsafe_skip_registry=unsafe_skip_registry,
    )
    _out.print(f"names: {result.names}")
    for name, age in result.shown:
        _out.print(f"{name}\t{age}")
    _out.print(f"Developers aged 20-40: {result.developers_20_40}")
    _out.print(f"wrote the encrypted selection to {output}")


@app.command(
    epilog=_help.examples(
        'cipherspark sql "SELECT job, count(*) AS n FROM people GROUP BY job" \\',
        "    --table people=people.csv.cspk --output by_job.cspk --key simple",
        'cipherspark sql "SELECT * FROM a JOIN b USING (id)" -t a=a.cspk -t b=b.parquet \\',
        "    -o joined.cspk --key simple --schema 'a=id int, name string'",
    )
)
def sql(
    query: Annotated[
        str, typer.Argument(help='Spark SQL, e.g. "SELECT job, count(*) FROM people GROUP BY job".')
    ],
    table: Annotated[
        list[str],
        typer.Option(
            "--table",
            "-t",
            metavar="NAME=PATH",
            help="NAME=PATH of an encrypted table (CSV, JSON Lines, text or Parquet: told from "
            "the data); repeatable.",
        ),
    ],
    output: OutputFolderOpt,
    key: KeyOpt,
    schema: SchemaOpt = None,
    input_key: InputKeyOpt = None,
    kms: KmsOpt = None,
    kms_ca: KmsCaOpt = None,
    app_id: AppIdOpt = None,
    api_key: ApiKeyOpt = None,
    api_key_file: ApiKeyFileOpt = None,
    master: MasterOpt = DEFAULT_MASTER,
    spark_properties: SparkPropertiesOpt = None,
    overwrite: OverwriteOpt = False,
    unsafe_skip_registry: UnsafeSkipRegistryOpt = False,
) -> None:
    """Run any Spark SQL over encrypted tables (CSV, JSON Lines, text or Parquet); the result is
    written as encrypted CSV.

    Every table must be under --input-key (default: --key).
    """
    from cipherspark._atomic import check_output
    from cipherspark.jobs import run_sql
    from cipherspark.jobs.sql import check_schemas, parse_schemas

    tables: dict[str, str] = {}
    for item in table:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--table takes NAME=PATH, not {item!r}")
        if not Path(path).exists():
            raise UsageError(f"table {name}: {path} does not exist")
        tables[name] = path
    schemas = parse_schemas(schema or [])
    check_schemas(schemas, tables)
    check_output(output.absolute(), overwrite)
    creds = credentials(app_id, api_key)
    kms_url = check_before_spark(
        kms,
        kms_ca,
        creds,
        keys=[key],
        inputs=tables.values(),
        input_key=input_key or key,
        unsafe_skip_registry=unsafe_skip_registry,
    )
    spark = session(
        master,
        creds,
        "cipherspark-sql",
        spark_properties,
        kms_ca,
        parquet=_parquet_reads(kms_url, key, list(tables.values())),
    )
    result = run_sql(
        spark,
        query,
        tables,
        str(output),
        kms_url=kms_url,
        key=key,
        overwrite=overwrite,
        input_key=input_key or key,
        unsafe_skip_registry=unsafe_skip_registry,
        schemas=schemas,
    )
    _out.print(f"wrote {result.rows} row(s) of ({', '.join(result.columns)}) encrypted to {output}")


@app.command(
    epilog=_help.examples(
        "cipherspark demo",
        "cipherspark demo --rows 10000 --workdir /tmp/demo --kms-server",
    )
)
def demo(
    rows: Annotated[
        int, typer.Option("--rows", "-n", min=1000, help="People to generate.")
    ] = _DEFAULT_ROWS,
    workdir: Annotated[
        Path, typer.Option(help="Folder for the demo's files, keystore and credentials.")
    ] = Path("demo"),
    seed: SeedOpt = None,
    master: MasterOpt = DEFAULT_MASTER,
    spark_properties: SparkPropertiesOpt = None,
    kms_server: Annotated[
        bool,
        typer.Option(
            "--kms-server",
            help="Run the flow through a real KMS server (TLS, 127.0.0.1) that the demo starts "
            "and stops, instead of the embedded keystore.",
        ),
    ] = False,
) -> None:
    """Run the whole encrypted flow on a laptop and verify it (exit 0 only if verified)."""
    from cipherspark.jobs.demo import DemoStep, run_demo

    _out.print(f"cipherspark demo: {rows:,} people, work folder {workdir}")
    started = time.perf_counter()

    def show(step: DemoStep) -> None:
        _out.print(f"  {step.name:<34} {step.seconds:7.2f} s   {step.detail}")

    report = run_demo(
        workdir,
        rows=rows,
        seed=seed,
        master=master,
        on_step=show,
        kms_server=kms_server,
        properties_file=spark_properties,
        spark_log=spark_log(workdir),
    )
    _out.print(f"  Spark's log: {spark_logs[-1]}")
    for name, ok in report.checks:
        _out.print(f"  [{'ok' if ok else 'FAILED'}] {name}")
    _out.print(
        f"verified in {time.perf_counter() - started:.1f} s: the encrypted Simple Query "
        f"found {report.found:,} Developers aged 20-40, as generated."
    )
