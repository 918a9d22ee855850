"""Errors and logs leave the TEE: a failing query reports Spark's error class, never a value.

Spark's messages quote the values they fail on (``[CAST_INVALID_INPUT] The value 'Carol-US' of the
type "STRING" cannot be cast ...``). The CLI's error line carries the error class, the SQLSTATE
and a hint; the Spark log it names masks the text after every exception name. The chain proof
(tests/chain) does the same on a standalone cluster, executors' logs included.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from cipherspark.errors import IntegrityError, JobError
from cipherspark.spark import spark_error

CANARY = "Carol-US-" + secrets.token_hex(6)

CAST_TEXT = (
    "An error occurred while calling o61.collectToPython.\n"
    ": org.apache.spark.SparkException: Job aborted due to stage failure: Task 0 in stage 0.0 "
    "failed 1 times, most recent failure: Lost task 0.0 in stage 0.0 (TID 0) (localhost "
    "executor driver): org.apache.spark.SparkNumberFormatException: [CAST_INVALID_INPUT] The "
    f"value '{CANARY}' of the type \"STRING\" cannot be cast to \"INT\" because it is malformed. "
    "Correct the value as per the syntax, or change its target type. SQLSTATE: 22018\n"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (CAST_TEXT, "[CAST_INVALID_INPUT] (SQLSTATE 22018): a value cannot be cast"),
        # An error class without a hint of ours: class and SQLSTATE, the text withheld.
        (f"[SOME_NEW_CONDITION] value {CANARY} broke. SQLSTATE: 22000",
         "[SOME_NEW_CONDITION] (SQLSTATE 22000): the message is withheld"),
        # A worker's Python exception: its type only.
        (f"PythonException: Traceback...\nValueError: invalid literal for int(): '{CANARY}'\n",
         "in a Python worker (ValueError)"),
        # No error class at all: the exception type only.
        (f"java.lang.RuntimeException: row {CANARY}", "RuntimeError: the message is withheld"),
    ],
    # Fixed ids: the canary is random per process, and pytest-xdist's workers must collect the
    # same test names.
    ids=["cast", "unknown-class", "python-worker", "no-class"],
)
def test_spark_messages_never_reach_the_error(text: str, expected: str) -> None:
    error = spark_error(RuntimeError(text))
    assert isinstance(error, JobError)
    assert expected in str(error)
    assert CANARY not in str(error)


def test_query_errors_keep_their_text() -> None:
    # SQLSTATE class 42: raised while analysing the query; the text names what the user typed.
    text = ("[UNRESOLVED_COLUMN.WITH_SUGGESTION] A column, variable, or function parameter with "
            "name `nmae` cannot be resolved. Did you mean one of the following? [`name`, `age`]. "
            "SQLSTATE: 42703")
    error = str(spark_error(RuntimeError(text)))
    assert "[UNRESOLVED_COLUMN.WITH_SUGGESTION] (SQLSTATE 42703)" in error
    assert "`nmae` cannot be resolved" in error


def test_our_errors_pass_through_whole() -> None:
    text = "...\ncipherspark.errors.IntegrityError: part-00001.csv.cspk was modified\n..."
    error = spark_error(RuntimeError(text))
    assert isinstance(error, IntegrityError)
    assert str(error) == "part-00001.csv.cspk was modified"


@pytest.mark.spark
def test_a_failing_cast_quotes_no_value_in_the_cli_or_the_spark_log(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIPHERSPARK_")}
    env.update(CIPHERSPARK_APP_ID="privacy-app",
               CIPHERSPARK_API_KEY="privacy-api-key-" + secrets.token_hex(8),
               CIPHERSPARK_KEY="k",
               CIPHERSPARK_SIMULATED_TEE_KEY=str(tmp_path / "platform.key"))
    rows = [f"{CANARY}-{i},{20 + i},Engineer" for i in range(20)]
    (tmp_path / "people.csv").write_text("name,age,job\n" + "\n".join(rows) + "\n")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cipherspark", *args], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=300)

    assert cli("key", "create", "k").returncode == 0
    assert cli("encrypt", "people.csv", "people.cspk").returncode == 0
    failed = cli("sql", "SELECT CAST(name AS INT) AS n FROM people", "--table",
                 "people=people.cspk", "-o", "out", "--master", "local[2]")
    assert failed.returncode == 1, failed.stderr[-3000:]
    assert "[CAST_INVALID_INPUT] (SQLSTATE 22018)" in failed.stderr
    assert "Traceback" not in failed.stderr
    logs = list((tmp_path / ".cipherspark" / "logs").glob("*.log"))
    assert logs, "the CLI names a Spark log and writes it"
    text = "\n".join(p.read_text(errors="replace") for p in logs)
    # The control: the failure is in the log (so the search below looks at the right text).
    assert "SparkNumberFormatException" in text
    for place, content in (("stdout", failed.stdout), ("stderr", failed.stderr), ("log", text)):
        assert CANARY not in content, f"a value reached the {place}"
    assert not (tmp_path / "out").exists()
