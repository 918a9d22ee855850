"""Settings: every CIPHERSPARK_* name is defined in cipherspark.settings, and only it (and the
CLI's option declarations, through its constants) reads the environment."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cipherspark import settings
from cipherspark.settings import ExecutorConfig

SRC = Path(settings.__file__).parent
NAMES = {value for name, value in vars(settings).items() if name.startswith("ENV_")}


def test_every_cipherspark_variable_is_a_settings_constant() -> None:
    used = set()
    for path in SRC.rglob("*.py"):
        used.update(re.findall(r"CIPHERSPARK_[A-Z_]+", path.read_text()))
    assert used - NAMES == set()


def test_only_the_settings_module_reads_cipherspark_variables() -> None:
    reads = re.compile(r"(os\.environ(\.get)?|getenv)\s*[\(\[]\s*[\"']CIPHERSPARK_")
    offenders = [
        str(p.relative_to(SRC))
        for p in SRC.rglob("*.py")
        if p.name != "settings.py" and reads.search(p.read_text())
    ]
    assert offenders == []


@pytest.mark.parametrize(
    "config",
    [
        ExecutorConfig(),
        ExecutorConfig(
            kms_ca=Path("/ca.pem"),
            tee="simulated",
            simulated_tee_key=Path("/k"),
            app_id_file=Path("/a"),
            api_key_file=Path("/b"),
            unsafe_plaintext_kms=True,
        ),
    ],
)
def test_executor_config_round_trips_through_the_environment(config: ExecutorConfig) -> None:
    assert ExecutorConfig.from_environ(config.environ()) == config
    assert all(name in NAMES for name in config.environ())


def test_no_tee_and_none_mean_the_plain_unwrap() -> None:
    assert ExecutorConfig.from_environ({"CIPHERSPARK_TEE": "none"}).tee is None
    assert ExecutorConfig.from_environ({"CIPHERSPARK_TEE": " "}).tee is None


def test_the_executor_config_holds_no_secret() -> None:
    config = ExecutorConfig(kms_ca=Path("/ca.pem"), tee="tdx")
    assert settings.ENV_API_KEY not in config.environ()
    assert settings.ENV_APP_ID not in config.environ()


def test_session_settings_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CIPHERSPARK_KMS", "https://kms.example:8443")
    monkeypatch.setenv("CIPHERSPARK_KEY", "k1")
    monkeypatch.setenv("CIPHERSPARK_APP_ID", "app")
    monkeypatch.setenv("CIPHERSPARK_API_KEY", "secret-api-key")
    monkeypatch.setenv("CIPHERSPARK_MASTER", "spark://127.0.0.1:7077")
    monkeypatch.setenv("CIPHERSPARK_SPARK_PROPERTIES", "/conf/spark.properties")
    monkeypatch.setenv("CIPHERSPARK_KMS_CA", "/ca.pem")
    found = settings.session_settings()
    assert found == settings.SessionSettings(
        kms="https://kms.example:8443",
        key="k1",
        credentials=("app", "secret-api-key"),
        executor=ExecutorConfig(kms_ca=Path("/ca.pem")),
        master="spark://127.0.0.1:7077",
        spark_properties=Path("/conf/spark.properties"),
    )
    assert "secret-api-key" not in repr(found)


def test_session_settings_take_unset_and_empty_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)
    assert settings.session_settings() == settings.SessionSettings()
    for name in (
        "CIPHERSPARK_KMS",
        "CIPHERSPARK_KEY",
        "CIPHERSPARK_MASTER",
        "CIPHERSPARK_SPARK_PROPERTIES",
        "CIPHERSPARK_APP_ID",
    ):
        monkeypatch.setenv(name, "")
    monkeypatch.setenv("CIPHERSPARK_API_KEY", "only-half")  # no APP ID: no credentials
    assert settings.session_settings() == settings.SessionSettings()


def test_bigdl_secrets_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CIPHERSPARK_BIGDL_API_KEY", raising=False)
    monkeypatch.setenv("CIPHERSPARK_BIGDL_PRIMARY_KEY_PLAINTEXT", "  ")
    assert settings.bigdl_api_key() is None
    assert settings.bigdl_primary_key_plaintext() is None
    monkeypatch.setenv("CIPHERSPARK_BIGDL_API_KEY", "210987654321\n")
    monkeypatch.setenv("CIPHERSPARK_BIGDL_PRIMARY_KEY_PLAINTEXT", "AAECAwQFBgcICQoLDA0ODw==")
    assert settings.bigdl_api_key() == "210987654321"
    assert settings.bigdl_primary_key_plaintext() == "AAECAwQFBgcICQoLDA0ODw=="
