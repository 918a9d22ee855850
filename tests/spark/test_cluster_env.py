"""``cluster start`` hands its daemons a minimal environment: no exported secret reaches them.

The allow-list is tested without a JVM (``_daemon_env``); one test starts a real master and
worker and reads their environment from ``/proc/PID/environ``.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cipherspark import settings
from cipherspark.errors import ClusterError
from cipherspark.settings import ExecutorConfig
from cipherspark.spark import cluster
from cipherspark.spark.cluster import _daemon_env, start_cluster, stop_cluster

# Secrets a shell that starts a cluster may well have exported.
CANARIES = {
    "CIPHERSPARK_KMS_ADMIN_TOKEN": "admin-token-canary-0d5e",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-canary-77c1",
    "GITHUB_TOKEN": "github-token-canary-19aa",
    "SPARK_DAEMON_JAVA_OPTS": "-Dspark.authenticate.secret=conf-secret-canary-5b2f",
    "SPARK_WORKER_OPTS": "-Dcanary=worker-opts-canary-8e03",
    "PYSPARK_SUBMIT_ARGS": "--conf spark.authenticate.secret=submit-canary-4411 pyspark-shell",
}
# What executors need, exported as a user of 'cluster start' would.
EXECUTOR_ENV = {
    "CIPHERSPARK_APP_ID": "cluster-env-app",
    "CIPHERSPARK_API_KEY": "cluster-env-api-key-Zq81mR4vT0wXy2",
    "CIPHERSPARK_KMS_CA": "/srv/kms/ca.pem",
    "CIPHERSPARK_TEE": "simulated",
    "CIPHERSPARK_SIMULATED_TEE_KEY": "/srv/simulated/platform.key",
}
SPARK_SET = {
    "SPARK_HOME",
    "SPARK_CONF_DIR",
    "SPARK_LOCAL_IP",
    "SPARK_LOG_DIR",
    "SPARK_LOCAL_DIRS",
    "PYSPARK_PYTHON",
}


@pytest.fixture
def exported(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        **CANARIES,
        **EXECUTOR_ENV,
        "CIPHERSPARK_KMS": "https://kms:8443",
        "SOMETHING_ELSE": "x",
    }.items():
        monkeypatch.setenv(name, value)


def _no_canary(env: dict[str, str]) -> None:
    for name, value in CANARIES.items():
        assert name not in env, name
        canary = value.split("=")[-1].split()[0]
        assert not any(canary in v for v in env.values()), name


def test_the_master_gets_the_allow_list_and_spark_settings_only(
    tmp_path: Path, exported: None
) -> None:
    env = _daemon_env(tmp_path, None, worker=False)
    _no_canary(env)
    assert set(env) <= set(cluster._INHERITED) | SPARK_SET
    assert not [name for name in env if name.startswith("CIPHERSPARK_")]  # runs no job code
    assert env["PATH"] == os.environ["PATH"]
    assert env["PYSPARK_PYTHON"] == sys.executable
    assert env["SPARK_CONF_DIR"] == str(tmp_path.absolute() / "conf")
    assert "SOMETHING_ELSE" not in env


def test_a_worker_also_gets_what_executors_read(
    tmp_path: Path, exported: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _daemon_env(tmp_path, None, worker=True)
    _no_canary(env)
    assert set(env) <= set(cluster._INHERITED) | set(cluster._EXECUTOR_VARIABLES) | SPARK_SET
    for name, value in EXECUTOR_ENV.items():
        assert env[name] == value
    assert "CIPHERSPARK_KMS" not in env  # the URL travels with each scan
    # An executor started with this environment reads the configuration and credentials the
    # exporting shell had (settings is what reads them in the executor).
    expected = (settings.executor_config(), settings.worker_credentials(settings.executor_config()))
    monkeypatch.setattr(os, "environ", dict(env))
    assert (
        settings.executor_config(),
        settings.worker_credentials(settings.executor_config()),
    ) == expected


def test_credential_files_reach_workers_as_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CIPHERSPARK_APP_ID", raising=False)
    monkeypatch.delenv("CIPHERSPARK_API_KEY", raising=False)
    monkeypatch.setenv("CIPHERSPARK_APP_ID_FILE", "/run/secrets/app-id")
    monkeypatch.setenv("CIPHERSPARK_API_KEY_FILE", "/run/secrets/api-key")
    env = _daemon_env(tmp_path, None, worker=True)
    assert env["CIPHERSPARK_APP_ID_FILE"] == "/run/secrets/app-id"
    assert env["CIPHERSPARK_API_KEY_FILE"] == "/run/secrets/api-key"
    assert "CIPHERSPARK_API_KEY" not in env


def test_extra_env_is_added_and_wins(tmp_path: Path, exported: None) -> None:
    extra = {"CIPHERSPARK_API_KEY": "from-the-caller", "JAVA_TOOL_OPTIONS": "-Xss4m"}
    for worker in (False, True):
        env = _daemon_env(tmp_path, extra, worker=worker)
        assert env["CIPHERSPARK_API_KEY"] == "from-the-caller"
        assert env["JAVA_TOOL_OPTIONS"] == "-Xss4m"
        _no_canary(env)


def test_workers_pass_on_every_name_executors_read() -> None:
    """A field added to ExecutorConfig must be added to the workers' allow-list too."""
    # Not the defaults: environ() leaves a field at its default out.
    values: dict[type, object] = {Path: Path("/x"), str: "x", bool: True, int: 30}
    config = ExecutorConfig(
        **{  # type: ignore[arg-type]
            f.name: next(v for t, v in values.items() if t.__name__ in str(f.type))
            for f in dataclasses.fields(ExecutorConfig)
        }
    )
    assert all(getattr(config, f.name) for f in dataclasses.fields(ExecutorConfig))
    read_by_executors = {*config.environ(), settings.ENV_APP_ID, settings.ENV_API_KEY}
    assert read_by_executors == set(cluster._EXECUTOR_VARIABLES)
    assert settings.ENV_KMS_ADMIN_TOKEN not in cluster._EXECUTOR_VARIABLES


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


@pytest.mark.spark
@pytest.mark.timeout(180)
def test_started_daemons_hold_no_exported_secret(tmp_path: Path, exported: None) -> None:
    running = start_cluster(tmp_path / "cluster", workers=1, cores=1, memory="512m")
    try:
        master, worker = _environ(running.master_pid), _environ(running.worker_pids[0])
    finally:
        stop_cluster(running.directory)
    for env in (master, worker):
        _no_canary(env)
        assert "SOMETHING_ELSE" not in env
        assert env["SPARK_CONF_DIR"] == str(running.properties.parent)
    assert not [name for name in master if name.startswith("CIPHERSPARK_")]
    assert worker["CIPHERSPARK_API_KEY"] == EXECUTOR_ENV["CIPHERSPARK_API_KEY"]


# -- the secret file: created new and 0600, never written into what was there -----------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def umask0() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


SECRET_CONF = {"spark.authenticate.secret": "conf-secret-0f3a9c"}


def test_the_secret_file_is_0600_before_it_takes_its_name(
    tmp_path: Path, umask0: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, int]] = []
    replace = os.replace

    def spy(src: Any, dst: Any) -> None:
        seen.append((Path(dst).name, _mode(Path(src))))
        replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    path = cluster._write_conf(tmp_path, SECRET_CONF)
    assert seen == [("spark-defaults.conf", 0o600)]
    assert _mode(path) == 0o600 and _mode(path.parent) == 0o700
    assert "conf-secret-0f3a9c" in path.read_text()


def test_a_planted_conf_file_is_replaced_not_written_into(tmp_path: Path, umask0: None) -> None:
    path = cluster.properties_file(tmp_path)
    path.parent.mkdir(mode=0o700, parents=True)
    path.write_text("planted\n")
    path.chmod(0o644)
    os.link(path, tmp_path / "attacker-copy")  # a name the planter can still read
    before = path.stat()
    cluster._write_conf(tmp_path, SECRET_CONF)
    assert (tmp_path / "attacker-copy").read_text() == "planted\n"
    assert _mode(tmp_path / "attacker-copy") == 0o644
    assert path.stat().st_ino != before.st_ino and _mode(path) == 0o600


def test_a_symlink_at_the_conf_path_is_not_followed(tmp_path: Path) -> None:
    path = cluster.properties_file(tmp_path)
    path.parent.mkdir(mode=0o700, parents=True)
    victim = tmp_path / "victim.conf"
    victim.write_text("victim\n")
    path.symlink_to(victim)
    cluster._write_conf(tmp_path, SECRET_CONF)
    assert victim.read_text() == "victim\n"
    assert not path.is_symlink() and _mode(path) == 0o600


def test_a_conf_folder_others_can_write_is_refused(tmp_path: Path) -> None:
    folder = cluster.properties_file(tmp_path).parent
    folder.mkdir(parents=True)
    folder.chmod(0o777)
    with pytest.raises(ClusterError, match="others cannot write"):
        cluster._write_conf(tmp_path, SECRET_CONF)
    assert list(folder.iterdir()) == []


def test_the_daemon_uis_need_a_fresh_signing_key_and_cannot_kill() -> None:
    first, second = cluster._ui_conf(), cluster._ui_conf()
    jws = "org.apache.spark.ui.JWSFilter"
    assert first["spark.ui.filters"] == jws
    key = first[f"spark.{jws}.param.secretKey"]
    assert len(base64.urlsafe_b64decode(key + "=" * (-len(key) % 4))) == 32
    assert key != second[f"spark.{jws}.param.secretKey"]
    assert first[f"spark.{jws}.param.requireExpiration"] == "true"
    assert first["spark.ui.killEnabled"] == "false"
    assert first["spark.master.ui.decommission.allow.mode"] == "DENY"
