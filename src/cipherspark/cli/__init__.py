"""The ``cipherspark`` command: a thin layer over the library.

Every flag that names a place or a credential defaults from a ``CIPHERSPARK_*`` environment
variable; the flags several commands share are defined once, in :mod:`cipherspark.cli._options`.
Errors are one line on stderr and a non-zero exit code; set ``CIPHERSPARK_DEBUG=1`` to see
tracebacks. Nothing below this package prints or exits.

The command groups live in their own modules: :mod:`~cipherspark.cli.data` (generate, encrypt,
decrypt, query, sql, demo), :mod:`~cipherspark.cli.keys` (key, key policy),
:mod:`~cipherspark.cli.kms`, :mod:`~cipherspark.cli.attest`, :mod:`~cipherspark.cli.cluster` and
:mod:`~cipherspark.cli.deploy`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated

import typer

from cipherspark import settings
from cipherspark.cli import (
    _help,
    _interrupt,
    attest,
    cluster,
    data,
    dataset,
    deploy,
    keys,
    kms,
    migrate,
)
from cipherspark.cli import run as _run_command  # the module; run() below is the entry point
from cipherspark.cli._io import out as _out
from cipherspark.cli._spark import spark_logs, stop_spark
from cipherspark.errors import CipherSparkError, JobError

__all__ = ["app", "main", "run"]

app = _help.Typer(
    name="cipherspark",
    help="Run Apache Spark analytics end to end on encrypted data.\n\n"
    "Quick start: 'cipherspark demo' runs generate -> key -> encrypt -> query -> decrypt "
    "on a laptop and verifies the result.",
    epilog=_help.examples(
        "cipherspark demo",
        "cipherspark encrypt people.csv people.csv.cspk --key simple",
        "cipherspark encrypt --help",
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(data.app)
app.add_typer(_run_command.app)
app.add_typer(keys.app, name="key")
app.add_typer(kms.app, name="kms")
app.add_typer(attest.app, name="attest")
app.add_typer(cluster.app, name="cluster")
app.add_typer(deploy.app, name="deploy")
app.add_typer(migrate.app, name="migrate")
app.add_typer(dataset.app, name="dataset")
deploy.add_aliases(app)


def _version() -> str:
    # The installed distribution's metadata, which comes from pyproject.toml's version: the
    # one place the version is written. Imported here: importlib.metadata costs ~70 ms.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cipherspark")
    except PackageNotFoundError:
        return "unknown (cipherspark is not installed)"


def _print_version(value: bool) -> None:
    if value:
        _out.print(f"cipherspark {_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print cipherspark's version and exit.",
        ),
    ] = False,
) -> None:
    # Only for --version: a callback is Typer's place for options of the command itself.
    pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    _interrupt.reset()
    previous = _interrupt.current()
    _interrupt.install()
    try:
        return _main(args)
    finally:
        # Back to what the caller had (the session may have replaced handlers meanwhile).
        _interrupt.restore(previous)


def _main(args: list[str]) -> int:
    try:
        # Standalone mode: Typer reports usage errors itself and exits with code 2.
        app(args=args, prog_name="cipherspark", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        if _interrupt.interrupted() and code != 0:
            print(_interrupt.MESSAGE, file=sys.stderr)
            return _interrupt.EXIT_CODE
        return code if isinstance(code, int) else (0 if code is None else 1)
    except KeyboardInterrupt:
        print(_interrupt.MESSAGE, file=sys.stderr)
        return _interrupt.EXIT_CODE
    except Exception as exc:
        if _interrupt.interrupted():  # the dying JVM's error, not the cause
            print(_interrupt.MESSAGE, file=sys.stderr)
            return _interrupt.EXIT_CODE
        if settings.debug_enabled():
            raise
        return _report(exc)
    return 0


def _report(exc: Exception) -> int:
    """``exc`` as one line on stderr; its exit code."""
    if isinstance(exc, CipherSparkError):
        hint = (
            f" (Spark's log: {spark_logs[-1]})" if spark_logs and isinstance(exc, JobError) else ""
        )
        print(f"cipherspark: error: {exc}{hint}", file=sys.stderr)
        return exc.exit_code
    if _from_spark(exc):
        # A Spark failure outside a job's error mapping: the same one line, no row values.
        from cipherspark.spark import spark_error

        error = spark_error(exc)
        print(f"cipherspark: error: {error}", file=sys.stderr)
        return error.exit_code
    # Only the type: the message of an arbitrary exception may quote a value it was given,
    # and this line reaches terminals and logs outside the TEE.
    print(
        f"cipherspark: internal error ({type(exc).__name__})\n"
        "  set CIPHERSPARK_DEBUG=1 for the traceback (it may show data values)",
        file=sys.stderr,
    )
    return 70


def _from_spark(exc: BaseException) -> bool:
    """Whether ``exc`` was raised by PySpark or Py4J (without importing either)."""
    return type(exc).__module__.partition(".")[0] in ("pyspark", "py4j")


def run() -> None:
    """Console-script entry point: :func:`main`, then an orderly Spark shutdown, then exit."""
    code = main()
    if not _interrupt.interrupted():  # after Ctrl-C the JVM is gone: nothing to stop in order
        stop_spark()
    sys.exit(code)
