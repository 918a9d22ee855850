"""The ``cipherspark`` command: a thin layer over the library.

Every flag that names a place or a credential defaults from a ``CIPHERSPARK_*`` environment
variable. Errors are one line on stderr and a non-zero exit code; set ``CIPHERSPARK_DEBUG=1`` to
see tracebacks.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from cipherspark import _cli_attest
from cipherspark._cli_cluster import app as cluster_app
from cipherspark._cli_deploy import app as deploy_app
from cipherspark._cli_kms import app as kms_app
from cipherspark.errors import CipherSparkError, JobError, UsageError
from cipherspark.kms import Credentials, KeyManagementService, LocalKms, open_kms

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["main"]

_err = Console(stderr=True, highlight=False, markup=False, soft_wrap=True)
_out = Console(highlight=False, markup=False, soft_wrap=True)

app = typer.Typer(
    name="cipherspark",
    help="Run Apache Spark analytics end to end on encrypted data.\n\n"
    "Quick start: 'cipherspark demo' runs generate -> key -> encrypt -> query -> decrypt "
    "on a laptop and verifies the result.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
key_app = typer.Typer(help="Create and list primary keys in the KMS.", no_args_is_help=True)
query_app = typer.Typer(help="Run the reference queries on encrypted data.",
                        no_args_is_help=True)
app.add_typer(key_app, name="key")
app.add_typer(query_app, name="query")
app.add_typer(kms_app, name="kms")
app.add_typer(deploy_app)
app.add_typer(cluster_app, name="cluster")
app.add_typer(_cli_attest.app, name="attest")
key_app.add_typer(_cli_attest.policy_app, name="policy")

KmsOpt = Annotated[str | None, typer.Option(
    "--kms", envvar="CIPHERSPARK_KMS", show_envvar=True,
    help="KMS URL: file://DIR for the embedded keystore (default: .cipherspark/kms).")]
AppIdOpt = Annotated[str | None, typer.Option(
    "--app-id", envvar="CIPHERSPARK_APP_ID", show_envvar=True,
    help="APP ID of your application at the KMS.")]
ApiKeyOpt = Annotated[str | None, typer.Option(
    "--api-key", envvar="CIPHERSPARK_API_KEY", show_envvar=True,
    help="API KEY of your application (prefer the environment variable: flags show in ps).")]
KeyOpt = Annotated[str, typer.Option(
    "--key", envvar="CIPHERSPARK_KEY", show_envvar=True,
    help="Name of the primary key that wraps the data key.")]
MasterOpt = Annotated[str, typer.Option(
    "--master", envvar="CIPHERSPARK_MASTER", show_envvar=True,
    help="Spark master URL (local[*], spark://HOST:PORT, k8s://...).")]
PropertiesOpt = Annotated[Path | None, typer.Option(
    "--spark-properties", envvar="CIPHERSPARK_SPARK_PROPERTIES", show_envvar=True,
    help="Spark properties file of a standalone cluster (holds its secret; printed by "
    "'cipherspark cluster start').")]
OverwriteOpt = Annotated[bool, typer.Option(
    "--overwrite", help="Replace the output if it exists.")]


def _kms(url: str | None, app_id: str | None, api_key: str | None, *,
         create: bool = False) -> tuple[KeyManagementService, Credentials]:
    if not app_id or not api_key:
        raise UsageError(
            "KMS credentials missing: pass --app-id and --api-key or set "
            "CIPHERSPARK_APP_ID and CIPHERSPARK_API_KEY"
        )
    credentials = Credentials(app_id, api_key)
    return open_kms(url, credentials, create=create), credentials


@contextmanager
def _progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A transfer progress bar on stderr for large work on a terminal; silent otherwise."""
    if total < (64 << 20) or not _err.is_terminal:
        yield lambda _n: None
        return
    with Progress(
        "[progress.description]{task.description}", BarColumn(), DownloadColumn(),
        TransferSpeedColumn(), TimeRemainingColumn(), console=_err, transient=True,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    return path.stat().st_size if path.exists() else 0


# -- commands ---------------------------------------------------------------------------------


@app.command()
def generate(
    out: Annotated[Path, typer.Argument(help="CSV file to write, e.g. people.csv.")],
    rows: Annotated[int, typer.Option("--rows", "-n", min=0,
                                      help="Number of people.")] = 1_000_000,
    seed: Annotated[int | None, typer.Option(help="Random seed: same seed, same bytes.")] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Generate the reference people.csv (name,age,job) and print the Simple Query's answer."""
    from cipherspark.datagen import generate_people

    with _progress("generating", rows * 19) as advance:
        result = generate_people(out, rows, seed=seed, overwrite=overwrite,
                                 progress=lambda n: advance(n * 19))
    _out.print(f"wrote {result.rows:,} rows ({result.size / 1e6:.1f} MB) to {out}")
    _out.print(f"Developers aged 20-40: {result.developers_20_40}")


@key_app.command("create")
def key_create(
    name: Annotated[str, typer.Argument(help="Key name (letters, digits, . _ -).")],
    kms: KmsOpt = None, app_id: AppIdOpt = None, api_key: ApiKeyOpt = None,
) -> None:
    """Create a 256-bit primary key (and the local keystore, if it does not exist)."""
    from cipherspark.kms import validate_key_name

    validate_key_name(name)
    service, _ = _kms(kms, app_id, api_key, create=True)
    info = service.create_key(name)
    _out.print(f"created primary key {info.name!r} (version {info.version}) in {service.url}")
    if isinstance(service, LocalKms):
        policy = service.get_policy(info.name)
        if policy is not None and "simulated" in policy.tee_types:
            _out.print("its release policy allows the simulated TEE (development only: it "
                       "protects nothing; see 'cipherspark key policy show')")


@key_app.command("list")
def key_list(kms: KmsOpt = None, app_id: AppIdOpt = None, api_key: ApiKeyOpt = None) -> None:
    """List the primary keys your credentials can use."""
    service, _ = _kms(kms, app_id, api_key)
    keys = service.list_keys()
    if not keys:
        _out.print(f"no keys in {service.url}")
    for info in keys:
        _out.print(f"{info.name}\tversion {info.version}\tcreated {info.created}")


@app.command()
def encrypt(
    src: Annotated[Path, typer.Argument(help="Plaintext file, or folder of files.")],
    dst: Annotated[Path, typer.Argument(help="Encrypted file (or folder) to write.")],
    key: KeyOpt,
    kms: KmsOpt = None, app_id: AppIdOpt = None, api_key: ApiKeyOpt = None,
    segment_size: Annotated[int, typer.Option(
        min=57, max=64 << 20,
        help="Ciphertext segment size in bytes (splits align to it).")] = 1 << 20,
    overwrite: OverwriteOpt = False,
) -> None:
    """Encrypt a file or folder under a fresh data key wrapped by primary key --key."""
    from cipherspark.files import encrypt_path

    service, _ = _kms(kms, app_id, api_key)
    with _progress("encrypting", _size(src)) as advance:
        result = encrypt_path(src, dst, service, key, segment_size=segment_size,
                              overwrite=overwrite, progress=advance)
    _out.print(f"encrypted {result.files} file(s), {result.plaintext_bytes:,} bytes -> {dst}")


@app.command()
def decrypt(
    src: Annotated[Path, typer.Argument(help="Encrypted file, or folder of encrypted parts.")],
    dst: Annotated[Path, typer.Argument(help="Plaintext file to write.")],
    kms: KmsOpt = None, app_id: AppIdOpt = None, api_key: ApiKeyOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Decrypt a file, or a folder of Spark parts into one file (CSV header written once)."""
    from cipherspark.files import decrypt_path

    service, _ = _kms(kms, app_id, api_key)
    with _progress("decrypting", _size(src)) as advance:
        result = decrypt_path(src, dst, service, overwrite=overwrite, progress=advance)
    _out.print(f"decrypted {result.files} file(s), {result.plaintext_bytes:,} bytes -> {dst}")


_spark_logs: list[Path] = []


def _spark_log(folder: Path) -> Path:
    """Where this run's Spark console output goes (the terminal shows only cipherspark's).

    PySpark's own Python loggers print every failed query's JVM stack as JSON on stderr;
    the user gets the one-line error instead, and the log path with it.
    """
    from pyspark.logger import PySparkLogger

    for name in ("SQLQueryContextLogger", "DataFrameQueryContextLogger"):
        PySparkLogger.getLogger(name).disabled = True
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = folder.absolute() / "logs" / f"spark-{stamp}-{os.getpid()}.log"
    _spark_logs.append(path)
    return path


def _session(master: str, credentials: Credentials, app_name: str,
             properties: Path | None) -> SparkSession:
    from cipherspark.spark import secure_session

    return secure_session(master=master, app_name=app_name, credentials=credentials,
                          properties_file=properties, log_file=_spark_log(Path(".cipherspark")))


@query_app.command("simple")
def query_simple(
    input: Annotated[Path, typer.Option("--input", "-i",
                                        help="Encrypted people.csv (file or folder).")],
    output: Annotated[Path, typer.Option("--output", "-o",
                                         help="Folder for the encrypted result.")],
    key: KeyOpt,
    kms: KmsOpt = None, app_id: AppIdOpt = None, api_key: ApiKeyOpt = None,
    master: MasterOpt = "local[*]",
    spark_properties: PropertiesOpt = None,
    show: Annotated[int, typer.Option(
        min=0, help="Print N rows of (name, age+1). Off by default: printed plaintext "
        "ends up in logs outside the TEE.")] = 0,
    overwrite: OverwriteOpt = False,
) -> None:
    """The reference Simple Query: count names, select Developers aged 20-40, write encrypted."""
    from cipherspark._files import check_output
    from cipherspark.jobs import simple_query

    if not input.exists():
        raise UsageError(f"{input} does not exist")
    check_output(output.absolute(), overwrite)
    service, creds = _kms(kms, app_id, api_key)
    service.describe_key(key)
    spark = _session(master, creds, "cipherspark-simple-query", spark_properties)
    result = simple_query(spark, str(input), str(output), kms_url=service.url, key=key,
                          show=show, overwrite=overwrite)
    _out.print(f"names: {result.names}")
    for name, age in result.shown:
        _out.print(f"{name}\t{age}")
    _out.print(f"Developers aged 20-40: {result.developers_20_40}")
    _out.print(f"wrote the encrypted selection to {output}")


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="Spark SQL, e.g. \"SELECT job, count(*) FROM "
                                              "people GROUP BY job\".")],
    table: Annotated[list[str], typer.Option(
        "--table", "-t", help="NAME=PATH of an encrypted CSV table; repeatable.")],
    output: Annotated[Path, typer.Option("--output", "-o",
                                         help="Folder for the encrypted result.")],
    key: KeyOpt,
    kms: KmsOpt = None, app_id: AppIdOpt = None, api_key: ApiKeyOpt = None,
    master: MasterOpt = "local[*]",
    spark_properties: PropertiesOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Run any Spark SQL over encrypted CSV tables; the result is written encrypted."""
    from cipherspark._files import check_output
    from cipherspark.jobs import run_sql

    tables: dict[str, str] = {}
    for item in table:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--table takes NAME=PATH, not {item!r}")
        if not Path(path).exists():
            raise UsageError(f"table {name}: {path} does not exist")
        tables[name] = path
    check_output(output.absolute(), overwrite)
    service, creds = _kms(kms, app_id, api_key)
    service.describe_key(key)
    spark = _session(master, creds, "cipherspark-sql", spark_properties)
    result = run_sql(spark, query, tables, str(output), kms_url=service.url, key=key,
                     overwrite=overwrite)
    _out.print(f"wrote {result.rows} row(s) of ({', '.join(result.columns)}) encrypted to "
               f"{output}")


@app.command()
def demo(
    rows: Annotated[int, typer.Option("--rows", "-n", min=1000,
                                      help="People to generate.")] = 1_000_000,
    workdir: Annotated[Path, typer.Option(
        help="Folder for the demo's files, keystore and credentials.")] = Path("demo"),
    seed: Annotated[int | None, typer.Option(help="Random seed for the data.")] = None,
    master: MasterOpt = "local[*]",
    spark_properties: PropertiesOpt = None,
    kms_server: Annotated[bool, typer.Option(
        "--kms-server",
        help="Run the flow through a real KMS server (TLS, 127.0.0.1) that the demo starts "
             "and stops, instead of the embedded keystore.")] = False,
) -> None:
    """Run the whole encrypted flow on a laptop and verify it (exit 0 only if verified)."""
    from cipherspark.jobs.demo import DemoStep, run_demo

    _out.print(f"cipherspark demo: {rows:,} people, work folder {workdir}")
    started = time.perf_counter()

    def show(step: DemoStep) -> None:
        _out.print(f"  {step.name:<34} {step.seconds:7.2f} s   {step.detail}")

    report = run_demo(workdir, rows=rows, seed=seed, master=master, on_step=show,
                      kms_server=kms_server, properties_file=spark_properties,
                      spark_log=_spark_log(workdir))
    _out.print(f"  Spark's log: {_spark_logs[-1]}")
    for name, ok in report.checks:
        _out.print(f"  [{'ok' if ok else 'FAILED'}] {name}")
    _out.print(f"verified in {time.perf_counter() - started:.1f} s: the encrypted Simple Query "
               f"found {report.found:,} Developers aged 20-40, as generated.")


# -- entry point ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        # Standalone mode: Typer reports usage errors itself and exits with code 2.
        app(args=args, prog_name="cipherspark", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except KeyboardInterrupt:
        print("cipherspark: interrupted", file=sys.stderr)
        return 130
    except CipherSparkError as exc:
        if os.environ.get("CIPHERSPARK_DEBUG"):
            raise
        hint = f" (Spark's log: {_spark_logs[-1]})" if _spark_logs and isinstance(exc, JobError) \
            else ""
        print(f"cipherspark: error: {exc}{hint}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:
        if os.environ.get("CIPHERSPARK_DEBUG"):
            raise
        print(f"cipherspark: internal error ({type(exc).__name__}): {exc}\n"
              "  set CIPHERSPARK_DEBUG=1 for the traceback", file=sys.stderr)
        return 70
    return 0


def _stop_spark() -> None:
    """Stop a SparkSession this process started, so the JVM and its Python workers shut down
    in order (killed at interpreter exit instead, PySpark's workers print broken-pipe
    tracebacks after a successful run)."""
    if "pyspark.sql" not in sys.modules:
        return
    from pyspark.sql import SparkSession

    session = SparkSession.getActiveSession()
    if session is not None:
        try:
            session.stop()
        except Exception:
            pass


def run() -> None:
    """Console-script entry point: :func:`main`, then an orderly Spark shutdown, then exit."""
    code = main()
    _stop_spark()
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
