"""Each benchmark script runs on tiny sizes and ends with its documented last line.

Not timed: only the format is checked, so the benchmarks cannot rot. The Spark ones start a
session each, so they carry the ``spark`` marker.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.servers

BENCH = Path(__file__).resolve().parents[2] / "bench"
RATIO = r"\d+\.\d\d"


def _lines(*args: str, timeout: float = 600) -> list[str]:
    done = subprocess.run(
        [sys.executable, str(BENCH / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert lines, done.stderr[-3000:]
    return lines


def _last_line(*args: str, timeout: float = 600) -> str:
    return _lines(*args, timeout=timeout)[-1]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_crypto() -> None:
    line = _last_line("crypto.py", "--mib", "4", "--runs", "1")
    assert re.fullmatch(rf"decrypt/openssl: {RATIO}", line), line


def test_kms_load() -> None:
    line = _last_line("kms_load.py", "--requests", "20", "--concurrency", "2")
    assert re.fullmatch(r"unwrap req/s: \d+", line), line


@pytest.mark.spark
def test_simple_query() -> None:
    line = _last_line("simple_query.py", "--rows", "2000", "--runs", "1")
    assert re.fullmatch(rf"ratio encrypted/plaintext: {RATIO}", line), line


@pytest.mark.spark
def test_simple_query_parquet() -> None:
    # Both sides on Parquet: the script refuses to time them unless the plaintext side's footers
    # are PAR1 and the encrypted side's PARE, and both counts match the generator's.
    line = _last_line("simple_query.py", "--rows", "3000", "--runs", "1", "--format", "parquet")
    assert re.fullmatch(rf"ratio encrypted/plaintext: {RATIO}", line), line


@pytest.mark.spark
def test_scaling() -> None:
    pytest.importorskip("psutil", reason="psutil is in the bench extra")
    line = _last_line(
        "scaling.py", "--rows", "2000", "4000", "--runs", "1", "--warmup-rows", "3000"
    )
    assert re.fullmatch(rf"peak python worker RSS max/min across sizes: {RATIO}", line), line
