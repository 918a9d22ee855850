"""The Spark reader accepts an encrypted CSV dataset only as the commit the dataset registry
names at its location (the CLI side: tests/test_cli_dataset.py).

Storage keeps an old, authentic commit of a dataset and puts it back (a rollback), or puts a
copy of another dataset of the same owner in its place: the read is refused when it is planned,
with one message naming the location. ``unsafeSkipRegistry`` (by name) reads it anyway.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from cipherspark.errors import IntegrityError
from cipherspark.files import encrypt_path
from cipherspark.kms import LocalKms
from cipherspark.spark import (
    cipherspark_errors,
    count_encrypted_csv,
    encrypted_sql,
    read_encrypted_csv,
)
from tests.conftest import TEST_KEY

SCHEMA = "name string, age int"


def _plain(tmp_path: Path, name: str, rows: list[tuple[str, int]]) -> Path:
    folder = tmp_path / f"plain-{name}"
    folder.mkdir()
    (folder / "part.csv").write_text("name,age\n" + "".join(f"{n},{a}\n" for n, a in rows))
    return folder


@pytest.fixture
def rolled_back(tmp_path: Path, kms: LocalKms) -> Path:
    """``data.cspk``: generation 2 registered, generation 1 put back in its place."""
    out = tmp_path / "data.cspk"
    encrypt_path(_plain(tmp_path, "v1", [("ann", 30)]), out, kms, TEST_KEY)
    shutil.copytree(out, tmp_path / "kept")
    encrypt_path(_plain(tmp_path, "v2", [("bob", 40), ("cid", 50)]), out, kms, TEST_KEY,
                 overwrite=True)
    shutil.rmtree(out)
    shutil.copytree(tmp_path / "kept", out)
    return out


def test_a_rolled_back_dataset_is_refused_by_every_read(
    rolled_back: Path, kms: LocalKms, spark: SparkSession
) -> None:
    with pytest.raises(IntegrityError, match="rolled back") as refused, cipherspark_errors():
        read_encrypted_csv(spark, str(rolled_back), kms_url=kms.url, schema=SCHEMA).collect()
    assert str(rolled_back) in str(refused.value)
    with pytest.raises(IntegrityError, match="rolled back"), cipherspark_errors():
        count_encrypted_csv(spark, str(rolled_back), kms_url=kms.url)


def test_unsafe_skip_registry_reads_it_by_name(
    rolled_back: Path, kms: LocalKms, spark: SparkSession
) -> None:
    frame = read_encrypted_csv(spark, str(rolled_back), kms_url=kms.url, schema=SCHEMA,
                               unsafe_skip_registry=True)
    assert [tuple(r) for r in frame.collect()] == [("ann", 30)]
    # encrypted_sql re-plans the relation from its options: the opt-out goes with it.
    narrowed = encrypted_sql(spark, "SELECT name FROM t WHERE age > 1", {"t": frame})
    assert [r["name"] for r in narrowed.collect()] == ["ann"]


def test_a_dataset_swapped_in_after_loading_is_refused(
    tmp_path: Path, kms: LocalKms, spark: SparkSession
) -> None:
    """Loaded while genuine; then another dataset of the owner is copied over it."""
    out = tmp_path / "data.cspk"
    encrypt_path(_plain(tmp_path, "a", [("ann", 30)]), out, kms, TEST_KEY)
    encrypt_path(_plain(tmp_path, "b", [("bob", 40)]), tmp_path / "b.cspk", kms, TEST_KEY)
    frame = read_encrypted_csv(spark, str(out), kms_url=kms.url, schema=SCHEMA)
    assert frame.count() == 1
    shutil.rmtree(out)
    shutil.copytree(tmp_path / "b.cspk", out)
    # The parts planned are not there any more (checked where they are decrypted).
    with pytest.raises(IntegrityError, match=r"changed|not the file that was verified"), \
            cipherspark_errors():
        frame.collect()
    fresh = read_encrypted_csv(spark, str(out), kms_url=kms.url, schema=SCHEMA)
    with pytest.raises(IntegrityError, match="replaced by another dataset"), cipherspark_errors():
        fresh.collect()
