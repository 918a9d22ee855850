"""The secure session: Spark's own security switched on, and no secret in its conf."""

from __future__ import annotations

import os

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
    for key in ("spark.authenticate", "spark.network.crypto.enabled",
                "spark.io.encryption.enabled", "spark.python.unix.domain.socket.enabled"):
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
    assert not any(api_key in str(key) or api_key in str(value) for key, value in
                   sql_conf.items())
