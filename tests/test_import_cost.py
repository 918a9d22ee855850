"""The non-Spark commands must not import the heavy stacks (issue 18: --help and key list < 0.5 s).

Not a timing test: each case runs the CLI in a fresh interpreter and reads ``sys.modules`` at
the end, so a top-level ``import pyspark`` (or pyarrow, fastapi, ...) slipped into any command
module fails here whatever the machine's load.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Spark, Arrow, the KMS server's web stack, the HTTP client, and (for --help) the crypto bindings.
_HEAVY_ALWAYS = (
    "pyspark",
    "py4j",
    "pyarrow",
    "pandas",
    "numpy",
    "fastapi",
    "starlette",
    "uvicorn",
    "httpx",
)

_PROBE = """
import contextlib, io, json, sys
from cipherspark.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted({m.split(".")[0] for m in sys.modules})}))
"""


def _imported(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> tuple[int, set[str]]:
    run_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *args],
        cwd=cwd,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout.strip().splitlines()[-1])
    return int(answer["code"]), set(answer["modules"])


@pytest.mark.parametrize(
    "args", [["--help"], ["key", "--help"], ["sql", "--help"], ["kms", "--help"], ["--version"]]
)
def test_help_imports_no_heavy_module(args: list[str], tmp_path: Path) -> None:
    code, modules = _imported(args, tmp_path)
    assert code == 0
    heavy = modules & {*_HEAVY_ALWAYS, "cryptography"}
    assert not heavy, f"cipherspark {' '.join(args)} imported {sorted(heavy)}"


def test_key_list_on_a_local_keystore_imports_no_spark_or_server(tmp_path: Path) -> None:
    env = {"CIPHERSPARK_APP_ID": "import-cost", "CIPHERSPARK_API_KEY": "import-cost-api-key-0123"}
    subprocess.run(
        [sys.executable, "-m", "cipherspark", "key", "create", "k1"],
        cwd=tmp_path,
        env={**os.environ, **env},
        capture_output=True,
        check=True,
        timeout=120,
    )
    code, modules = _imported(["key", "list"], tmp_path, env)
    assert code == 0
    # cryptography is needed here (the keystore is sealed); Spark and the web stack are not.
    heavy = modules & set(_HEAVY_ALWAYS)
    assert not heavy, f"cipherspark key list imported {sorted(heavy)}"


def test_the_probe_sees_a_heavy_import(tmp_path: Path) -> None:
    # The check can fail: a command that does import a heavy module is caught by the same probe.
    probe = _PROBE.replace(
        "from cipherspark.cli import main",
        "from cipherspark.cli import main\nimport cipherspark.kms.local",
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe, "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "cryptography" in json.loads(proc.stdout.strip().splitlines()[-1])["modules"]
