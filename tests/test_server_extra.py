"""FastAPI and uvicorn are the 'server' extra: everything but ``kms serve`` works without them.

Executor and enclave images install cipherspark without the extra (Gramine measures every file
installed), so the library and the CLI must not import the server's HTTP stack on the way. A fresh
interpreter with an import hook that makes those packages missing proves it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVER_PACKAGES = ("fastapi", "starlette", "uvicorn")

# Runs in a child interpreter: make the packages in argv[1] missing, import the library and the
# CLI, run the commands in argv[2], and print what was loaded and what each command did.
_CHILD = """
import contextlib, importlib.abc, io, json, sys

BLOCKED, COMMANDS = json.loads(sys.argv[1]), json.loads(sys.argv[2])

class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Missing())

import cipherspark, cipherspark.kms, cipherspark.kms.remote, cipherspark.kms.server
import cipherspark.spark, cipherspark.cli
from cipherspark.cli import main

results = []
for argv in COMMANDS:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    results.append({"argv": argv, "code": code, "out": out.getvalue(), "err": err.getvalue()})
loaded = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
try:  # the control: the hook does make the HTTP layer unimportable
    import cipherspark.kms.server.app
    blocked = False
except ModuleNotFoundError:
    blocked = True
print(json.dumps({"loaded": loaded, "results": results, "hook_blocks_the_app": blocked}))
"""


def _without_server_extra(*commands: list[str], cwd: Path) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(SERVER_PACKAGES),
                           json.dumps(commands)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    answer: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return answer


def test_library_and_cli_work_without_the_server_extra(tmp_path: Path) -> None:
    data = tmp_path / "kms-data"
    answer = _without_server_extra(
        ["--help"], ["--version"], ["key", "list", "--help"], ["kms", "serve", "--help"],
        ["deploy", "--help"], ["kms", "init", "--data", str(data)],
        ["kms", "serve", "--data", str(data)],
        cwd=tmp_path)
    assert answer["loaded"] == []
    assert answer["hook_blocks_the_app"] is True
    results = answer["results"]
    assert isinstance(results, list)
    *helps, init, serve = results
    for result in helps:
        assert result["code"] == 0, result
        assert result["out"], result
    assert init["code"] == 0, init
    assert "ADMIN TOKEN" in init["out"]
    # 'kms serve' says what is missing in one line, before it creates anything (no certificate).
    assert serve["code"] == 1, serve
    assert serve["err"] == ("cipherspark: error: the KMS server needs the 'server' extra: "
                            "pip install 'cipherspark[server]'\n")
    assert not (data / "tls").exists()


def test_server_packages_are_the_server_extra_only() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements: list[str]) -> set[str]:
        return {r.split("[")[0].split(">")[0].split("<")[0].split("=")[0].strip()
                for r in requirements}

    assert not names(project["dependencies"]) & {"fastapi", "uvicorn"}
    assert {"fastapi", "uvicorn"} <= names(project["optional-dependencies"]["server"])
    assert "cipherspark[server]" in project["optional-dependencies"]["test"]


def _stages(dockerfile: str) -> dict[str, tuple[str, str]]:
    """Each stage's base and the text of its instructions, by stage name."""
    stages: dict[str, tuple[str, str]] = {}
    for chunk in re.split(r"^(?=FROM )", dockerfile, flags=re.MULTILINE)[1:]:
        match = re.match(r"FROM (\S+) AS (\S+)", chunk)
        assert match, chunk.splitlines()[0]
        stages[match[2]] = (match[1], chunk)
    return stages


def test_only_the_runtime_image_carries_the_server() -> None:
    stages = _stages((ROOT / "deploy" / "Dockerfile").read_text())
    # The wheel build needs every file pyproject.toml names (license-files).
    assert "LICENSE" in stages["build"][1]
    # The enclave image's ancestry installs cipherspark without the extra.
    chain, name = [], "sgx"
    while name in stages:
        chain.append(name)
        name = stages[name][0]
    assert chain == ["sgx", "sgx-repos", "core"]
    assert "[server]" not in "".join(stages[stage][1] for stage in chain)
    # The image the KMS Deployment runs ('cipherspark kms serve') has it, and it is the default
    # target (the last stage).
    assert stages["runtime"][0] == "core" and "[server]" in stages["runtime"][1]
    assert list(stages)[-1] == "runtime"
