"""Ctrl-C during a Spark command: one line, exit 130, nothing published.

The terminal sends SIGINT to the whole foreground process group: the CLI's Python and the Spark
JVM it started. The JVM dies at once, so Python sees the Py4J link break, not only its own
KeyboardInterrupt; before the CLI remembered the signal, this printed about 45 lines of Py4J
traceback and exited 1 or 70.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cipherspark.files import encrypt_path
from cipherspark.jobs.datagen import generate_people
from cipherspark.kms import LocalKms, open_kms
from tests.conftest import TEST_CREDENTIALS, TEST_KEY

pytestmark = pytest.mark.spark


def test_ctrl_c_during_query_simple_is_interrupted_130_and_nothing_is_published(
    tmp_path: Path,
) -> None:
    kms = open_kms((tmp_path / "kms").as_uri(), TEST_CREDENTIALS, create=True)
    assert isinstance(kms, LocalKms)
    kms.create_key(TEST_KEY)
    # Enough rows that the encrypted write is still running when the signal comes.
    generate_people(tmp_path / "people.csv", 600_000, seed=3)
    encrypt_path(tmp_path / "people.csv", tmp_path / "people.cspk", kms, TEST_KEY)
    job = subprocess.Popen(
        [sys.executable, "-m", "cipherspark", "query", "simple", "-i", "people.cspk",
         "-o", "developers.cspk", "--key", TEST_KEY, "--kms", kms.url, "--master", "local[1]"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )  # fmt: skip
    deadline = time.monotonic() + 300
    staging: list[Path] = []
    while not staging and time.monotonic() < deadline and job.poll() is None:
        staging = list(tmp_path.glob(".developers.cspk.cipherspark-*.staging"))
        time.sleep(0.05)
    assert staging, "the encrypted write should have started"
    assert job.poll() is None, "the job should still be running"
    os.killpg(job.pid, signal.SIGINT)  # what Ctrl-C does
    out, err = job.communicate(timeout=120)
    assert job.returncode == 130, (job.returncode, err[-3000:])
    assert err.strip().splitlines() == ["cipherspark: interrupted"], err[-3000:]
    assert "Developers aged" not in out
    assert not (tmp_path / "developers.cspk").exists()
