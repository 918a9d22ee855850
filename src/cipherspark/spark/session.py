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
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path

from pyspark.sql import SparkSession

from cipherspark.kms import Credentials
from cipherspark.spark._executor import ENV_API_KEY, ENV_APP_ID
from cipherspark.spark.datasource import EncryptedCsvDataSource

__all__ = ["SECURE_CONF", "secure_conf", "secure_session"]

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
    # Let the encrypted CSV source drop non-matching rows in Arrow, as Spark's CSV source does.
    "spark.sql.python.filterPushdown.enabled": "true",
}


def secure_conf(*, master: str, ui: bool = False) -> dict[str, str]:
    """The security settings for ``master``, with a fresh authentication secret."""
    conf = dict(SECURE_CONF)
    if not master.startswith("local"):
        # Local masters generate their own secret inside the JVM; a configured one would travel
        # on the spark-submit command line.
        conf["spark.authenticate.secret"] = secrets.token_hex(32)
    log4j = Path(__file__).with_name("log4j2.properties").as_uri()
    conf["spark.driver.extraJavaOptions"] = f"-Dlog4j2.configurationFile={log4j}"
    conf["spark.executor.extraJavaOptions"] = f"-Dlog4j2.configurationFile={log4j}"
    # Executors run this interpreter (the one cipherspark is installed in).
    conf["spark.pyspark.python"] = sys.executable
    if ui:
        conf["spark.ui.enabled"] = "true"
    if master.startswith("local"):
        # Nothing needs to reach a local driver from another host.
        conf["spark.driver.host"] = "127.0.0.1"
        conf["spark.driver.bindAddress"] = "127.0.0.1"
    return conf


def secure_session(
    *,
    master: str = "local[*]",
    app_name: str = "cipherspark",
    credentials: Credentials | None = None,
    ui: bool = False,
    extra_conf: Mapping[str, str] | None = None,
    log_level: str = "ERROR",
) -> SparkSession:
    """Start (or join) a SparkSession with :data:`SECURE_CONF` and the encrypted data sources.

    ``credentials`` are exported to this process's environment before the JVM starts, so the
    Python workers Spark forks can open the KMS; pass them before the first session is created.
    """
    if credentials is not None:
        os.environ[ENV_APP_ID] = credentials.app_id
        os.environ[ENV_API_KEY] = credentials.api_key
    # Python workers must run this interpreter (the one cipherspark is installed in), not the
    # first "python3" on PATH; Spark's data source planner reads only the environment variable.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in {**secure_conf(master=master, ui=ui), **(extra_conf or {})}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(log_level)
    spark.dataSource.register(EncryptedCsvDataSource)
    return spark
