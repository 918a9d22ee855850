"""Run an unmodified PySpark application inside a secure session (``cipherspark run APP.py``).

The session is started first; the application then runs in this same interpreter (with
:func:`runpy.run_path`, as ``python APP.py ARGS`` would run it: ``__name__ == "__main__"``,
``sys.argv`` set, its folder first on ``sys.path``), so its
``SparkSession.builder.getOrCreate()`` returns the secure session: authentication, RPC and I/O
encryption, Unix-socket workers, every Parquet write encrypted, the encrypted CSV source
registered. Encrypted tables named on the command line (encrypted CSV or encrypted Parquet, see
:func:`cipherspark.jobs.sql.read_table`) are views before it starts. It
needs no change: the credentials are in this process's environment, never in its arguments,
its ``spark.conf`` or its plans.

What the application must not do is build its own ``SparkContext(conf=...)`` (one context per
process: Spark refuses a second) or stop the session and start another one (that one would be
an ordinary, insecure session).
"""

from __future__ import annotations

import re
import runpy
import sys
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path

from pyspark.sql import SparkSession

from cipherspark.errors import CipherSparkError, InputError, JobError, UsageError
from cipherspark.jobs.sql import check_schemas, read_table
from cipherspark.spark._errors import spark_error

__all__ = ["parse_tables", "run_application"]

_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def parse_tables(items: Sequence[str]) -> dict[str, Path]:
    """``NAME=PATH`` items as a mapping; :class:`UsageError` for a malformed or repeated one."""
    tables: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not path or not _TABLE_NAME.fullmatch(name):
            raise UsageError(f"--table takes NAME=PATH with NAME a SQL identifier, not {item!r}")
        if name in tables:
            raise UsageError(f"table {name} is given twice")
        if not Path(path).exists():
            raise InputError(f"table {name}: {path} does not exist")
        tables[name] = Path(path)
    return tables


def _from_spark(exc: BaseException) -> bool:
    return type(exc).__module__.partition(".")[0] in ("pyspark", "py4j")


def _where(exc: BaseException, script: Path) -> str:
    """The application's own line that the failure passed through last (no message: it may
    quote data values)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(script)]
    return f" at line {frames[-1].lineno} of {script.name}" if frames else ""


def run_application(
    spark: SparkSession,
    script: Path,
    args: Sequence[str] = (),
    *,
    tables: Mapping[str, Path] | None = None,
    kms_url: str | None = None,
    unsafe_skip_registry: bool = False,
    schemas: Mapping[str, str] | None = None,
) -> int:
    """Run ``script`` with ``args`` in ``spark`` (started by the caller); its exit status.

    ``tables`` (name -> encrypted table, read through ``kms_url``) become temporary views
    first, CSV and JSON ones typed by ``schemas`` (name -> Spark DDL) where given. A Spark
    failure is the cipherspark error it carries (a key the caller lacks, a
    tampered Parquet file: :func:`~cipherspark.spark.spark_error`); any other exception of the
    application is a :class:`JobError` naming its type and the application's line, not its
    message. ``sys.exit(N)`` in the application is status ``N``.
    """
    script = script.absolute()
    if not script.is_file():
        raise InputError(f"application {script} does not exist")
    check_schemas(schemas or {}, tables or {})
    if tables:
        if kms_url is None:
            raise UsageError("encrypted tables need the KMS URL")
        for name, path in tables.items():
            frame = read_table(
                spark,
                str(path),
                kms_url=kms_url,
                infer_schema=True,
                unsafe_skip_registry=unsafe_skip_registry,
                schema=(schemas or {}).get(name),
            )
            frame.createOrReplaceTempView(name)
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    sys.argv = [str(script), *args]
    sys.path.insert(0, str(script.parent))
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        raise JobError(f"{script.name} exited: {exc.code}") from exc
    except CipherSparkError:
        raise
    except Exception as exc:
        if _from_spark(exc):
            raise spark_error(exc) from exc
        raise JobError(
            f"{script.name} failed with {type(exc).__name__}{_where(exc, script)} (the message "
            "is withheld: it may quote data values; CIPHERSPARK_DEBUG=1 shows the traceback)"
        ) from exc
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
    return 0
