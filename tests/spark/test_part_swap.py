"""Verify where you decrypt: a part file swapped on disk after the read was planned is refused by
the executor that opens it, and the reader's pins (options ``key``, ``datasetId``) refuse a
dataset that is not the one expected.

The attacker controls storage and holds another dataset of the same owner (another run under
the same KMS key: a data key the reader's KMS unwraps). Its parts are valid containers the
reader can decrypt, so only a check of the opened file against the planned manifest entry
keeps their rows out of the result. The reader is driven first exactly as Spark drives it
(the source and reader pickled, ``partitions()`` planned, each partition pickled and read in
"another" process's copy of the reader), then through real Spark queries.
"""

from __future__ import annotations

import os
import pickle
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyspark import cloudpickle
from pyspark.sql import SparkSession
from pyspark.sql.types import IntegerType, StringType, StructField, StructType

from cipherspark._ddl import ddl_columns
from cipherspark.crypto.manifest import list_parts, open_dataset, read_manifest
from cipherspark.errors import IntegrityError, UsageError
from cipherspark.files import encrypt_path
from cipherspark.kms import LocalKms, open_kms
from cipherspark.spark import (
    FORMAT_NAME,
    EncryptedCsvDataSource,
    cipherspark_errors,
    read_encrypted_csv,
)
from cipherspark.spark._options import ReadOptions
from tests.conftest import TEST_CREDENTIALS, TEST_KEY

pytestmark = pytest.mark.spark

OTHER_KEY = "other-key"
SCHEMA = StructType(
    [StructField("name", StringType(), True), StructField("age", IntegerType(), True)]
)
SEGMENT = 512
PARTS = 3
ROWS_PER_PART = 150
SWAPPED = "part-1.csv.cspk"


def part_text(run: str, number: int) -> bytes:
    # Fixed-width rows: every run's part of a number has the same size, so a swapped part has
    # the size, segment count and split layout the planner saw.
    rows = "".join(f"{run}{number}-{i:04d},{20 + i % 50}\n" for i in range(ROWS_PER_PART))
    return ("name,age\n" + rows).encode()


@dataclass(frozen=True)
class Runs:
    kms: LocalKms
    base: Path

    def fresh(self, run: str, tmp_path: Path, *, key: str = TEST_KEY) -> Path:
        """A new dataset folder of ``run``'s rows, encrypted under ``key``."""
        plain = tmp_path / f"plain-{run}-{key}"
        plain.mkdir()
        for number in range(PARTS):
            (plain / f"part-{number}.csv").write_bytes(part_text(run, number))
        target = tmp_path / f"{run}-{key}"
        encrypt_path(plain, target, self.kms, key, segment_size=SEGMENT)
        return target


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    base = tmp_path_factory.mktemp("swap")
    service = open_kms((base / "kms").as_uri(), TEST_CREDENTIALS, create=True)
    assert isinstance(service, LocalKms)
    service.create_key(TEST_KEY)
    service.create_key(OTHER_KEY)
    yield Runs(service, base)


def expected_rows(run: str) -> Counter[tuple[Any, ...]]:
    return Counter(
        (f"{run}{n}-{i:04d}", 20 + i % 50) for n in range(PARTS) for i in range(ROWS_PER_PART)
    )


def swap_in(victim: Path, attacker: Path, name: str = SWAPPED) -> None:
    """Replace one part of ``victim`` by the part of that name of ``attacker`` (a rename: the
    path now names another file, as an attacker with write access to storage does it)."""
    staged = victim / f".{name}.attacker"
    shutil.copyfile(attacker / name, staged)
    os.replace(staged, victim / name)


# -- the reader driven as Spark drives it --------------------------------------------------------


@dataclass
class Planned:
    reader: Any  # the executor's copy of the reader
    partitions: list[Any]  # as the executor receives them

    def rows(self) -> Counter[tuple[Any, ...]]:
        got: Counter[tuple[Any, ...]] = Counter()
        for partition in self.partitions:
            for batch in self.reader.read(partition):
                table = pa.Table.from_batches([batch])
                got.update(
                    zip(
                        table.column("name").to_pylist(),
                        table.column("age").to_pylist(),
                        strict=True,
                    )
                )
        return got


def plan(path: Path, kms: LocalKms, **options: str) -> Planned:
    """What Spark does with a read: build the source from its options, ask its schema, build the
    reader (pickled to the planner worker), plan the partitions there, pickle each to a task,
    and run it in an executor's unpickled copy of the reader."""
    source = EncryptedCsvDataSource(
        {
            "path": str(path),
            "kms": kms.url,
            "minPartitions": "2",
            "partitionBytes": str(2 * SEGMENT),
            **options,
        }
    )
    schema = source.schema()  # recorded by the writer (DDL), or inferred from the first part
    names = [n for n, _ in ddl_columns(schema)] if isinstance(schema, str) else schema.fieldNames()
    assert names == SCHEMA.fieldNames()
    planner = cloudpickle.loads(cloudpickle.dumps(source.reader(SCHEMA)))
    partitions = [pickle.loads(pickle.dumps(p)) for p in planner.partitions()]
    assert len(partitions) >= 2  # several splits
    executor = cloudpickle.loads(cloudpickle.dumps(planner))
    return Planned(executor, partitions)


def test_attacker_parts_are_readable_on_their_own(runs: Runs, tmp_path: Path) -> None:
    """The premise: the attacker's dataset is one the reader can decrypt (same owner, same key),
    so without a check against the planned manifest its part would be read."""
    attacker = runs.fresh("x", tmp_path)
    assert plan(attacker, runs.kms).rows() == expected_rows("x")


def test_part_swapped_after_planning_is_refused_by_the_executor(runs: Runs, tmp_path: Path) -> None:
    victim, attacker = runs.fresh("v", tmp_path), runs.fresh("x", tmp_path)
    assert plan(victim, runs.kms).rows() == expected_rows("v")  # intact: read in full

    planned = plan(victim, runs.kms)
    swap_in(victim, attacker)
    assert (victim / SWAPPED).stat().st_size == (attacker / SWAPPED).stat().st_size
    with pytest.raises(IntegrityError) as raised:
        planned.rows()
    message = str(raised.value)
    assert str(victim / SWAPPED) in message
    assert "is not the file that was verified when the read began" in message
    assert "x1-" not in message and "v1-" not in message  # the file is named, never a value
    # Partitions of the untouched parts still read the victim's rows, and only those.
    others = [
        p
        for p in planned.partitions
        if all(piece.part.path != str(victim / SWAPPED) for piece in p.pieces)
    ]
    assert others
    got = Planned(planned.reader, others).rows()
    assert got and all(name.startswith("v") for name, _ in got)


def test_part_modified_in_place_after_planning_is_refused(runs: Runs, tmp_path: Path) -> None:
    """The same file (same inode), rewritten with another run's bytes: the size and header
    digest the executor reads from its descriptor are not the planned ones."""
    victim, attacker = runs.fresh("v", tmp_path), runs.fresh("x", tmp_path)
    planned = plan(victim, runs.kms)
    inode = (victim / SWAPPED).stat().st_ino
    (victim / SWAPPED).write_bytes((attacker / SWAPPED).read_bytes())
    assert (victim / SWAPPED).stat().st_ino == inode
    with pytest.raises(IntegrityError, match="is not the file that was verified"):
        planned.rows()


def test_part_removed_after_planning_is_an_integrity_error(runs: Runs, tmp_path: Path) -> None:
    victim = runs.fresh("v", tmp_path)
    planned = plan(victim, runs.kms)
    (victim / SWAPPED).unlink()
    with pytest.raises(IntegrityError, match=f"{SWAPPED} is missing"):
        planned.rows()


def test_single_file_swapped_after_planning_is_refused(runs: Runs, tmp_path: Path) -> None:
    """A file without a manifest: the splits are bound to the file as planning saw it."""
    encrypted = {}
    for run in ("v", "x"):
        (tmp_path / f"{run}.csv").write_bytes(part_text(run, 0))
        encrypted[run] = tmp_path / f"{run}.cspk"
        encrypt_path(
            tmp_path / f"{run}.csv", encrypted[run], runs.kms, TEST_KEY, segment_size=SEGMENT
        )
    planned = plan(encrypted["v"], runs.kms)
    os.replace(encrypted["x"], encrypted["v"])
    with pytest.raises(IntegrityError, match="is not the file that was verified"):
        planned.rows()


def test_manifest_swapped_after_planning_changes_nothing(runs: Runs, tmp_path: Path) -> None:
    """Executors never read the manifest again: what they check is the entry planning put in
    their split. A whole dataset swapped after planning fails at the first part."""
    victim, attacker = runs.fresh("v", tmp_path), runs.fresh("x", tmp_path)
    planned = plan(victim, runs.kms)
    staged = tmp_path / "staged"
    shutil.copytree(attacker, staged)
    shutil.rmtree(victim)
    os.replace(staged, victim)
    with pytest.raises(IntegrityError, match="is not the file that was verified"):
        planned.rows()


# -- the reader's pins ---------------------------------------------------------------------------


def test_key_option_refuses_a_dataset_under_another_key(runs: Runs, tmp_path: Path) -> None:
    victim = runs.fresh("v", tmp_path)
    other = runs.fresh("x", tmp_path, key=OTHER_KEY)
    assert plan(victim, runs.kms, key=TEST_KEY).rows() == expected_rows("v")
    assert plan(other, runs.kms).rows() == expected_rows("x")  # readable without the pin
    with pytest.raises(IntegrityError) as raised:
        plan(other, runs.kms, key=TEST_KEY)
    assert str(raised.value) == (
        f"{other}: the dataset is under key {OTHER_KEY!r}, not {TEST_KEY!r} "
        "(it may have been replaced by another dataset)"
    )


def test_key_option_is_checked_on_executors_too(runs: Runs, tmp_path: Path) -> None:
    """Pinned at planning, the key travels in every split: a part under another key swapped in
    later fails the executor's check (its header is not the planned one)."""
    victim = runs.fresh("v", tmp_path)
    other = runs.fresh("x", tmp_path, key=OTHER_KEY)
    planned = plan(victim, runs.kms, key=TEST_KEY)
    assert {p.part.header.key_id for partition in planned.partitions for p in partition.pieces} == {
        TEST_KEY
    }
    swap_in(victim, other)
    with pytest.raises(IntegrityError, match="is not the file that was verified"):
        planned.rows()


def test_key_option_on_a_single_file(runs: Runs, tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_bytes(part_text("x", 0))
    encrypt_path(tmp_path / "x.csv", tmp_path / "x.cspk", runs.kms, OTHER_KEY)
    with pytest.raises(IntegrityError, match=f"under key {OTHER_KEY!r}, not {TEST_KEY!r}"):
        plan(tmp_path / "x.cspk", runs.kms, key=TEST_KEY)
    with pytest.raises(UsageError, match="single file"):
        plan(tmp_path / "x.cspk", runs.kms, datasetId="0" * 32)


def test_dataset_id_option_refuses_another_dataset_under_the_same_key(
    runs: Runs, tmp_path: Path
) -> None:
    victim, attacker = runs.fresh("v", tmp_path), runs.fresh("x", tmp_path)
    unwrap = runs.kms.unwrap_data_key
    victim_id = open_dataset(victim, lambda h: unwrap(h.key_id, h.wrapped_key)).identity
    assert victim_id is not None
    assert plan(victim, runs.kms, datasetId=victim_id.dataset_id).rows() == expected_rows("v")
    # The whole folder replaced by the attacker's complete, valid dataset under the same key.
    shutil.rmtree(victim)
    shutil.copytree(attacker, victim)
    # The registry refuses it; with that check off (the pin is what is tested here) it is
    # accepted without a pin, and refused with one.
    with pytest.raises(IntegrityError, match="replaced by another dataset"):
        plan(victim, runs.kms)
    skip = {"unsafeSkipRegistry": "true"}
    assert plan(victim, runs.kms, **skip).rows() == expected_rows("x")
    with pytest.raises(IntegrityError, match=f"not {victim_id.dataset_id}"):
        plan(victim, runs.kms, datasetId=victim_id.dataset_id, **skip)
    with pytest.raises(UsageError, match="datasetId"):
        plan(victim, runs.kms, datasetId="not-an-id")


def test_splits_carry_the_commit_and_its_pin_refuses_another(runs: Runs, tmp_path: Path) -> None:
    """Every split names the manifest planning read (encrypted_sql pins its re-plans to it);
    with that digest as the option manifestDigest, a dataset put in its place is refused."""
    victim, attacker = runs.fresh("v", tmp_path), runs.fresh("x", tmp_path)
    unwrap = runs.kms.unwrap_data_key
    digest = open_dataset(victim, lambda h: unwrap(h.key_id, h.wrapped_key)).manifest_sha256
    planned = plan(victim, runs.kms)
    assert {p.pin.digest for p in planned.partitions} == {digest}
    assert plan(victim, runs.kms, manifestDigest=digest).rows() == expected_rows("v")
    shutil.rmtree(victim)
    shutil.copytree(attacker, victim)
    # Refused by the registry; with that check off, accepted without the pin and refused with it.
    with pytest.raises(IntegrityError, match="replaced by another dataset"):
        plan(victim, runs.kms)
    skip = {"unsafeSkipRegistry": "true"}
    assert plan(victim, runs.kms, **skip).rows() == expected_rows("x")
    with pytest.raises(IntegrityError, match=f"the dataset at {victim} changed since it was"):
        plan(victim, runs.kms, manifestDigest=digest, **skip)


def test_pins_survive_the_options_round_trip() -> None:
    """encrypted_sql re-reads a table from ReadOptions.to_options(): the pins must stay."""
    options = ReadOptions.parse(
        {"path": "/d", "kms": "file:///k", "key": "k1", "datasetId": "ab" * 16}
    )
    assert (options.key_id, options.dataset_id) == ("k1", "ab" * 16)
    again = ReadOptions.parse({"path": "/d", **options.to_options()})
    assert again == options
    assert ReadOptions.parse({"path": "/d", "kms": "file:///k"}).key_id is None


# -- real Spark queries --------------------------------------------------------------------------


def translated(action: Callable[[], object]) -> object:
    with cipherspark_errors():
        return action()


def test_spark_query_with_a_part_swapped_between_actions(
    runs: Runs, spark: SparkSession, tmp_path: Path
) -> None:
    """Spark plans a DataFrame's partitions once and reuses them for every action: a part
    swapped after the first action is met by the executors alone."""
    victim, attacker = runs.fresh("v", tmp_path), runs.fresh("x", tmp_path)
    df = read_encrypted_csv(
        spark, str(victim), kms_url=runs.kms.url, schema=SCHEMA, partition_bytes=2 * SEGMENT
    )
    assert df.count() == PARTS * ROWS_PER_PART
    swap_in(victim, attacker)
    with pytest.raises(IntegrityError) as raised:
        translated(df.collect)
    assert "is not the file that was verified when the read began" in str(raised.value)
    assert str(victim / SWAPPED) in str(raised.value)


def test_spark_query_with_a_part_swapped_after_the_dataframe_is_created(
    runs: Runs, spark: SparkSession, tmp_path: Path
) -> None:
    """Swapped after ``load()`` and before the first action: refused (planning sees it)."""
    victim, attacker = runs.fresh("v", tmp_path), runs.fresh("x", tmp_path)
    df = read_encrypted_csv(spark, str(victim), kms_url=runs.kms.url, schema=SCHEMA)
    swap_in(victim, attacker)
    with pytest.raises(IntegrityError, match=f"{SWAPPED} is not the one committed"):
        translated(df.collect)


def test_spark_reader_key_option(runs: Runs, spark: SparkSession, tmp_path: Path) -> None:
    other = runs.fresh("x", tmp_path, key=OTHER_KEY)
    reader = spark.read.format(FORMAT_NAME).option("kms", runs.kms.url).schema(SCHEMA)
    assert reader.option("key", OTHER_KEY).load(str(other)).count() == PARTS * ROWS_PER_PART
    df = reader.option("key", TEST_KEY).load(str(other))
    with pytest.raises(IntegrityError, match=f"under key {OTHER_KEY!r}, not {TEST_KEY!r}"):
        translated(df.count)


def test_spark_overwrite_continues_the_dataset(
    runs: Runs, spark: SparkSession, tmp_path: Path
) -> None:
    """An overwrite in place keeps the dataset id and counts the generation up; a new output
    is a new dataset."""
    from cipherspark.spark import write_encrypted_csv

    unwrap = runs.kms.unwrap_data_key

    def identity(path: Path) -> Any:
        manifest = read_manifest(path, lambda h: unwrap(h.key_id, h.wrapped_key))
        assert manifest is not None
        return manifest.identity

    df = spark.createDataFrame([("ann", 30), ("bob", 41)], SCHEMA)
    out = tmp_path / "out"
    write_encrypted_csv(df, str(out), kms_url=runs.kms.url, key=TEST_KEY)
    first = identity(out)
    assert (first.key_id, first.generation) == (TEST_KEY, 1)
    write_encrypted_csv(df, str(out), kms_url=runs.kms.url, key=TEST_KEY, overwrite=True)
    second = identity(out)
    assert (second.dataset_id, second.generation) == (first.dataset_id, 2)
    write_encrypted_csv(df, str(tmp_path / "new"), kms_url=runs.kms.url, key=TEST_KEY)
    assert identity(tmp_path / "new").dataset_id != first.dataset_id
    assert len(list_parts(out)) >= 1
