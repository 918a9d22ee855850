"""``--kms-ca`` on the command line pins the server's certificate for every command that talks to
the KMS, as ``CIPHERSPARK_KMS_CA`` does; without either, the self-signed server is refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kms.server.conftest import KmsSetup, cli, unique

pytestmark = pytest.mark.servers


@pytest.fixture
def env(setup: KmsSetup, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """App A at the session's server, and no CA in the environment: only the flag gives it."""
    monkeypatch.delenv("CIPHERSPARK_KMS_CA", raising=False)
    return {"CIPHERSPARK_APP_ID": setup.app_a["app_id"],
            "CIPHERSPARK_API_KEY": setup.app_a["api_key"],
            "CIPHERSPARK_KMS": setup.server.url}


def test_without_the_ca_the_server_is_refused(env: dict[str, str]) -> None:
    refused = cli("key", "list", env=env, check=False)
    assert refused.returncode == 1
    assert "TLS verification" in refused.stderr and "--kms-ca" in refused.stderr


def test_the_flag_pins_the_ca_for_every_kms_command(setup: KmsSetup, env: dict[str, str],
                                                    tmp_path: Path) -> None:
    ca = ["--kms-ca", str(setup.server.ca)]
    name = unique("flag-ca")
    assert name in cli("key", "create", name, *ca, env=env).stdout
    assert name in cli("key", "list", *ca, env=env).stdout
    plain = tmp_path / "plain.csv"
    plain.write_bytes(b"name,age,job\nann,30,Developer\n")
    cli("encrypt", str(plain), str(tmp_path / "plain.cspk"), "--key", name, *ca, env=env)
    cli("decrypt", str(tmp_path / "plain.cspk"), str(tmp_path / "back.csv"), *ca, env=env)
    assert (tmp_path / "back.csv").read_bytes() == plain.read_bytes()
    assert cli("key", "policy", "show", name, *ca, env=env).stdout.strip() == "null"


@pytest.mark.spark
@pytest.mark.timeout(400)
def test_the_flag_reaches_spark_workers(setup: KmsSetup, env: dict[str, str],
                                        tmp_path: Path) -> None:
    """The job commands' Python workers unwrap through the server with the flag's CA too."""
    ca = ["--kms-ca", str(setup.server.ca)]
    name = unique("spark-ca")
    cli("key", "create", name, *ca, env=env)
    people = tmp_path / "people.csv"
    people.write_bytes(b"name,age,job\nann,30,Developer\nbob,50,Developer\ncy,25,Engineer\n")
    cli("encrypt", str(people), str(tmp_path / "people.cspk"), "--key", name, *ca, env=env)

    def job(*args: str) -> str:
        result = subprocess.run([sys.executable, "-m", "cipherspark", *args, "--key", name,
                                 "--master", "local[1]", *ca], capture_output=True, text=True,
                                timeout=300, cwd=tmp_path, env={**os.environ, **env})
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    # One job command: they all build their session in cli/_spark.session(), which puts the
    # flag's CA into the workers' ExecutorConfig (a second one cost a Spark start, ~100 s of
    # CI's time, for the same line of code).
    job("sql", "SELECT job, count(*) AS n FROM people GROUP BY job ORDER BY job",
        "--table", "people=people.cspk", "-o", "jobs.cspk")
    cli("decrypt", str(tmp_path / "jobs.cspk"), str(tmp_path / "jobs.csv"), *ca, env=env)
    assert (tmp_path / "jobs.csv").read_text() == "job,n\nDeveloper,2\nEngineer,1\n"
