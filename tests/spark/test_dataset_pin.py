"""One DataFrame, one dataset: the relations :func:`encrypted_sql` re-plans for each query are
pinned to the commit the loaded DataFrame reads (option ``manifestDigest``).

The attacker controls storage. Between two queries of the same DataFrame it replaces the whole
dataset folder with one the reader's KMS unwraps: a newer generation of the same dataset, or
another dataset under the same key. Both are complete, valid datasets with the same columns,
so only the pin keeps the second query from answering from them.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession

from cipherspark.crypto.manifest import open_dataset
from cipherspark.errors import IntegrityError, UsageError
from cipherspark.files import encrypt_path
from cipherspark.kms import LocalKms, open_kms
from cipherspark.spark import FORMAT_NAME, cipherspark_errors, encrypted_sql, read_encrypted_csv
from cipherspark.spark._options import ReadOptions
from cipherspark.spark._pruning import scans
from tests.conftest import TEST_CREDENTIALS, TEST_KEY

pytestmark = pytest.mark.spark

SCHEMA = "name string, age int, job string"
JOBS = ("Developer", "Engineer", "Researcher")
# Each query narrows the table (fewer columns, or a pushed filter): it is re-planned.
QUERIES = (
    "SELECT name FROM people WHERE age > 40",
    "SELECT job, count(*) AS n, sum(age) AS total FROM people GROUP BY job",
    "SELECT count(*) AS n FROM people WHERE job = 'Developer' AND age BETWEEN 20 AND 40",
)


def people(run: str, count: int = 300) -> str:
    rows = "".join(f"{run}-{i:04d},{18 + i % 47},{JOBS[i % 3]}\n" for i in range(count))
    return "name,age,job\n" + rows


@dataclass(frozen=True)
class Store:
    kms: LocalKms
    root: Path

    def plain(self, run: str, tmp_path: Path) -> Path:
        folder = tmp_path / f"plain-{run}"
        folder.mkdir()
        text = people(run)
        lines = text.splitlines(keepends=True)
        # Two parts, each with the header line.
        (folder / "part-0.csv").write_text("".join(lines[:150]))
        (folder / "part-1.csv").write_text(lines[0] + "".join(lines[150:]))
        return folder

    def dataset(
        self, run: str, tmp_path: Path, target: Path | None = None, *, overwrite: bool = False
    ) -> Path:
        out = target or tmp_path / run
        encrypt_path(
            self.plain(run, tmp_path),
            out,
            self.kms,
            TEST_KEY,
            segment_size=1024,
            overwrite=overwrite,
        )
        return out

    def manifest_sha256(self, folder: Path) -> str:
        unwrap = self.kms.unwrap_data_key
        return open_dataset(folder, lambda h: unwrap(h.key_id, h.wrapped_key)).manifest_sha256


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    root = tmp_path_factory.mktemp("pin")
    kms = open_kms((root / "kms").as_uri(), TEST_CREDENTIALS, create=True)
    assert isinstance(kms, LocalKms)
    kms.create_key(TEST_KEY)
    yield Store(kms, root)


def translated(action: Callable[[], Any]) -> Any:
    with cipherspark_errors():
        return action()


def answer(spark: SparkSession, query: str, df: DataFrame) -> Counter[tuple[Any, ...]]:
    result = encrypted_sql(spark, query, {"people": df})
    return Counter(tuple(row) for row in translated(result.collect))


def replace_folder(victim: Path, replacement: Path) -> None:
    """The whole folder swapped for another (as storage would: one rename into place)."""
    staged = victim.with_name(f".{victim.name}.attacker")
    shutil.copytree(replacement, staged)
    shutil.rmtree(victim)
    os.replace(staged, victim)


def test_repeated_queries_answer_as_spark_on_the_plaintext(
    store: Store, spark: SparkSession, tmp_path: Path
) -> None:
    """Nothing replaced: every query, run twice in any order, answers exactly as Spark's CSV
    reader on the plaintext, and each re-planned read is pinned to the dataset's manifest, with
    the schema the table was loaded with (inferred once, at load)."""
    encrypted = store.dataset("v", tmp_path)
    plain = spark.read.csv(str(tmp_path / "plain-v"), header=True, schema=SCHEMA)
    df = read_encrypted_csv(spark, str(encrypted), kms_url=store.kms.url, infer_schema=True)
    assert df.schema == plain.schema
    digest = store.manifest_sha256(encrypted)
    for query in (*QUERIES, *reversed(QUERIES)):
        plain.createOrReplaceTempView("people")
        expected = Counter(tuple(row) for row in spark.sql(query).collect())
        result = encrypted_sql(spark, query, {"people": df})
        read = scans(result)
        assert read and all(options["manifestDigest"] == digest for _, _, options in read)
        assert all(options["datasetGeneration"] == "1" for _, _, options in read)
        assert all(
            columns != df.schema.fieldNames() or "pushedFilters" in options
            for _, columns, options in read
        )  # narrowed: a re-planned read
        assert Counter(tuple(row) for row in translated(result.collect)) == expected
        assert answer(spark, query, df) == expected


def test_newer_generation_put_in_place_is_refused(
    store: Store, spark: SparkSession, tmp_path: Path
) -> None:
    victim = store.dataset("v", tmp_path)
    df = read_encrypted_csv(spark, str(victim), kms_url=store.kms.url, schema=SCHEMA)
    before = answer(spark, QUERIES[0], df)
    assert before and all(name.startswith("v-") for (name,) in before)
    # The owner (or anyone the KMS serves) overwrites the dataset in place: generation 2.
    store.dataset("x", tmp_path, target=victim, overwrite=True)
    with pytest.raises(IntegrityError) as raised:
        answer(spark, QUERIES[1], df)
    assert str(raised.value) == (
        f"the dataset at {victim} changed since it was loaded (generation 1 -> 2)"
    )
    # The query that ran before, once more: refused too, never answered from generation 2.
    with pytest.raises(IntegrityError, match="changed since it was loaded"):
        answer(spark, QUERIES[0], df)


def test_another_dataset_under_the_same_key_is_refused(
    store: Store, spark: SparkSession, tmp_path: Path
) -> None:
    victim, attacker = store.dataset("v", tmp_path), store.dataset("x", tmp_path)
    victim_id = open_dataset(
        victim, lambda h: store.kms.unwrap_data_key(h.key_id, h.wrapped_key)
    ).identity
    attacker_id = open_dataset(
        attacker, lambda h: store.kms.unwrap_data_key(h.key_id, h.wrapped_key)
    ).identity
    assert victim_id is not None and attacker_id is not None
    df = (
        spark.read.format(FORMAT_NAME).option("kms", store.kms.url).schema(SCHEMA).load(str(victim))
    )  # the plain reader, no pin given: encrypted_sql takes its own
    assert answer(spark, QUERIES[2], df) == Counter(
        {(sum(1 for i in range(300) if i % 3 == 0 and 20 <= 18 + i % 47 <= 40),): 1}
    )
    replace_folder(victim, attacker)
    with pytest.raises(IntegrityError) as raised:
        answer(spark, QUERIES[0], df)
    assert str(raised.value) == (
        f"the dataset at {victim} changed since it was loaded "
        f"(dataset {victim_id.dataset_id} -> {attacker_id.dataset_id})"
    )


def test_a_single_file_replaced_is_refused(
    store: Store, spark: SparkSession, tmp_path: Path
) -> None:
    files = {}
    for run in ("v", "x"):
        (tmp_path / f"{run}.csv").write_text(people(run))
        files[run] = tmp_path / f"{run}.cspk"
        encrypt_path(tmp_path / f"{run}.csv", files[run], store.kms, TEST_KEY)
    df = read_encrypted_csv(spark, str(files["v"]), kms_url=store.kms.url, schema=SCHEMA)
    assert all(name.startswith("v-") for (name,) in answer(spark, QUERIES[0], df))
    os.replace(files["x"], files["v"])
    with pytest.raises(IntegrityError) as raised:
        answer(spark, QUERIES[0], df)
    assert str(raised.value) == f"the file at {files['v']} changed since it was loaded"


def test_the_option_given_at_load_pins_the_dataframe_itself(
    store: Store, spark: SparkSession, tmp_path: Path
) -> None:
    """A user (or a job) may pin the commit when loading: the DataFrame's own reads refuse
    another one, as do the reads encrypted_sql re-plans from it."""
    victim = store.dataset("v", tmp_path)
    reader = (
        spark.read.format(FORMAT_NAME)
        .option("kms", store.kms.url)
        .schema(SCHEMA)
        .option("manifestDigest", store.manifest_sha256(victim))
        .option("datasetGeneration", "1")
    )
    df = reader.load(str(victim))
    assert translated(df.count) == 300
    store.dataset("x", tmp_path, target=victim, overwrite=True)
    message = f"the dataset at {victim} changed since it was loaded (generation 1 -> 2)"
    with pytest.raises(IntegrityError) as raised:
        translated(reader.load(str(victim)).count)
    assert str(raised.value) == message
    with pytest.raises(IntegrityError) as raised:
        answer(spark, QUERIES[1], df)
    assert str(raised.value) == message


def test_the_options_round_trip_and_are_checked() -> None:
    base = {"path": "/d", "kms": "file:///k"}
    options = ReadOptions.parse(
        {**base, "manifestDigest": "ab" * 32, "datasetGeneration": "3", "datasetId": "cd" * 16}
    )
    assert (options.manifest_digest, options.dataset_generation) == ("ab" * 32, 3)
    assert ReadOptions.parse({"path": "/d", **options.to_options()}) == options
    with pytest.raises(UsageError, match="manifestDigest must be a SHA-256"):
        ReadOptions.parse({**base, "manifestDigest": "AB" * 32})
    with pytest.raises(UsageError, match="datasetGeneration needs the option manifestDigest"):
        ReadOptions.parse({**base, "datasetGeneration": "2"})


def test_the_pin_costs_nothing_per_query(store: Store, spark: SparkSession, tmp_path: Path) -> None:
    """Once the DataFrame's relation is planned, taking its pin is a lookup of its cached
    first split: no planning, no file or KMS access (reported in the measurement notes)."""
    from cipherspark.spark._pruning import _loaded_pin

    victim = store.dataset("v", tmp_path)
    df = read_encrypted_csv(spark, str(victim), kms_url=store.kms.url, schema=SCHEMA)
    first = _loaded_pin(df)
    assert first is not None and first.digest == store.manifest_sha256(victim)
    shutil.rmtree(victim)  # nothing on disk is read again
    start = time.perf_counter()
    for _ in range(20):
        assert _loaded_pin(df) == first
    assert (time.perf_counter() - start) / 20 < 0.5


def test_a_broken_dataset_before_the_first_query_fails_closed(
    store: Store, spark: SparkSession, tmp_path: Path
) -> None:
    """Taking the pin plans the DataFrame's own read: a part swapped before the first query is
    refused there, with the reader's message, and no query runs unpinned."""
    victim, attacker = store.dataset("v", tmp_path), store.dataset("x", tmp_path)
    df = read_encrypted_csv(spark, str(victim), kms_url=store.kms.url, schema=SCHEMA)
    shutil.copyfile(attacker / "part-1.csv.cspk", victim / ".staged")
    os.replace(victim / ".staged", victim / "part-1.csv.cspk")
    with pytest.raises(IntegrityError, match="is not the one committed"):
        answer(spark, QUERIES[0], df)
