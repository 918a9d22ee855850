"""The example jobs on a live session, and the CLI commands that run them."""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from cipherspark.cli import main
from cipherspark.errors import JobError
from cipherspark.files import decrypt_path, encrypt_path
from cipherspark.jobs import SimpleQueryResult, run_sql, simple_query
from cipherspark.jobs.datagen import GeneratedPeople, generate_people
from cipherspark.kms import LocalKms, open_kms
from tests.conftest import TEST_CREDENTIALS, TEST_KEY

pytestmark = pytest.mark.spark

ROWS = 5000


@dataclass(frozen=True)
class Workspace:
    root: Path
    kms: LocalKms
    people: GeneratedPeople
    encrypted: Path
    result: SimpleQueryResult
    output: Path


def read_plain(path: Path) -> list[tuple[str, int, str]]:
    with open(path, newline="") as f:
        return [(r["name"], int(r["age"]), r["job"]) for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory, spark: SparkSession) -> Workspace:
    """People, a keystore, the encrypted input, and one Simple Query run (with show=3)."""
    root = tmp_path_factory.mktemp("jobs")
    kms = open_kms((root / "kms").as_uri(), TEST_CREDENTIALS, create=True)
    assert isinstance(kms, LocalKms)
    kms.create_key(TEST_KEY)
    people = generate_people(root / "people.csv", ROWS, seed=11)
    encrypted = root / "people.cspk"
    encrypt_path(people.path, encrypted, kms, TEST_KEY, segment_size=4096)
    output = root / "developers"
    result = simple_query(spark, str(encrypted), str(output), kms_url=kms.url, key=TEST_KEY,
                          show=3)
    return Workspace(root, kms, people, encrypted, result, output)


def test_simple_query_counts_match_the_generator(ws: Workspace) -> None:
    assert ws.result.names == ROWS
    assert ws.result.developers_20_40 == ws.people.developers_20_40
    assert ws.people.developers_20_40 > 0


def test_simple_query_output_is_exactly_the_matching_rows(ws: Workspace) -> None:
    decrypt_path(ws.output, ws.root / "developers.csv", ws.kms)
    got = Counter(read_plain(ws.root / "developers.csv"))
    want = Counter(r for r in read_plain(ws.people.path)
                   if r[2] == "Developer" and 20 <= r[1] <= 40)
    assert got == want
    assert sum(got.values()) == ws.result.developers_20_40


def test_simple_query_show_returns_name_and_age_plus_one(ws: Workspace) -> None:
    assert len(ws.result.shown) == 3
    plus_one = Counter((name, age + 1) for name, age, _ in read_plain(ws.people.path))
    for row in ws.result.shown:
        assert plus_one[row] > 0  # type: ignore[index]


def test_run_sql_group_by(ws: Workspace, spark: SparkSession) -> None:
    out = ws.root / "by_job"
    result = run_sql(spark, "SELECT job, count(*) AS n, max(age) AS oldest FROM people "
                     "GROUP BY job", {"people": str(ws.encrypted)}, str(out),
                     kms_url=ws.kms.url, key=TEST_KEY)
    assert result.columns == ("job", "n", "oldest")
    assert result.rows == 3
    decrypt_path(out, ws.root / "by_job.csv", ws.kms)
    with open(ws.root / "by_job.csv", newline="") as f:
        got = {r["job"]: (int(r["n"]), int(r["oldest"])) for r in csv.DictReader(f)}
    plain = read_plain(ws.people.path)
    counts = Counter(job for _, _, job in plain)
    want = {job: (n, max(a for _, a, j in plain if j == job)) for job, n in counts.items()}
    assert got == want


def test_run_sql_bad_query_raises_job_error(ws: Workspace, spark: SparkSession) -> None:
    out = ws.root / "bad"
    with pytest.raises(JobError):
        run_sql(spark, "SELECT no_such_column FROM people", {"people": str(ws.encrypted)},
                str(out), kms_url=ws.kms.url, key=TEST_KEY)
    with pytest.raises(JobError):
        run_sql(spark, "SELEKT * FROM people", {"people": str(ws.encrypted)},
                str(out), kms_url=ws.kms.url, key=TEST_KEY)
    assert not out.exists()
    assert not [p for p in ws.root.iterdir() if p.name.startswith(".bad")]


# -- CLI ----------------------------------------------------------------------------------------


def test_cli_query_simple_prints_the_count(ws: Workspace, capsys: pytest.CaptureFixture[str]
                                           ) -> None:
    out = ws.root / "cli-developers"
    code = main(["query", "simple", "--input", str(ws.encrypted), "--output", str(out),
                 "--key", TEST_KEY, "--kms", ws.kms.url, "--master", "local[2]"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"Developers aged 20-40: {ws.people.developers_20_40}\n" in captured.out
    assert f"names: {ROWS}\n" in captured.out
    assert out.is_dir()


def test_cli_demo_exits_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    workdir = tmp_path / "d"
    # In this process the Spark workers were started with the test credentials, and the demo
    # joins that session (getOrCreate): give the demo's keystore the same credentials, as a
    # re-run of the demo in an existing work folder would (it reuses credentials.json).
    workdir.mkdir()
    fd = os.open(workdir / "credentials.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"app_id": TEST_CREDENTIALS.app_id, "api_key": TEST_CREDENTIALS.api_key}, f)
    code = main(["demo", "--rows", "5000", "--workdir", str(workdir), "--seed", "3"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "[FAILED]" not in captured.out
    assert captured.out.count("[ok]") == 3
    assert (workdir / "developers.csv").is_file()


def check_one_line_error(code: int, err: str) -> None:
    assert code != 0
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert err.startswith("cipherspark: error:")


def test_cli_query_missing_input(tmp_path: Path, ws: Workspace,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(["query", "simple", "--input", str(tmp_path / "nope.cspk"), "--output",
                 str(out), "--key", TEST_KEY, "--kms", ws.kms.url])
    err = capsys.readouterr().err
    check_one_line_error(code, err)
    assert "nope.cspk" in err
    assert list(tmp_path.iterdir()) == []


def test_cli_query_output_exists(tmp_path: Path, ws: Workspace,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code = main(["query", "simple", "--input", str(ws.encrypted), "--output", str(out),
                 "--key", TEST_KEY, "--kms", ws.kms.url])
    check_one_line_error(code, capsys.readouterr().err)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "mine"


def test_cli_sql_missing_table(tmp_path: Path, ws: Workspace,
                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(["sql", "SELECT count(*) FROM people", "--table",
                 f"people={tmp_path / 'nope.cspk'}", "--output", str(out), "--key", TEST_KEY,
                 "--kms", ws.kms.url])
    err = capsys.readouterr().err
    check_one_line_error(code, err)
    assert "nope.cspk" in err
    assert list(tmp_path.iterdir()) == []


def test_cli_sql_output_exists(tmp_path: Path, ws: Workspace,
                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    code = main(["sql", "SELECT count(*) FROM people", "--table", f"people={ws.encrypted}",
                 "--output", str(out), "--key", TEST_KEY, "--kms", ws.kms.url])
    check_one_line_error(code, capsys.readouterr().err)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert list(out.iterdir()) == []


def test_cli_sql_bad_query(tmp_path: Path, ws: Workspace,
                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(["sql", "SELECT no_such_column FROM people", "--table",
                 f"people={ws.encrypted}", "--output", str(out), "--key", TEST_KEY,
                 "--kms", ws.kms.url])
    check_one_line_error(code, capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []
