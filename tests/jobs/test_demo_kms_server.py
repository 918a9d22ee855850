"""``cipherspark demo --kms-server``: the whole flow through a real KMS server it starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from cipherspark.kms.server import verify_audit

pytestmark = [pytest.mark.spark, pytest.mark.timeout(300)]

_SCRIPT = (
    "import sys\n"
    "from cipherspark.cli import main\n"
    "sys.exit(main(['demo', '--kms-server', '--rows', '5000', '--workdir', sys.argv[1]]))\n"
)


def test_demo_runs_through_a_kms_server(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    # A fresh interpreter: Spark sessions are per process.
    env = {k: v for k, v in os.environ.items() if k != "CIPHERSPARK_KMS_CA"}
    result = subprocess.run([sys.executable, "-c", _SCRIPT, str(workdir)], capture_output=True,
                            text=True, timeout=280, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "start KMS server" in result.stdout and "verified in" in result.stdout
    data = workdir / "kms-server"
    ops: Counter[tuple[str, str]] = Counter()
    for line in (data / "audit.log").read_text().splitlines():
        entry = json.loads(line)
        ops[(entry["op"], entry["result"])] += 1
    # encrypt: a data key; the query: unwraps in the executors and a key for the output;
    # decrypt: unwraps. Nothing failed.
    assert ops[("key.create", "ok")] == 1
    assert ops[("datakey.plaintext", "ok")] >= 1
    assert ops[("datakey.unwrap", "ok")] >= 2
    assert all(outcome == "ok" for _, outcome in ops)
    assert verify_audit(data).entries == sum(ops.values())
    # The server was stopped gracefully, and the credentials files are private.
    assert "Finished server process" in (data / "server.err").read_text()
    for name in ("kms-server-admin.json", "kms-server-credentials.json"):
        assert (workdir / name).stat().st_mode & 0o077 == 0
