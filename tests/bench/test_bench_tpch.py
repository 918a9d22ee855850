"""The TPC-H benchmark script runs on tiny sizes and ends with its documented last lines.

Split from test_bench_smoke.py so that the two files run on two pytest-xdist workers at once
(each is minutes of Spark on CI's 2 cores). Not timed: only the format is checked.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest

from tests.bench.test_bench_smoke import RATIO, _lines

pytestmark = [pytest.mark.servers, pytest.mark.spark]


def _tpchgen() -> None:
    exe = Path(sys.executable).parent / "tpchgen-cli"
    if not exe.exists() and shutil.which("tpchgen-cli") is None:
        pytest.skip("tpchgen-cli is not installed (the bench extra)")


def test_tpch() -> None:
    _tpchgen()
    lines = _lines(
        "tpch.py", "--scale", "0.001", "--runs", "1", "--queries", "Q1", "Q6", "--unpruned"
    )
    assert re.fullmatch(rf"tpch encrypted/plaintext geomean: {RATIO}", lines[-2]), lines
    assert re.fullmatch(rf"tpch encrypted/plaintext max: {RATIO} \(Q(1|6)\)", lines[-1]), lines


# One of each construct the 22 queries use beyond joins and aggregates: a correlated scalar
# subquery (Q2), EXISTS (Q4), an outer join (Q13), a CTE (Q15), NOT IN (Q16), NOT EXISTS (Q22).
# All 22 take minutes even at these sizes: the script runs them by default.
PARQUET_SMOKE = ["Q2", "Q4", "Q13", "Q15", "Q16", "Q22"]


def test_tpch_parquet() -> None:
    # Plaintext and encrypted Parquet and encrypted CSV (--format both), each result checked
    # equal to plaintext Parquet's by the script, which exits non-zero otherwise; --runs 0:
    # only that checking pass, to keep the test short.
    _tpchgen()
    lines = _lines(
        "tpch.py",
        # 0.001, not 0.01: a tenth of the data to generate and encrypt (the test took 300 s of
        # CI's 2-core time at 0.01; the checks are the same).
        "--scale",
        "0.001",
        "--runs",
        "0",
        "--format",
        "both",
        "--queries",
        *PARQUET_SMOKE,
    )
    rows = [line for line in lines if line.endswith("rows)")]
    assert [line.split()[0] for line in rows] == PARQUET_SMOKE, lines
    assert all("results equal" in line and "encrypted CSV" in line for line in rows), lines
    assert re.fullmatch(rf"tpch encrypted CSV/plaintext Parquet geomean: {RATIO}", lines[-3]), lines
    assert re.fullmatch(rf"tpch encrypted/plaintext geomean: {RATIO}", lines[-2]), lines
    assert re.fullmatch(rf"tpch encrypted/plaintext max: {RATIO} \(Q\d+\)", lines[-1]), lines
