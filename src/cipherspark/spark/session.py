"""A SparkSession with Spark's own transport and storage security switched on.

What :data:`SECURE_CONF` sets, and why:

* ``spark.authenticate`` with a random per-application secret: RPC peers must prove they hold it.
* ``spark.network.crypto.enabled`` with ``AES/GCM/NoPadding``: the default cipher, AES/CTR, is
  unauthenticated (CVE-2025-55039), so traffic could be altered undetected.
* ``spark.io.encryption.enabled`` with 256-bit keys: shuffle, spill and cached blocks on disk.
* ``spark.python.unix.domain.socket.enabled``: without it, decrypted rows cross loopback TCP
  between the executor JVM and its Python worker in clear (seen in a packet capture).
* ``spark.master.rest.enabled=false``: the standalone REST submission server answers without
  authentication even when ``spark.authenticate`` is on.
* ``spark.ui.enabled=false`` unless asked for: the UI shows plans, options and sample data.

Credentials for the KMS are handed to executors through the process environment (see
:mod:`cipherspark.spark._executor`), never through Spark's conf, so they do not appear in the UI,
event logs or plans.

Every Parquet file the session writes is encrypted with Parquet Modular Encryption under the
session's key (:mod:`cipherspark.spark.pme`); without one, Parquet writes are refused unless the
session was opened with ``unsafe_plaintext_parquet``.

Spark's other writers would write plaintext: CSV, JSON, ORC, text, JDBC and the like, through
the DataFrame API or SQL alike. A check rule on every analysed plan
(``org.cipherspark.spark.PlaintextWriteGuard`` in the client jar, loaded as a session
extension: Spark accepts only JVM classes there) refuses them before anything runs, unless the
session was opened with ``unsafe_plaintext_writes`` (the SQL setting
:data:`UNSAFE_PLAINTEXT_WRITES`). The RDD API (``saveAsTextFile`` and its siblings) does not
pass through it: PySpark's RDD save methods are refused under the same opt-out
(:mod:`cipherspark.spark._rdd_writes`).
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path

from pyspark import SparkConf, SparkContext
from pyspark.java_gateway import launch_gateway
from pyspark.sql import SparkSession

from cipherspark.errors import InputError, UsageError
from cipherspark.kms import Credentials
from cipherspark.settings import ENV_API_KEY, ENV_APP_ID, ExecutorConfig
from cipherspark.spark._rdd_writes import refuse_rdd_writes
from cipherspark.spark.datasource import EncryptedCsvDataSource, EncryptedTextDataSource
from cipherspark.spark.pme import (
    ParquetEncryption,
    find_pme_jar,
    parquet_properties,
    require_pme_jar,
    session_conf,
)

__all__ = [
    "PLAINTEXT_WRITE_GUARD",
    "SECURE_CONF",
    "UNSAFE_PLAINTEXT_WRITES",
    "secure_conf",
    "secure_session",
]

#: The session extension that refuses Spark's plaintext writes (java/, in the client jar).
PLAINTEXT_WRITE_GUARD = "org.cipherspark.spark.PlaintextWriteGuard"
#: The SQL setting that lets a session write plaintext (the guard reads it at every check).
UNSAFE_PLAINTEXT_WRITES = "spark.cipherspark.unsafePlaintextWrites"

SECURE_CONF: Mapping[str, str] = {
    "spark.authenticate": "true",
    "spark.network.crypto.enabled": "true",
    "spark.network.crypto.cipher": "AES/GCM/NoPadding",
    "spark.network.crypto.saslFallback": "false",
    "spark.io.encryption.enabled": "true",
    "spark.io.encryption.keySizeBits": "256",
    "spark.python.unix.domain.socket.enabled": "true",
    "spark.master.rest.enabled": "false",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    # Off: in PySpark 4.1 a Python source's pushed-filter state is kept on the relation and
    # reused by later scans of the same DataFrame (wrong answers, issue 11). encrypted_sql
    # pushes filters as reader options instead; off also saves a planner worker per scan.
    "spark.sql.python.filterPushdown.enabled": "false",
}


def secure_conf(
    *, master: str, ui: bool = False, unsafe_without_security: bool = False
) -> dict[str, str]:
    """The session settings for ``master``: :data:`SECURE_CONF` plus logging and Python.

    The authentication secret is never among them: local masters generate one inside the JVM,
    a standalone cluster's comes from its properties file, Kubernetes mounts it as a file; a
    secret in this conf would travel on the spark-submit command line.
    ``unsafe_without_security`` leaves Spark's security settings out (for the chain-proof
    test's control run only).
    """
    conf = {} if unsafe_without_security else dict(SECURE_CONF)
    log4j = Path(__file__).with_name("log4j2.properties").as_uri()
    conf["spark.driver.extraJavaOptions"] = f"-Dlog4j2.configurationFile={log4j}"
    conf["spark.executor.extraJavaOptions"] = f"-Dlog4j2.configurationFile={log4j}"
    # Executors run this interpreter (the one cipherspark is installed in).
    conf["spark.pyspark.python"] = sys.executable
    # PySpark's daemon, minus the BrokenPipeError traceback it prints when Spark shuts down.
    conf["spark.python.daemon.module"] = "cipherspark._spark_daemon"
    if ui:
        conf["spark.ui.enabled"] = "true"
    if master.startswith(("local", "spark://127.0.0.1", "spark://localhost")):
        # Nothing needs to reach this driver from another host.
        conf["spark.driver.host"] = "127.0.0.1"
        conf["spark.driver.bindAddress"] = "127.0.0.1"
    return conf


def _launch_jvm_logging_to(log_file: Path, conf: Mapping[str, str]) -> None:
    """Start the driver JVM now, its stdout and stderr going to ``log_file`` (mode 0600).

    PySpark starts the JVM with this process's terminal as its console; the CLI wants Spark's
    lines (and the broken-pipe tracebacks PySpark's workers print at shutdown) in a log file.
    ``launch_gateway`` takes Popen arguments for exactly this; the JVM-level options of ``conf``
    (log4j configuration) must be on its command line, hence passed here.
    """
    log_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "ab") as log:
        spark_conf = SparkConf(loadDefaults=False).setAll(list(conf.items()))
        gateway = launch_gateway(  # type: ignore[no-untyped-call]
            spark_conf, popen_kwargs={"stdout": log, "stderr": log}
        )
    SparkContext._gateway = gateway
    SparkContext._jvm = gateway.jvm


def _guard_installed(spark: SparkSession) -> bool:
    """Whether the guard's check rule is among the analyser's rules of this session.

    Naming the class in ``spark.sql.extensions`` is not enough: a JVM started before the
    session without the jar on its class path (``spark-submit app.py``, a Kubernetes driver
    pod, the SGX launcher) logs "Cannot use ... to configure session extensions" and runs
    without the rule, so plaintext writes would go through (measured: a CSV write succeeded in
    such a session). The rule objects themselves are the proof.
    """
    rules = spark._jsparkSession.sessionState().analyzer().extendedCheckRules()
    names = {rules.apply(i).getClass().getName() for i in range(rules.length())}
    return f"{PLAINTEXT_WRITE_GUARD}$Check" in names


def _check_guard(spark: SparkSession, unsafe_plaintext_writes: bool) -> None:
    """Set the session's plaintext-write opt-out; refuse a session the guard is not part of
    (one started before, without it, or a JVM that could not load it: its plaintext writes
    would go through)."""
    spark.conf.set(UNSAFE_PLAINTEXT_WRITES, str(unsafe_plaintext_writes).lower())
    if unsafe_plaintext_writes:
        return
    extensions = spark.conf.get("spark.sql.extensions", "") or ""
    if PLAINTEXT_WRITE_GUARD not in extensions.split(","):
        raise InputError(
            "this Spark session was started without cipherspark's plaintext-write guard: "
            "start it with secure_session() (the guard is in the client jar: run "
            "scripts/build-java), or pass unsafe_plaintext_writes=True"
        )
    if not _guard_installed(spark):
        raise InputError(
            "cipherspark's plaintext-write guard is named in spark.sql.extensions but its "
            "class is not on the driver's class path (a JVM started before the session, by "
            "spark-submit or a pod's entrypoint): pass the client jar with spark-submit "
            "--jars, or put it in SPARK_HOME/jars as the runtime image does"
        )


def secure_session(
    *,
    master: str = "local[*]",
    app_name: str = "cipherspark",
    credentials: Credentials | None = None,
    ui: bool = False,
    extra_conf: Mapping[str, str] | None = None,
    log_level: str = "ERROR",
    properties_file: str | os.PathLike[str] | None = None,
    unsafe_without_security: bool = False,
    log_file: str | os.PathLike[str] | None = None,
    executor: ExecutorConfig | None = None,
    parquet: ParquetEncryption | None = None,
    unsafe_plaintext_parquet: bool = False,
    unsafe_plaintext_parquet_reads: bool = False,
    unsafe_plaintext_writes: bool = False,
) -> SparkSession:
    """Start (or join) a SparkSession with :data:`SECURE_CONF` and the encrypted data sources.

    ``credentials`` are exported to this process's environment before the JVM starts, so the
    Python workers Spark forks can open the KMS; pass them before the first session is created.
    A standalone master (``spark://``) needs the cluster's ``properties_file`` (it holds the
    shared secret; see :mod:`cipherspark.spark.cluster`), read by spark-submit from the file.
    ``log_file`` receives the driver JVM's console output (Spark's log lines, and anything its
    Python workers print) instead of this process's terminal; it applies when this call starts
    the JVM. ``executor`` is what the Python workers need besides the credentials (the KMS's
    CA, the TEE for attested release, credential files): written into the environment the JVM
    passes to the workers it starts, and, for a standalone cluster, into
    ``spark.executorEnv.*`` (none of it is secret), so its executors get it too.

    ``parquet`` is how Parquet writes are encrypted (the KMS, the footer key, column keys);
    without it every Parquet write fails with a message saying so, unless
    ``unsafe_plaintext_parquet`` opts out (plaintext Parquet, written and read). Reading
    encrypted Parquet needs nothing more than the KMS; plaintext Parquet files are refused as
    they are read, by the JVM that reads them (a plaintext file in an encrypted table may be
    anyone's), unless ``unsafe_plaintext_parquet_reads`` (or, for one read,
    :func:`~cipherspark.spark.pme.unsafe_plaintext_parquet_read_options`). These settings also
    apply to a session this call joins (they are Hadoop properties of the session's SQL conf,
    which every read and write copies).

    Spark's own plaintext writes (CSV, JSON, ORC, text files, JDBC, Hive tables: DataFrame API
    and SQL) are refused by the session's check rule unless ``unsafe_plaintext_writes`` opts
    out (also applied to a session this call joins). The rule needs the built client jar; a
    session without it starts only with the opt-out, and a session this call joins must have
    been started with the rule.
    """
    if properties_file is not None:
        props = Path(properties_file)
        if not props.is_file():
            raise UsageError(f"Spark properties file {props} does not exist")
        # Read by spark-submit itself, so the secret in it never appears on a command line.
        os.environ["PYSPARK_SUBMIT_ARGS"] = (
            f"--properties-file {shlex.quote(str(props.absolute()))} pyspark-shell"
        )
    elif master.startswith("spark://") and not unsafe_without_security:
        raise UsageError(
            "a standalone cluster needs its properties file with the shared secret "
            "(--spark-properties; 'cipherspark cluster start' prints its path)"
        )
    if credentials is not None:
        os.environ[ENV_APP_ID] = credentials.app_id
        os.environ[ENV_API_KEY] = credentials.api_key
    executor_env = executor.environ() if executor is not None else {}
    os.environ.update(executor_env)
    # Python workers must run this interpreter (the one cipherspark is installed in), not the
    # first "python3" on PATH; Spark's data source planner reads only the environment variable.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if master.startswith(("local", "spark://127.0.0.1", "spark://localhost")):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder.master(master).appName(app_name)
    # The KMS client must be built to encrypt, and the guard to refuse plaintext writes; a
    # session that opts out of both (Parquet writes are refused without the client too: Parquet
    # cannot load it) may start without them.
    guarded = not unsafe_without_security
    needed = parquet is not None or (guarded and not unsafe_plaintext_writes)
    jar = require_pme_jar() if needed else find_pme_jar()
    conf = {
        **secure_conf(master=master, ui=ui, unsafe_without_security=unsafe_without_security),
        **session_conf(
            parquet,
            unsafe_plaintext_parquet=unsafe_plaintext_parquet,
            unsafe_plaintext_parquet_reads=unsafe_plaintext_parquet_reads,
            jar=jar,
            existing_jars=(extra_conf or {}).get("spark.jars"),
        ),
    }
    conf.update({k: v for k, v in (extra_conf or {}).items() if k != "spark.jars"})
    if guarded and jar is not None:
        extensions = (extra_conf or {}).get("spark.sql.extensions")
        conf["spark.sql.extensions"] = ",".join(filter(None, [extensions, PLAINTEXT_WRITE_GUARD]))
    if master.startswith("spark://"):
        # Executors of a standalone cluster are children of its workers, not of this process.
        conf.update({f"spark.executorEnv.{name}": value for name, value in executor_env.items()})
    if log_file is not None and SparkContext._gateway is None:
        _launch_jvm_logging_to(Path(log_file), conf)
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    # Static settings of a context this call did not start cannot change; its SQL conf can,
    # and Spark copies it into the Hadoop conf of every read and write.
    parquet_props = parquet_properties(
        parquet,
        unsafe_plaintext_parquet=unsafe_plaintext_parquet,
        unsafe_plaintext_parquet_reads=unsafe_plaintext_parquet_reads,
    )
    for key, value in parquet_props.items():
        spark.conf.set(key, value)
    if guarded:
        _check_guard(spark, unsafe_plaintext_writes)
        refuse_rdd_writes(PLAINTEXT_WRITE_GUARD, UNSAFE_PLAINTEXT_WRITES)
    spark.sparkContext.setLogLevel(log_level)
    spark.dataSource.register(EncryptedCsvDataSource)
    spark.dataSource.register(EncryptedTextDataSource)
    return spark
