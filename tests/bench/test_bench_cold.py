"""The cold-start benchmark script runs on tiny sizes: a ratio line per case, answers checked.

Like test_bench_smoke.py, not timed: only the format is checked (and that the script checked
cipherspark's results against the plain PySpark scripts' and found them equal, which it exits
non-zero otherwise). Each Spark case starts four driver JVMs (one checking run and one timed run
per side: about 50 s on 2 quiet cores), so the test runs one, TPC-H Q6 (the ``sql --table`` path
over ``encrypt --schema`` datasets, decimals and dates compared by value), plus two startup
commands. The Simple Query case (``query simple``, its counts checked too) runs in the full
benchmark; with it the test took 108 s here.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest

from tests.bench.test_bench_smoke import RATIO, _lines

pytestmark = [pytest.mark.servers, pytest.mark.spark]

SPARK_CASES = ["q6"]


def test_cold() -> None:
    exe = Path(sys.executable).parent / "tpchgen-cli"
    if not exe.exists() and shutil.which("tpchgen-cli") is None:
        pytest.skip("tpchgen-cli is not installed (the bench extra)")
    lines = _lines(
        "cold.py",
        "--repeats",
        "1",
        "--scale",
        "0.001",
        "--cases",
        "help",
        "keylist",
        *SPARK_CASES,
    )
    for case in SPARK_CASES:
        checked = rf"{case}: results match \(\d+ rows\)"
        assert any(re.fullmatch(checked, line) for line in lines), (case, lines)
        ratio = [line for line in lines if line.startswith(f"{case} ")]
        assert len(ratio) == 1, lines
        assert re.match(
            rf"{case} +cipherspark +\d+\.\d\d s +plain +\d+\.\d\d s +ratio {RATIO} +difference ",
            ratio[0],
        ), ratio
    for case in ("help", "keylist"):
        target = [line for line in lines if line.startswith(f"{case} ")]
        assert len(target) == 1, lines
        assert re.match(rf"{case} +cipherspark +\d+\.\d\d s +target < 0\.50 s: ", target[0])
    # The breakdown: the launcher's hooks found the steps of the CLI's job commands.
    for step in ("JVM start", "KMS + input checks", "query + write", "exit"):
        assert any(re.match(rf" +{re.escape(step)} +\d", line) for line in lines), (step, lines)
    assert not any("hooks were not found" in line for line in lines), lines
    assert re.fullmatch(rf"cold cipherspark/plain geomean: {RATIO}", lines[-1]), lines
