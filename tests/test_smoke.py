"""The walking skeleton end to end: generate, encrypt, query on Spark, decrypt."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from cipherspark.files import decrypt_path, encrypt_path
from cipherspark.jobs import simple_query
from cipherspark.jobs.datagen import generate_people
from cipherspark.kms import LocalKms
from tests.conftest import TEST_KEY


@pytest.mark.spark
def test_simple_query_matches_generator(tmp_path: Path, kms: LocalKms, spark: object) -> None:
    people = generate_people(tmp_path / "people.csv", 20_000, seed=7)
    encrypt_path(people.path, tmp_path / "people.cspk", kms, TEST_KEY, segment_size=4096)
    result = simple_query(spark, str(tmp_path / "people.cspk"), str(tmp_path / "out"),  # type: ignore[arg-type]
                          kms_url=kms.url, key=TEST_KEY)
    assert result.names == 20_000
    assert result.developers_20_40 == people.developers_20_40
    decrypt_path(tmp_path / "out", tmp_path / "out.csv", kms)
    with open(tmp_path / "out.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == people.developers_20_40
    assert all(r["job"] == "Developer" and 20 <= int(r["age"]) <= 40 for r in rows)
