"""The secure session: Spark's own security switched on, and no secret in its conf."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from cipherspark.spark import SECURE_CONF, secure_conf
from tests.conftest import TEST_CREDENTIALS


def test_secure_conf_covers_the_documented_settings() -> None:
    assert SECURE_CONF["spark.authenticate"] == "true"
    assert SECURE_CONF["spark.network.crypto.enabled"] == "true"
    assert SECURE_CONF["spark.network.crypto.cipher"] == "AES/GCM/NoPadding"
    assert SECURE_CONF["spark.io.encryption.enabled"] == "true"
    assert SECURE_CONF["spark.python.unix.domain.socket.enabled"] == "true"
    assert SECURE_CONF["spark.master.rest.enabled"] == "false"
    assert SECURE_CONF["spark.ui.enabled"] == "false"


def test_secure_conf_never_carries_the_secret() -> None:
    # The secret would travel on the spark-submit command line: local masters make their own,
    # a standalone cluster's comes from its 0600 properties file.
    for master in ("local[2]", "spark://127.0.0.1:7077", "k8s://https://api:6443"):
        conf = secure_conf(master=master)
        assert "spark.authenticate.secret" not in conf
        assert conf["spark.ui.enabled"] == "false"
        assert all(conf[k] == v for k, v in SECURE_CONF.items())
    assert secure_conf(master="local[2]", ui=True)["spark.ui.enabled"] == "true"
    unsafe = secure_conf(master="local[2]", unsafe_without_security=True)
    assert "spark.authenticate" not in unsafe and "spark.io.encryption.enabled" not in unsafe


def test_a_standalone_master_needs_the_cluster_properties() -> None:
    from cipherspark.errors import UsageError
    from cipherspark.spark import secure_session

    with pytest.raises(UsageError, match="properties file"):
        secure_session(master="spark://127.0.0.1:7077")
    with pytest.raises(UsageError, match="does not exist"):
        secure_session(master="spark://127.0.0.1:7077", properties_file="/nonexistent.conf")


@pytest.mark.spark
def test_live_session_has_every_secure_setting(spark: SparkSession) -> None:
    conf = dict(spark.sparkContext.getConf().getAll())
    missing = {k: v for k, v in SECURE_CONF.items() if conf.get(k) != v}
    assert missing == {}
    assert conf["spark.network.crypto.cipher"] == "AES/GCM/NoPadding"
    for key in (
        "spark.authenticate",
        "spark.network.crypto.enabled",
        "spark.io.encryption.enabled",
        "spark.python.unix.domain.socket.enabled",
    ):
        assert spark.conf.get(key) == "true"
    assert spark.conf.get("spark.master.rest.enabled") == "false"
    assert spark.conf.get("spark.ui.enabled") == "false"
    assert spark.sparkContext.uiWebUrl is None


@pytest.mark.spark
def test_live_session_conf_holds_no_secret(spark: SparkSession) -> None:
    assert spark.sparkContext.master.startswith("local")  # type: ignore[union-attr]
    conf = spark.sparkContext.getConf().getAll()
    assert "spark.authenticate.secret" not in dict(conf)
    api_key = os.environ["CIPHERSPARK_API_KEY"]
    assert api_key == TEST_CREDENTIALS.api_key
    assert not any(api_key in key or api_key in value for key, value in conf)
    sql_conf = spark.conf.getAll
    assert not any(api_key in str(key) or api_key in str(value) for key, value in sql_conf.items())


# -- Spark's own plaintext writers are refused ----------------------------------------------------

PLAINTEXT_WRITES = {
    "df.write.csv": lambda spark, df, out: df.write.csv(out),
    "df.write.format(json).save": lambda spark, df, out: df.write.format("json").save(out),
    "df.write.orc": lambda spark, df, out: df.write.orc(out),
    "df.write.text": lambda spark, df, out: df.selectExpr("CAST(id AS STRING) v").write.text(out),
    "saveAsTable csv": lambda spark, df, out: (
        df.write.format("csv").option("path", out).saveAsTable("guard_save")
    ),
    "CTAS USING csv": lambda spark, df, out: spark.sql(
        f"CREATE TABLE guard_ctas USING csv LOCATION '{out}' AS SELECT 1 AS a"
    ),
    "INSERT OVERWRITE DIRECTORY USING json": lambda spark, df, out: spark.sql(
        f"INSERT OVERWRITE DIRECTORY '{out}' USING json SELECT 1 AS a"
    ),
    "INSERT INTO a csv table": lambda spark, df, out: (
        spark.sql(f"CREATE TABLE IF NOT EXISTS guard_t (a INT) USING csv LOCATION '{out}'"),
        spark.sql("INSERT INTO guard_t VALUES (1)"),
    ),
}


@pytest.fixture
def catalog(spark: SparkSession):
    """The session catalog, for the table writes: their tables dropped afterwards, and the empty
    warehouse folder Spark makes in the working folder on first use removed if it made it."""
    from pathlib import Path

    warehouse = Path(str(spark.conf.get("spark.sql.warehouse.dir")).removeprefix("file:"))
    existed = warehouse.exists()
    yield spark
    for table in ("guard_save", "guard_ctas", "guard_t"):
        spark.sql(f"DROP TABLE IF EXISTS {table}")
    if not existed and warehouse.is_dir() and not any(warehouse.iterdir()):
        warehouse.rmdir()


def _data_files(folder: os.PathLike[str]) -> list[str]:
    from pathlib import Path

    root = Path(folder)
    return [str(p) for p in root.rglob("*") if p.is_file() and not p.name.startswith((".", "_"))]


@pytest.mark.parametrize("how", PLAINTEXT_WRITES)
def test_spark_plaintext_writes_are_refused(catalog: SparkSession, tmp_path, how: str) -> None:
    from cipherspark.errors import UsageError
    from cipherspark.spark import cipherspark_errors

    out = str(tmp_path / "out")
    with pytest.raises(UsageError, match=r"refuses to write .* in plaintext"), cipherspark_errors():
        PLAINTEXT_WRITES[how](catalog, catalog.range(5), out)
    assert _data_files(tmp_path) == []  # refused at analysis: nothing was written


def test_the_file_sources_v2_path_is_refused_too(spark: SparkSession, tmp_path) -> None:
    from cipherspark.errors import UsageError
    from cipherspark.spark import cipherspark_errors

    default = str(spark.conf.get("spark.sql.sources.useV1SourceList"))
    spark.conf.set("spark.sql.sources.useV1SourceList", "")
    try:
        with pytest.raises(UsageError, match="files of format CSV"), cipherspark_errors():
            spark.range(5).write.mode("append").csv(str(tmp_path / "v2"))
    finally:
        spark.conf.set("spark.sql.sources.useV1SourceList", default)
    assert _data_files(tmp_path) == []


def test_plaintext_writes_only_through_the_named_opt_out(spark: SparkSession, tmp_path) -> None:
    from cipherspark.errors import UsageError
    from cipherspark.spark import cipherspark_errors, secure_session

    secure_session(master="local[2]", credentials=TEST_CREDENTIALS, unsafe_plaintext_writes=True)
    try:
        for how in ("df.write.csv", "INSERT OVERWRITE DIRECTORY USING json"):
            out = tmp_path / how.replace(" ", "-")
            PLAINTEXT_WRITES[how](spark, spark.range(5), str(out))
            assert _data_files(out), how
        assert spark.read.csv(str(tmp_path / "df.write.csv")).count() == 5
    finally:
        secure_session(master="local[2]", credentials=TEST_CREDENTIALS)
    # Back to refusing; encrypted CSV still writes (the session's own encrypted source).
    with pytest.raises(UsageError), cipherspark_errors():
        spark.range(5).write.csv(str(tmp_path / "again"))
    assert not (tmp_path / "again").exists() or _data_files(tmp_path / "again") == []


RDD_WRITES = {
    "saveAsTextFile": lambda rdd, out: rdd.saveAsTextFile(out),
    "saveAsPickleFile": lambda rdd, out: rdd.saveAsPickleFile(out),
    "saveAsSequenceFile": lambda rdd, out: rdd.map(lambda x: (x, x)).saveAsSequenceFile(out),
    "saveAsHadoopFile": lambda rdd, out: rdd.map(lambda x: (x, x)).saveAsHadoopFile(
        out, "org.apache.hadoop.mapred.TextOutputFormat"
    ),
    "saveAsNewAPIHadoopFile": lambda rdd, out: rdd.map(lambda x: (x, x)).saveAsNewAPIHadoopFile(
        out, "org.apache.hadoop.mapreduce.lib.output.TextOutputFormat"
    ),
}


@pytest.mark.parametrize("how", RDD_WRITES)
def test_the_rdd_apis_plaintext_writes_are_refused(spark: SparkSession, tmp_path, how) -> None:
    """They never reach the analyser (the guard's check rule): refused in Python, before any
    Spark job runs, so nothing is written."""
    from cipherspark.errors import UsageError

    rdd = spark.sparkContext.parallelize(["secret-row-1", "secret-row-2"], 2)
    with pytest.raises(UsageError, match=rf"rdd\.{how}\(\) writes plaintext files"):
        RDD_WRITES[how](rdd, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_the_rdd_apis_writes_only_through_the_named_opt_out(spark: SparkSession, tmp_path) -> None:
    from cipherspark.spark import secure_session

    secure_session(master="local[2]", credentials=TEST_CREDENTIALS, unsafe_plaintext_writes=True)
    try:
        spark.sparkContext.parallelize(["a", "b"], 1).saveAsTextFile(str(tmp_path / "out"))
    finally:
        secure_session(master="local[2]", credentials=TEST_CREDENTIALS)
    assert spark.sparkContext.textFile(str(tmp_path / "out")).collect() == ["a", "b"]


def test_a_session_started_without_the_guard_is_refused(tmp_path) -> None:
    # A session the guard is not part of (started before, by plain PySpark): joining it would
    # let plaintext writes through.
    import subprocess
    import sys

    code = (
        "from pyspark.sql import SparkSession\n"
        "from cipherspark.errors import InputError\n"
        "from cipherspark.spark import secure_session\n"
        "SparkSession.builder.master('local[1]').getOrCreate()\n"
        "try:\n"
        "    secure_session(master='local[1]')\n"
        "except InputError as exc:\n"
        "    print('refused:', exc)\n"
        "secure_session(master='local[1]', unsafe_plaintext_writes=True)\n"
        "print('opted out')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (
        "refused: this Spark session was started without cipherspark's plaintext-write "
        "guard" in result.stdout
    )
    assert result.stdout.strip().endswith("opted out")


def test_a_jvm_that_cannot_load_the_guard_is_refused(tmp_path) -> None:
    # spark-submit starts the driver JVM before the application's session (as a pod's
    # entrypoint does): without the jar on its class path, Spark skips the extension with a
    # warning and the conf still names it. Before the check looked at the analyser's rules,
    # such a session started and a plaintext CSV write went through.
    import subprocess
    import sys

    import pyspark

    app = tmp_path / "app.py"
    app.write_text(
        "from cipherspark.errors import InputError\n"
        "from cipherspark.spark import secure_session\n"
        "try:\n"
        "    spark = secure_session(master='local[1]')\n"
        "except InputError as exc:\n"
        "    print('refused:', exc)\n"
        "else:\n"
        f"    spark.range(3).write.csv({str(tmp_path / 'out')!r})\n"
        "    print('written')\n"
    )
    spark_home = Path(pyspark.__file__).parent
    result = subprocess.run(
        [str(spark_home / "bin" / "spark-submit"), "--master", "local[1]", str(app)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "SPARK_HOME": str(spark_home), "PYSPARK_PYTHON": sys.executable},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "refused: cipherspark's plaintext-write guard is named in spark.sql.extensions but " \
        "its class is not on the driver's class path" in result.stdout, result.stdout
    assert not (tmp_path / "out").exists()


# -- importing the package is cheap ----------------------------------------------------------------


def test_importing_cipherspark_spark_does_not_import_pyspark() -> None:
    import subprocess
    import sys

    code = (
        "import sys, cipherspark.spark, cipherspark.spark.pme, cipherspark.spark._pme_keys; "
        "print('pyspark' in sys.modules); import cipherspark.spark as s; "
        "print(all(getattr(s, n) is not None for n in s.__all__))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.split() == ["False", "True"]
