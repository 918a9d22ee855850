"""The ``cipherspark_csv`` data source on a live local session: splitting, schemas, integrity,
and the writer's all-or-nothing publication."""

from __future__ import annotations

import csv
import hashlib
import io
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.functions import col, udf
from pyspark.sql.types import IntegerType, StringType, StructField, StructType

from cipherspark.crypto import ExpectedPart, read_header
from cipherspark.crypto.manifest import MANIFEST_NAME, read_manifest
from cipherspark.errors import DatasetConflictError, IntegrityError, JobError, OutputExistsError
from cipherspark.files import decrypt_path, encrypt_path
from cipherspark.kms import LocalKms
from cipherspark.kms.registry import dataset_location
from cipherspark.spark import (
    cipherspark_errors,
    read_encrypted_csv,
    spark_error,
    write_encrypted_csv,
    written_rows,
)
from tests.conftest import TEST_KEY

pytestmark = pytest.mark.spark

HEADER = ["name", "age", "job"]
PEOPLE = StructType([
    StructField("name", StringType(), True),
    StructField("age", IntegerType(), True),
    StructField("job", StringType(), True),
])
SEGMENT = 128  # 72 plaintext bytes in segment 0, 112 in the others
SMALL_PARTITIONS = 1024  # several segments per partition, still many partitions


def to_csv(rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().encode()


def plain_rows(text: bytes, *, header: bool = True) -> Counter[tuple[str | None, ...]]:
    """What Spark should read, by Python's csv module: every row, empty fields as null."""
    rows = list(csv.reader(io.StringIO(text.decode())))
    if header:
        rows = rows[1:]
    return Counter(tuple(v if v != "" else None for v in row) for row in rows)


def got_rows(df: DataFrame) -> Counter[tuple[Any, ...]]:
    return Counter(tuple(row) for row in df.collect())


def people_rows(count: int, seed: int, *, long_every: int = 0) -> list[list[str]]:
    rng = random.Random(seed)
    names = ["ann", "bob", "smith, john", 'say "hi"', "zoë", "o'neil", ""]
    rows = [HEADER]
    for i in range(count):
        job = rng.choice(["Developer", "Engineer", "Researcher", ""])
        if long_every and i % long_every == 0:
            job = "".join(rng.choice("abcdefgh, ") for _ in range(rng.randint(300, 900)))
        age = str(rng.randint(18, 60)) if rng.random() > 0.1 else ""
        rows.append([f"{rng.choice(names)}{i}", age, job])
    return rows


def encrypt(tmp_path: Path, kms: LocalKms, name: str, text: bytes,
            segment_size: int = SEGMENT) -> Path:
    plain = tmp_path / f"{name}.csv"
    plain.write_bytes(text)
    target = tmp_path / f"{name}.cspk"
    encrypt_path(plain, target, kms, TEST_KEY, segment_size=segment_size)
    return target


def translated(action: Callable[[], object]) -> object:
    """Run a Spark action, turning a failure into the cipherspark error it carries."""
    with cipherspark_errors():
        return action()


# -- reading ------------------------------------------------------------------------------------

CASES = {
    "normal": lambda: to_csv(people_rows(300, seed=1)),
    "long_lines": lambda: to_csv(people_rows(30, seed=2, long_every=4)),
    "smaller_than_a_segment": lambda: b"name,age,job\nann,30,Developer\n",
    "header_only": lambda: b"name,age,job\n",
    "no_trailing_newline": lambda: to_csv(people_rows(80, seed=3)).rstrip(b"\n"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_read_matches_the_plaintext(case: str, tmp_path: Path, kms: LocalKms,
                                    spark: SparkSession) -> None:
    text = CASES[case]()
    path = encrypt(tmp_path, kms, case, text)
    df = read_encrypted_csv(spark, str(path), kms_url=kms.url,
                            partition_bytes=SMALL_PARTITIONS)
    assert df.columns == HEADER
    assert got_rows(df) == plain_rows(text)
    if len(text) > 4000:
        assert df.rdd.getNumPartitions() >= 4


def test_read_a_folder_of_encrypted_files(tmp_path: Path, kms: LocalKms,
                                          spark: SparkSession) -> None:
    folder = tmp_path / "plain"
    folder.mkdir()
    expected: Counter[tuple[str | None, ...]] = Counter()
    for number in range(4):
        text = to_csv(people_rows(40 + 30 * number, seed=10 + number))
        (folder / f"part-{number}.csv").write_bytes(text)
        expected += plain_rows(text)
    (folder / "empty.csv").write_bytes(b"name,age,job\n")
    encrypt_path(folder, tmp_path / "enc", kms, TEST_KEY, segment_size=SEGMENT)
    assert len(list((tmp_path / "enc").glob("part-*.cspk"))) == 4
    assert (tmp_path / "enc" / "_manifest.cspk").exists()
    df = read_encrypted_csv(spark, str(tmp_path / "enc"), kms_url=kms.url,
                            partition_bytes=SMALL_PARTITIONS)
    assert got_rows(df) == expected


def test_header_false_names_columns_c0(tmp_path: Path, kms: LocalKms,
                                       spark: SparkSession) -> None:
    text = to_csv(people_rows(50, seed=4))
    path = encrypt(tmp_path, kms, "people", text)
    df = read_encrypted_csv(spark, str(path), kms_url=kms.url, header=False,
                            partition_bytes=SMALL_PARTITIONS)
    assert df.columns == ["_c0", "_c1", "_c2"]
    # The header line is now a data row.
    assert got_rows(df) == plain_rows(text, header=False)


def test_infer_schema_and_explicit_schema(tmp_path: Path, kms: LocalKms,
                                          spark: SparkSession) -> None:
    rows = [["name", "age", "job"]] + [[f"p{i}", str(20 + i % 30), "Engineer"]
                                       for i in range(200)]
    path = encrypt(tmp_path, kms, "people", to_csv(rows))
    expected = Counter((n, int(a), j) for n, a, j in rows[1:])

    inferred = read_encrypted_csv(spark, str(path), kms_url=kms.url, infer_schema=True,
                                  partition_bytes=SMALL_PARTITIONS)
    assert dict(inferred.dtypes) == {"name": "string", "age": "int", "job": "string"}
    assert got_rows(inferred) == expected

    explicit = read_encrypted_csv(spark, str(path), kms_url=kms.url, schema=PEOPLE,
                                  partition_bytes=SMALL_PARTITIONS)
    assert explicit.schema == PEOPLE
    assert got_rows(explicit) == expected
    # The typed column computes as a number, not as text.
    assert explicit.filter(col("age") >= 45).count() == sum(
        1 for _, a, _ in rows[1:] if int(a) >= 45)


def tamper(path: Path, offset_from_end: int) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) - offset_from_end] ^= 0x01
    path.write_bytes(bytes(data))


def test_tampered_segment_fails_the_job_with_integrity_error(
    tmp_path: Path, kms: LocalKms, spark: SparkSession
) -> None:
    path = encrypt(tmp_path, kms, "people", to_csv(people_rows(200, seed=5)))
    tamper(path, path.stat().st_size // 2)  # a segment in the middle, far from the schema's
    df = read_encrypted_csv(spark, str(path), kms_url=kms.url, schema=PEOPLE,
                            partition_bytes=SMALL_PARTITIONS)
    with pytest.raises(Exception) as raw:
        df.count()
    error = spark_error(raw.value)
    assert type(error) is IntegrityError
    assert "authentication" in str(error)
    with pytest.raises(IntegrityError, match="authentication"):
        translated(df.count)


def test_tampered_first_segment_fails_at_load(tmp_path: Path, kms: LocalKms,
                                              spark: SparkSession) -> None:
    path = encrypt(tmp_path, kms, "people", to_csv(people_rows(20, seed=6)))
    with open(path, "rb") as f:
        _, raw_header = read_header(f)
    data = bytearray(path.read_bytes())
    data[len(raw_header) + 40 + 10] ^= 0x80  # inside segment 0, which the schema is read from
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="authentication"):
        read_encrypted_csv(spark, str(path), kms_url=kms.url).count()


# -- writing ------------------------------------------------------------------------------------

WRITE_ROWS = [
    ("ann", 30, "Developer"),
    ("smith, john", 41, 'says "hi", twice'),
    ('"quoted"', None, ""),
    (None, 7, None),
    ("", 0, "plain"),
] + [(f"person{i}", i, "Engineer" if i % 2 else "Researcher") for i in range(40)]


def test_write_round_trip(tmp_path: Path, kms: LocalKms, spark: SparkSession) -> None:
    out = tmp_path / "parent" / "result"
    out.parent.mkdir()
    df = spark.createDataFrame(WRITE_ROWS, PEOPLE).repartition(3)
    write_encrypted_csv(df, str(out), kms_url=kms.url, key=TEST_KEY)
    # Only the published folder, and only part files and the manifest in it.
    assert [p.name for p in out.parent.iterdir()] == ["result"]
    names = sorted(p.name for p in out.iterdir())
    assert names[0] == "_manifest.cspk"
    parts = names[1:]
    assert parts and all(n.startswith("part-") and n.endswith(".csv.cspk") for n in parts)
    assert written_rows(str(out), kms_url=kms.url) == len(WRITE_ROWS)
    back = read_encrypted_csv(spark, str(out), kms_url=kms.url, schema=PEOPLE)
    # Empty strings are written '""' and read back as null: what Spark's own CSV source does
    # with its own output (measured on 4.1.4; tests/spark/test_differential.py).
    assert got_rows(back) == Counter(tuple(None if v == "" else v for v in row)
                                     for row in WRITE_ROWS)
    # And the CLI's decrypt gives one CSV with one header.
    decrypt_path(out, tmp_path / "result.csv", kms)
    lines = (tmp_path / "result.csv").read_bytes().splitlines()
    assert lines[0] == b"name,age,job"
    assert len(lines) == 1 + len(WRITE_ROWS)


def test_a_written_dataset_is_registered_and_an_overwrite_continues_it(
    tmp_path: Path, kms: LocalKms, spark: SparkSession
) -> None:
    out = tmp_path / "result"
    df = spark.createDataFrame(WRITE_ROWS[:5], PEOPLE)
    write_encrypted_csv(df, str(out), kms_url=kms.url, key=TEST_KEY)
    first = kms.dataset_at(dataset_location(out))
    manifest = read_manifest(out, lambda h: kms.unwrap_data_key(h.key_id, h.wrapped_key))
    assert first is not None and manifest is not None and manifest.identity is not None
    assert (first.dataset_id, first.generation) == (manifest.identity.dataset_id, 1)
    assert first.manifest_sha256 == hashlib.sha256(
        (out / MANIFEST_NAME).read_bytes()).hexdigest()
    write_encrypted_csv(df, str(out), kms_url=kms.url, key=TEST_KEY, overwrite=True)
    second = kms.dataset_at(dataset_location(out))
    assert second is not None
    assert (second.dataset_id, second.generation) == (first.dataset_id, 2)
    assert second.manifest_sha256 == hashlib.sha256(
        (out / MANIFEST_NAME).read_bytes()).hexdigest()


def test_a_writer_that_lost_the_race_publishes_nothing(
    tmp_path: Path, kms: LocalKms, spark: SparkSession
) -> None:
    """While the Spark job runs, another writer commits to the same location (here from
    inside a task): the job's commit is refused by the registry's compare-and-swap, and the
    other writer's dataset stays, registered; no staging folder is left."""
    out, other = tmp_path / "result", tmp_path / "other.csv"
    other.write_text("name,age,job\nzed,1,Engineer\n")
    url = kms.url

    def race(name):  # type: ignore[no-untyped-def]  # hints would make a pandas UDF
        import os

        from cipherspark.files import encrypt_path as encrypt
        from cipherspark.kms import Credentials, open_kms
        if name == "ann":
            creds = Credentials(os.environ["CIPHERSPARK_APP_ID"], os.environ["CIPHERSPARK_API_KEY"])
            encrypt(str(other), str(out), open_kms(url, creds), TEST_KEY, overwrite=True)
        return name

    racing = udf(race, StringType(), useArrow=False)
    df = spark.createDataFrame(WRITE_ROWS[:5], PEOPLE).withColumn("name", racing(col("name")))
    with pytest.raises(DatasetConflictError, match="another writer committed first"):
        write_encrypted_csv(df.coalesce(1), str(out), kms_url=url, key=TEST_KEY)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "kms") == ["other.csv", "result"]
    assert out.is_file()  # the other writer's single file
    record = kms.dataset_at(dataset_location(out))
    assert record is not None and record.manifest_sha256 == ExpectedPart.of(out).header_sha256


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_existing_output_without_overwrite_is_refused(tmp_path: Path, kms: LocalKms,
                                                      spark: SparkSession) -> None:
    out = tmp_path / "parent" / "result"
    out.parent.mkdir()
    write_encrypted_csv(spark.createDataFrame(WRITE_ROWS[:3], PEOPLE), str(out),
                        kms_url=kms.url, key=TEST_KEY)
    before = snapshot(out.parent)
    new = spark.createDataFrame([("zed", 1, "Engineer")], PEOPLE)
    with pytest.raises(OutputExistsError):
        write_encrypted_csv(new, str(out), kms_url=kms.url, key=TEST_KEY)
    assert snapshot(out.parent) == before

    write_encrypted_csv(new, str(out), kms_url=kms.url, key=TEST_KEY, overwrite=True)
    assert [p.name for p in out.parent.iterdir()] == ["result"]
    old_parts = {name for name in before if "/part-" in name}
    new_parts = {f"result/{name}" for name in snapshot(out) if name.startswith("part-")}
    assert new_parts and not old_parts & new_parts  # the old parts are gone
    back = read_encrypted_csv(spark, str(out), kms_url=kms.url, schema=PEOPLE)
    assert got_rows(back) == Counter([("zed", 1, "Engineer")])


def test_failed_task_leaves_nothing_behind(tmp_path: Path, kms: LocalKms,
                                           spark: SparkSession) -> None:
    out = tmp_path / "parent" / "result"
    out.parent.mkdir()

    def explode_on_boom(name):  # type: ignore[no-untyped-def]  # hints would make a pandas UDF
        if name == "person33":
            raise ValueError("boom in a task")
        return name

    # useArrow=False: PySpark 4.3 makes Python UDFs Arrow-optimised by default, which needs pandas
    # (not a dependency), and warns when it falls back; this test is about the failure.
    fail = udf(explode_on_boom, StringType(), useArrow=False)
    df = (spark.createDataFrame(WRITE_ROWS, PEOPLE).repartition(4)
          .withColumn("name", fail(col("name"))))
    # Other tasks write their parts before the failing one stops the job.
    with pytest.raises(JobError, match="Spark job failed"):
        write_encrypted_csv(df, str(out), kms_url=kms.url, key=TEST_KEY)
    assert list(out.parent.iterdir()) == []


def test_encrypted_output_holds_no_plaintext(tmp_path: Path, kms: LocalKms,
                                             spark: SparkSession) -> None:
    rng = random.Random(9)
    names = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(12))
             for _ in range(200)]
    df = spark.createDataFrame([(n, 30, "Developer") for n in names], PEOPLE)
    out = tmp_path / "result"
    write_encrypted_csv(df, str(out), kms_url=kms.url, key=TEST_KEY)
    blobs = [p.read_bytes() for p in out.iterdir()]
    assert sum(len(b) for b in blobs) > 200 * 12
    assert not any(n.encode() in blob for n in names for blob in blobs)
    assert not any(b"Developer" in blob or b"name,age,job" in blob for blob in blobs)
    back = read_encrypted_csv(spark, str(out), kms_url=kms.url, schema=PEOPLE)
    assert sorted(r["name"] for r in back.collect()) == sorted(names)
