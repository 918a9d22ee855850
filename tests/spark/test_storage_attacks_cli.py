"""The job commands refuse an input substituted by one under another key: ``query simple`` and
``sql`` read only inputs under ``--input-key`` (default: their ``--key``), with one clear line.

The refusal comes before Spark starts (the driver checks each input's manifest, key binding and
listing); the readers check again where they decrypt (tests/spark/test_part_swap.py).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from cipherspark.cli import main
from cipherspark.files import encrypt_path
from cipherspark.kms import LocalKms, open_kms
from tests.conftest import TEST_CREDENTIALS, TEST_KEY

pytestmark = pytest.mark.spark

OTHER_KEY = "other-key"
PEOPLE = "name,age,job\nann,30,Developer\nbob,41,Engineer\ncyd,25,Developer\n"


@dataclass(frozen=True)
class Inputs:
    root: Path
    kms: LocalKms
    mine: Path  # a dataset under TEST_KEY
    foreign: Path  # the same rows, a dataset under OTHER_KEY (the reader can unwrap it too)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Inputs]:
    root = tmp_path_factory.mktemp("cli-attacks")
    kms = open_kms((root / "kms").as_uri(), TEST_CREDENTIALS, create=True)
    assert isinstance(kms, LocalKms)
    kms.create_key(TEST_KEY)
    kms.create_key(OTHER_KEY)
    plain = root / "plain"
    plain.mkdir()
    (plain / "part-0.csv").write_text(PEOPLE)
    for name, key in (("mine", TEST_KEY), ("foreign", OTHER_KEY)):
        encrypt_path(plain, root / name, kms, key)
    yield Inputs(root, kms, root / "mine", root / "foreign")


def error_lines(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return code, captured.err.splitlines()


def substituted(inputs: Inputs, tmp_path: Path) -> Path:
    """The path of my dataset, now holding the dataset under the other key."""
    target = tmp_path / "people"
    shutil.copytree(inputs.foreign, target)
    return target


def test_query_simple_refuses_an_input_under_another_key(
    inputs: Inputs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    people = substituted(inputs, tmp_path)
    out = tmp_path / "out"
    code, err = error_lines(capsys, "query", "simple", "--input", str(people), "--output",
                            str(out), "--key", TEST_KEY, "--kms", inputs.kms.url)
    assert code == 1
    assert err == [f"cipherspark: error: {people}: the dataset is under key {OTHER_KEY!r}, not "
                   f"{TEST_KEY!r} (it may have been replaced by another dataset)"]
    assert not out.exists()


def test_sql_refuses_a_table_under_another_key(
    inputs: Inputs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    people = substituted(inputs, tmp_path)
    out = tmp_path / "out"
    code, err = error_lines(capsys, "sql", "SELECT count(*) AS n FROM people", "--table",
                            f"people={people}", "--table", f"mine={inputs.mine}", "--output",
                            str(out), "--key", TEST_KEY, "--kms", inputs.kms.url)
    assert code == 1
    assert len(err) == 1 and f"under key {OTHER_KEY!r}, not {TEST_KEY!r}" in err[0]
    assert not out.exists()


def test_input_key_names_the_key_inputs_must_be_under(
    inputs: Inputs, spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Reading under one key and writing under another stays one command: --input-key."""
    out = tmp_path / "out"
    code, err = error_lines(capsys, "sql", "SELECT job, count(*) AS n FROM people GROUP BY job",
                            "--table", f"people={inputs.foreign}", "--output", str(out),
                            "--key", TEST_KEY, "--input-key", OTHER_KEY, "--kms",
                            inputs.kms.url, "--master", "local[2]")
    assert code == 0, err
    assert out.is_dir()
    # The same query with my own dataset and --key alone: unchanged for the one-key flow.
    code, err = error_lines(capsys, "sql", "SELECT count(*) AS n FROM people", "--table",
                            f"people={inputs.mine}", "--output", str(tmp_path / "out2"),
                            "--key", TEST_KEY, "--kms", inputs.kms.url, "--master", "local[2]")
    assert code == 0, err


def test_the_jobs_pin_their_inputs_where_they_decrypt(
    inputs: Inputs, spark: SparkSession, tmp_path: Path
) -> None:
    """The jobs themselves refuse an input under another key (the readers' option ``key``),
    whether or not a command checked it before: a substitution after that check is refused."""
    from cipherspark.errors import IntegrityError
    from cipherspark.jobs import run_sql, simple_query

    with pytest.raises(IntegrityError, match=f"under key {OTHER_KEY!r}, not {TEST_KEY!r}"):
        simple_query(spark, str(inputs.foreign), str(tmp_path / "a"), kms_url=inputs.kms.url,
                     key=TEST_KEY, input_key=TEST_KEY)
    with pytest.raises(IntegrityError, match=f"under key {OTHER_KEY!r}, not {TEST_KEY!r}"):
        run_sql(spark, "SELECT count(*) AS n FROM people", {"people": str(inputs.foreign)},
                str(tmp_path / "b"), kms_url=inputs.kms.url, key=TEST_KEY, input_key=TEST_KEY)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    result = run_sql(spark, "SELECT count(*) AS n FROM people", {"people": str(inputs.mine)},
                     str(tmp_path / "c"), kms_url=inputs.kms.url, key=TEST_KEY,
                     input_key=TEST_KEY)
    assert result.rows == 1
