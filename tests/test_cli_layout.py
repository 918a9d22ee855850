"""The shape of the ``cipherspark`` command: version, ``python -m``, shared options, deploy group.

No Spark and no server here: what these check is the command tree itself (the options a command
takes, their help and defaults) and the entry points.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import typer

from cipherspark.cli import app, main

# Every command that talks to a KMS, and so must take --kms-ca.
KMS_COMMANDS = [
    ("encrypt",),
    ("decrypt",),
    ("key", "create"),
    ("key", "list"),
    ("key", "policy", "set"),
    ("key", "policy", "show"),
    ("query", "simple"),
    ("sql",),
    ("run",),
    ("migrate", "bigdl"),
    ("dataset", "verify"),
    ("dataset", "register"),
    ("dataset", "cp"),
    ("dataset", "mv"),
    ("kms", "app", "create"),
    ("kms", "wait"),
    ("kms", "app", "disable"),
    ("kms", "app", "enable"),
    ("kms", "credential", "create"),
    ("kms", "credential", "list"),
    ("kms", "credential", "revoke"),
    ("kms", "admin-token", "rotate"),
    ("kms", "simulated-platform", "add"),
    ("kms", "simulated-platform", "list"),
    ("kms", "simulated-platform", "remove"),
]

SHARED = ("--kms", "--kms-ca", "--app-id", "--api-key", "--admin-token", "--key", "--master",
          "--spark-properties", "--overwrite", "--output", "--json", "--seed", "--data", "--dir",
          "--simulated-key", "--pccs-url", "--pccs-ca", "--api-key-file", "--admin-token-file")
# A secret's flag (deprecated: it shows in ps) and the option that reads it from a file.
SECRET_FLAGS = {"--api-key": "--api-key-file", "--admin-token": "--admin-token-file"}

DEPLOY_COMMANDS = ("submit", "gramine-manifest", "attestation-policy")


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty folder, and none of the variables the options default from."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("CIPHERSPARK_") and name != "CIPHERSPARK_SIMULATED_TEE_KEY":
            monkeypatch.delenv(name)


# Typer builds the tree from its own copy of Click's classes: looked at by attribute, not type.


def _root() -> Any:
    return typer.main.get_command(app)


def _commands() -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command of the tree (groups left out) with its path, hidden aliases too."""
    def walk(path: tuple[str, ...], command: Any) -> Iterator[tuple[tuple[str, ...], Any]]:
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                yield from walk((*path, name), sub)
        else:
            yield path, command

    yield from walk((), _root())


def _options(command: Any) -> dict[str, Any]:
    return {opt: param for param in command.params if param.param_type_name == "option"
            for opt in param.opts}


def _python_m(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cipherspark", *args], capture_output=True,
                          text=True, timeout=60, check=False)


# -- entry points ---------------------------------------------------------------------------------


def test_python_m_version_is_the_installed_distributions() -> None:
    result = _python_m("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"cipherspark {version('cipherspark')}\n"
    assert result.stderr == ""


def test_version_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.split() == ["cipherspark", version("cipherspark")]


def test_python_m_help() -> None:
    result = _python_m("--help")
    assert result.returncode == 0, result.stderr
    assert re.search(r"Usage: cipherspark \[OPTIONS\] COMMAND", result.stdout)
    assert "--version" in result.stdout


# -- shared options -------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [pytest.param(c, id="-".join(c)) for c in KMS_COMMANDS])
def test_kms_commands_take_kms_ca(capsys: pytest.CaptureFixture[str],
                                  command: tuple[str, ...]) -> None:
    assert main([*command, "--help"]) == 0
    text = capsys.readouterr().out
    assert "--kms-ca" in text
    assert "CIPHERSPARK_KMS_CA" in text


def test_every_command_with_kms_takes_kms_ca() -> None:
    with_kms = {path for path, command in _commands() if "--kms" in _options(command)}
    assert with_kms == set(KMS_COMMANDS)
    for path, command in _commands():
        if path in with_kms:
            assert "--kms-ca" in _options(command), path


@pytest.mark.parametrize(("flag", "file_flag"), SECRET_FLAGS.items())
def test_every_secret_flag_has_a_file_option(flag: str, file_flag: str) -> None:
    with_flag = [path for path, command in _commands() if flag in _options(command)]
    assert with_flag
    for path, command in _commands():
        options = _options(command)
        if flag in options:
            assert file_flag in options, f"{' '.join(path)} takes {flag} but not {file_flag}"
            assert "Deprecated as a flag" in (options[flag].help or "")
            assert options[file_flag].envvar is None  # the variable is the secret's own


def test_a_secret_flag_warns_and_its_variable_does_not(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code = main(["kms", "app", "create", "an app", "--admin-token", "t"])
    assert code == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == ("cipherspark: warning: --admin-token is deprecated: its value shows in ps "
                      "and in the shell's history; set CIPHERSPARK_KMS_ADMIN_TOKEN or use "
                      "--admin-token-file FILE")
    monkeypatch.setenv("CIPHERSPARK_KMS_ADMIN_TOKEN", "t")
    assert main(["kms", "app", "create", "an app"]) == 2
    assert not capsys.readouterr().err.startswith("cipherspark: warning")


@pytest.mark.parametrize("flag", SHARED)
def test_a_shared_option_means_the_same_everywhere(flag: str) -> None:
    seen: dict[tuple[object, ...], list[tuple[str, ...]]] = {}
    for path, command in _commands():
        option = _options(command).get(flag)
        # attestation-policy's --key is a different option on purpose: a repeatable list of the
        # keys an enclave may unwrap, with no default from CIPHERSPARK_KEY. decrypt's --key is
        # too: the key its input must be under, optional (issue 14).
        # run's --key too: the key of the Parquet files the application writes, optional with
        # --unsafe-plaintext-parquet.
        # migrate bigdl --check-only reads BigDL files and needs no cipherspark key.
        exempt = ("attestation-policy", "bigdl", "decrypt", "run")
        if option is None or (flag == "--key" and path[-1] in exempt):
            continue
        facts = (tuple(option.opts), tuple(option.secondary_opts), option.help,
                 option.envvar, option.default, option.is_flag, option.multiple,
                 option.required, option.rich_help_panel)
        seen.setdefault(facts, []).append(path)
    assert len(seen) == 1, seen
    assert len(next(iter(seen.values()))) >= 2, "shared by several commands"


def test_kms_admin_commands_need_the_server_url(capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIPHERSPARK_KMS_ADMIN_TOKEN", "t")
    code = main(["kms", "app", "create", "an app"])
    assert code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("cipherspark: error: ")
    assert "--kms https://" in err[0]


def test_job_commands_hand_the_ca_to_the_workers(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """--kms-ca reaches Spark's Python workers in their ExecutorConfig (they get only the URL)."""
    import cipherspark.spark
    from cipherspark.cli import _spark
    from cipherspark.kms import Credentials
    from cipherspark.settings import ExecutorConfig

    started: list[dict[str, object]] = []
    monkeypatch.setattr(cipherspark.spark, "secure_session",
                        lambda **kwargs: started.append(kwargs))
    monkeypatch.setattr(_spark, "spark_logs", [])
    monkeypatch.delenv("CIPHERSPARK_KMS_CA", raising=False)
    _spark.session("local[1]", Credentials("a", "b"), "test", None, Path("ca.pem"))
    assert started and started[0]["master"] == "local[1]"
    executor = started[0]["executor"]
    assert isinstance(executor, ExecutorConfig)
    assert executor.kms_ca == tmp_path / "ca.pem"  # absolute: workers run in other folders
    assert executor.environ()["CIPHERSPARK_KMS_CA"] == str(tmp_path / "ca.pem")
    _spark.session("local[1]", Credentials("a", "b"), "test", None, None)
    executor = started[1]["executor"]
    assert isinstance(executor, ExecutorConfig) and executor.kms_ca is None


# -- the deploy group -----------------------------------------------------------------------------


def test_deploy_group_holds_the_deployment_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["deploy", "--help"]) == 0
    text = capsys.readouterr().out
    for name in DEPLOY_COMMANDS:
        assert re.search(rf"^│ {name}\s", text, re.MULTILINE), name
    assert main(["--help"]) == 0
    top = capsys.readouterr().out
    assert re.search(r"^│ deploy\s", top, re.MULTILINE)
    for name in DEPLOY_COMMANDS:
        assert not re.search(rf"^│ {name}\s", top, re.MULTILINE), f"{name} is not hidden"


@pytest.mark.parametrize("name", DEPLOY_COMMANDS)
def test_old_names_are_hidden_aliases(capsys: pytest.CaptureFixture[str], name: str) -> None:
    root = _root()
    alias = root.commands[name]
    deploy = root.commands["deploy"]
    assert alias.hidden and not deploy.commands[name].hidden
    grouped = deploy.commands[name]
    assert alias.help == grouped.help
    assert [p.opts for p in alias.params] == [p.opts for p in grouped.params]
    assert main([name, "--help"]) == 0
    assert f"Usage: cipherspark {name} " in capsys.readouterr().out


def test_alias_and_group_command_do_the_same(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    for args, out in ((["attestation-policy"], "old.json"),
                      (["deploy", "attestation-policy"], "new.json")):
        assert main([*args, out, "--key", "simple"]) == 0
    assert (tmp_path / "old.json").read_text() == (tmp_path / "new.json").read_text()
    capsys.readouterr()
    deploy_dir = Path(__file__).resolve().parents[1] / "deploy"
    submit = ["--dry-run", "--master", "k8s://https://k8s.example:6443", "--image", "img",
              "--deploy-dir", str(deploy_dir), "--", "query", "simple",
              "--input", "/data/people.csv.cspk", "--output", "/data/dev.cspk", "--key", "simple"]
    assert main(["submit", *submit]) == 0
    old = capsys.readouterr().out
    assert main(["deploy", "submit", *submit]) == 0
    assert capsys.readouterr().out == old != ""


def test_the_cli_default_segment_size_is_the_containers() -> None:
    from cipherspark.cli._options import DEFAULT_SEGMENT_SIZE
    from cipherspark.crypto import container

    assert DEFAULT_SEGMENT_SIZE == container.DEFAULT_SEGMENT_SIZE
