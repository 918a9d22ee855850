"""The CLI on encrypted JSON Lines and text: ``encrypt`` records the format (from the name, or
``--format``), ``sql`` picks the reader from the container's header, ``decrypt`` gives the bytes
back; the answer is checked against plain Python over the plaintext (another engine than
Spark), so a reader that dropped, duplicated or re-typed a row fails here.
"""

from __future__ import annotations

import csv
import json
import os
import random
import string
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from cipherspark.crypto import CONTENT_TYPE_JSON_LINES, CONTENT_TYPE_TEXT
from cipherspark.crypto.container import read_header
from cipherspark.files import decrypt_path
from cipherspark.kms import LocalKms
from tests.conftest import TEST_CREDENTIALS, TEST_KEY

CITIES = ("Oslo", "Bergen", "Tromsø", "Kyiv")
QUERY = (
    "SELECT address.city AS city, count(*) AS n, sum(age) AS total, max(name) AS last "
    "FROM people GROUP BY address.city "
    "UNION ALL "
    "SELECT 'notes' AS city, count(*) AS n, sum(length(value)) AS total, max(value) AS last "
    "FROM notes WHERE value LIKE '%error%'"
)


def _cli(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cipherspark", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, dict[str, str], LocalKms]:
    kms = LocalKms(tmp_path / "kms", TEST_CREDENTIALS, create=True)
    kms.create_key(TEST_KEY)
    env = {
        **os.environ,
        "CIPHERSPARK_KMS": kms.url,
        "CIPHERSPARK_APP_ID": TEST_CREDENTIALS.app_id,
        "CIPHERSPARK_API_KEY": TEST_CREDENTIALS.api_key,
        "CIPHERSPARK_MASTER": "local[2]",
    }
    for name in ("CIPHERSPARK_KEY", "CIPHERSPARK_TEE", "CIPHERSPARK_DEBUG"):
        env.pop(name, None)
    return tmp_path, env, kms


def _people(rng: random.Random, n: int) -> list[str]:
    lines = []
    for i in range(n):
        name = "".join(rng.choices(string.ascii_lowercase, k=10))
        record: dict[str, object] = {"name": name, "age": rng.randint(18, 70)}
        if i % 7:  # some records have no address: a null city, one group of its own
            record["address"] = {"city": rng.choice(CITIES), "zip": rng.randint(1000, 9999)}
        lines.append(json.dumps(record, ensure_ascii=i % 2 == 0))
    return lines


@pytest.mark.spark
def test_json_and_text_through_encrypt_sql_decrypt(
    world: tuple[Path, dict[str, str], LocalKms],
) -> None:
    root, env, kms = world
    rng = random.Random(16)
    people = _people(rng, 400)
    # No .json suffix: --format says what it is.
    (root / "people.export").write_text("\n".join(people) + "\n", encoding="utf-8")
    notes = [
        f"{rng.choice(['info', 'warn', 'error'])}: event {i} {'é' * (i % 3)}" for i in range(300)
    ]
    (root / "notes.txt").write_text("\r\n".join(notes) + "\r\n", encoding="utf-8")

    for args in (
        ("people.export", "people.cspk", "--format", "json"),
        ("notes.txt", "notes.cspk", "--segment-size", "512"),
    ):
        result = _cli(root, env, "encrypt", *args, "--key", TEST_KEY)
        assert result.returncode == 0, result.stderr
    for name, content_type in (("people", CONTENT_TYPE_JSON_LINES), ("notes", CONTENT_TYPE_TEXT)):
        with (root / f"{name}.cspk").open("rb") as f:
            assert read_header(f)[0].content_type == content_type

    result = _cli(
        root, env, "sql", QUERY, "-t", "people=people.cspk", "-t", "notes=notes.cspk",
        "-o", "answer", "--key", TEST_KEY,
        "--schema", "people=name string, age decimal(5,1), address struct<city: string>",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    decrypt_path(root / "answer", root / "answer.csv", kms)
    with (root / "answer.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["city", "n", "total", "last"]

    # The same answer, by plain Python over the plaintext.
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in people:
        record = json.loads(line)
        address = record.get("address")
        groups[address["city"] if address else ""].append(record)
    expected = {
        # age declared decimal(5,1) by --schema: its sum prints as a decimal (inferred: bigint).
        (city, str(len(rs)), f"{sum(r['age'] for r in rs)}.0", max(r["name"] for r in rs))
        for city, rs in groups.items()
    }
    errors = [n for n in notes if "error" in n]
    assert errors  # the comparison can fail
    # UNION ALL widens the notes' bigint total to the people's decimal.
    expected.add(("notes", str(len(errors)), f"{sum(map(len, errors))}.0", max(errors)))
    assert {tuple(r) for r in rows[1:]} == expected
    assert len(rows) - 1 == len(CITIES) + 2  # the cities, the null city, the notes

    # decrypt gives the owner's bytes back, line endings and all.
    result = _cli(root, env, "decrypt", "notes.cspk", "notes-back.txt")
    assert result.returncode == 0, result.stderr
    assert (root / "notes-back.txt").read_bytes() == (root / "notes.txt").read_bytes()


def test_parquet_conversion_takes_csv_only(world: tuple[Path, dict[str, str], LocalKms]) -> None:
    root, env, _ = world
    (root / "people.json").write_text('{"a": 1}\n')
    result = _cli(
        root, env, "encrypt", "people.json", "out", "--key", TEST_KEY, "--to", "parquet",
        "--format", "json",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--format must be csv" in lines[0], result.stderr
    assert not (root / "out").exists()


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ("people", "--schema takes NAME=DDL"),
        ("people=", "--schema takes NAME=DDL"),
        ("staff=a int", "no table 'staff'"),
    ],
)
def test_bad_schema_options_are_refused_before_spark(
    world: tuple[Path, dict[str, str], LocalKms], schema: str, message: str
) -> None:
    root, env, _ = world
    (root / "p.csv").write_text("a\n1\n")
    result = _cli(root, env, "encrypt", "p.csv", "p.cspk", "--key", TEST_KEY)
    assert result.returncode == 0, result.stderr
    (root / "app.py").write_text("raise SystemExit(3)\n")
    options = ("-t", "people=p.cspk", "--key", TEST_KEY, "--schema", schema)
    for command in (
        ("sql", "SELECT * FROM people", *options, "-o", "out"),
        ("run", *options, "app.py"),
    ):
        result = _cli(root, env, *command)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], result.stderr
        assert not (root / "out").exists()


@pytest.mark.spark
def test_schema_recorded_at_encrypt_types_sql(
    world: tuple[Path, dict[str, str], LocalKms],
) -> None:
    """``encrypt --schema`` records the columns; ``sql`` then reads money as decimals and days as
    dates with no --schema of its own (inferred, 10.10 + 0.20 would be the double 10.3)."""
    root, env, kms = world
    rows = [("ann", "10.10", "2024-01-31"), ("bo", "0.20", "2024-02-01"), ("cy", "", "")]
    (root / "money.csv").write_text(
        "who,amount,day\n" + "".join(f"{w},{a},{d}\n" for w, a, d in rows), encoding="utf-8"
    )
    result = _cli(
        root, env, "encrypt", "money.csv", "money.cspk", "--key", TEST_KEY,
        "--schema", "who string, amount decimal(9,2), day date",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (root / "money.cspk").is_dir()  # a dataset of one part: its manifest records them
    query = (
        "SELECT sum(amount) AS total, typeof(amount) AS t, max(day) AS last, "
        "typeof(day) AS d FROM m GROUP BY typeof(amount), typeof(day)"
    )
    result = _cli(root, env, "sql", query, "-t", "m=money.cspk", "-o", "answer", "--key", TEST_KEY)
    assert result.returncode == 0, result.stderr
    decrypt_path(root / "answer", root / "answer.csv", kms)
    with (root / "answer.csv").open(newline="", encoding="utf-8") as f:
        answer = list(csv.reader(f))
    from decimal import Decimal

    total = sum(Decimal(a) for _, a, _ in rows if a)
    last = max(d for _, _, d in rows if d)
    assert answer == [["total", "t", "last", "d"], [str(total), "decimal(9,2)", last, "date"]]


@pytest.mark.parametrize(
    ("name", "text", "schema", "message"),
    [
        ("p.csv", "a,b\n1,2\n", "a frob, b int", "not a Spark DDL schema: an unknown type"),
        ("p.csv", "a,b\n1,2\n", "a int", "--schema names 1 column(s), but the first line"),
        ("p.txt", "hello\n", "value string", "describes CSV or JSON Lines columns"),
    ],
)
def test_bad_schema_at_encrypt_is_refused(
    world: tuple[Path, dict[str, str], LocalKms], name: str, text: str, schema: str, message: str
) -> None:
    root, env, _ = world
    (root / name).write_text(text)
    result = _cli(root, env, "encrypt", name, "out", "--key", TEST_KEY, "--schema", schema)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert sorted(p.name for p in root.iterdir()) == ["kms", name]  # nothing written


@pytest.mark.spark
def test_changed_content_type_is_refused_in_one_line(
    world: tuple[Path, dict[str, str], LocalKms],
) -> None:
    """Storage edits a JSON table's recorded content type, so that another reader picks it up:
    the header is authenticated where the data is decrypted, and sql fails in one line."""
    root, env, _ = world
    (root / "people.json").write_text('{"name": "ann", "age": 31}\n')
    assert _cli(root, env, "encrypt", "people.json", "p.cspk", "--key", TEST_KEY).returncode == 0
    data = bytearray((root / "p.cspk").read_bytes())
    at = data.index(CONTENT_TYPE_JSON_LINES.encode())
    data[at + len(CONTENT_TYPE_JSON_LINES) - 1] ^= 0x01  # ...x-ndjson -> ...x-ndjsoo
    (root / "p.cspk").write_bytes(bytes(data))
    result = _cli(root, env, "sql", "SELECT * FROM p", "-t", "p=p.cspk", "-o", "out",
                  "--key", TEST_KEY)  # fmt: skip
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "p.cspk" in lines[0], lines
    assert not (root / "out").exists()
