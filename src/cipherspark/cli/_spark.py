"""The Spark session the job commands run on, the checks made before it starts, where its
console output goes, and its shutdown."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from cipherspark.cli._services import open_service
from cipherspark.kms import Credentials

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from cipherspark.spark.pme import ParquetEncryption

__all__ = ["check_before_spark", "session", "spark_log", "spark_logs", "stop_spark"]

#: The Spark logs this process started, newest last (a failed job's error line names it).
spark_logs: list[Path] = []


def spark_log(folder: Path) -> Path:
    """Where this run's Spark console output goes (the terminal shows only cipherspark's).

    PySpark's own Python loggers print every failed query's JVM stack as JSON on stderr;
    the user gets the one-line error instead, and the log path with it.
    """
    from pyspark.logger import PySparkLogger

    for name in ("SQLQueryContextLogger", "DataFrameQueryContextLogger"):
        PySparkLogger.getLogger(name).disabled = True
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = folder.absolute() / "logs" / f"spark-{stamp}-{os.getpid()}.log"
    spark_logs.append(path)
    return path


def check_before_spark(
    kms: str | None,
    kms_ca: Path | None,
    creds: Credentials,
    *,
    keys: Iterable[str] = (),
    inputs: Iterable[str | os.PathLike[str]] = (),
    input_key: str | None = None,
    unsafe_skip_registry: bool = False,
) -> str:
    """Before Spark starts, so that these failures are one line and nothing is written: the
    KMS answers, each of ``keys`` exists, and each input verifies as its reader will check it
    (under ``input_key`` if given): an encrypted CSV file or dataset its headers and manifest
    (:func:`~cipherspark.files.verify_input`), an encrypted Parquet table its encrypted footers
    (:func:`~cipherspark.spark.pme.check_encrypted_parquet`) and that their key exists. The
    KMS's URL, for the job. (Cheap, early refusals: the readers check again where they decrypt.)
    """
    from cipherspark.files import verify_input
    from cipherspark.spark.pme import check_encrypted_parquet, is_parquet

    with open_service(kms, kms_ca, creds) as service:
        for name in keys:
            service.describe_key(name)
        for path in map(Path, inputs):
            if is_parquet(path):
                service.describe_key(check_encrypted_parquet(path, key_id=input_key))
            else:
                verify_input(
                    path, service, key_id=input_key, unsafe_skip_registry=unsafe_skip_registry
                )
        return service.url


def session(
    master: str,
    credentials: Credentials,
    app_name: str,
    properties: Path | None,
    kms_ca: Path | None,
    *,
    parquet: ParquetEncryption | None = None,
    unsafe_plaintext_parquet: bool = False,
    unsafe_plaintext_parquet_reads: bool = False,
    unsafe_plaintext_writes: bool = False,
) -> SparkSession:
    """A secure session for a job command, its log under ``.cipherspark/logs``.

    ``kms_ca`` (``--kms-ca``) must reach the Python workers that unwrap data keys: it goes into
    their :class:`~cipherspark.settings.ExecutorConfig` (with the TEE and credential-file
    settings of this environment), made absolute so it names the same file whatever folder a
    worker runs in. ``parquet`` and the ``unsafe_plaintext_*`` opt-outs are
    :func:`~cipherspark.spark.secure_session`'s.
    """
    import dataclasses

    from cipherspark.settings import ExecutorConfig
    from cipherspark.spark import secure_session

    executor = ExecutorConfig.from_environ(os.environ)
    if kms_ca is not None:
        executor = dataclasses.replace(executor, kms_ca=kms_ca.absolute())
    spark = secure_session(
        master=master,
        app_name=app_name,
        credentials=credentials,
        properties_file=properties,
        log_file=spark_log(Path(".cipherspark")),
        executor=executor,
        parquet=parquet,
        unsafe_plaintext_parquet=unsafe_plaintext_parquet,
        unsafe_plaintext_parquet_reads=unsafe_plaintext_parquet_reads,
        unsafe_plaintext_writes=unsafe_plaintext_writes,
    )
    # PySpark's SparkContext put its own SIGINT handler in (a Py4J call from inside the
    # handler): the CLI's goes back over it (see cli._interrupt).
    from cipherspark.cli import _interrupt

    _interrupt.install(replace=True)
    return spark


def stop_spark() -> None:
    """Stop a SparkSession this process started, so the JVM and its Python workers shut down
    in order (killed at interpreter exit instead, PySpark's workers print broken-pipe
    tracebacks after a successful run)."""
    if "pyspark.sql" not in sys.modules:
        return
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        try:
            active.stop()
        except Exception:
            pass
