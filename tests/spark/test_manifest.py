"""Dataset manifests of Spark-written folders: what the writer commits, ``written_rows``, and the
readers (``decrypt_path``, the data source) refusing a folder whose parts were tampered with."""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql.functions import col
from pyspark.sql.types import IntegerType, StringType, StructField, StructType

from cipherspark.crypto import read_header
from cipherspark.crypto.manifest import (
    MANIFEST_CONTENT_TYPE_V3,
    MANIFEST_NAME,
    list_parts,
    read_manifest,
)
from cipherspark.datasets import register_dataset
from cipherspark.errors import InputError, IntegrityError
from cipherspark.files import decrypt_path, encrypt_path
from cipherspark.kms import LocalKms, open_kms
from cipherspark.spark import (
    cipherspark_errors,
    read_encrypted_csv,
    write_encrypted_csv,
    written_rows,
)
from tests.conftest import TEST_CREDENTIALS, TEST_KEY
from tests.crypto.test_manifest import TAMPERS, flip_bit

pytestmark = pytest.mark.spark

PEOPLE = StructType([
    StructField("name", StringType(), True),
    StructField("age", IntegerType(), True),
    StructField("job", StringType(), True),
])
# Fixed-width rows: parts holding as many rows have the same size (for swap_same_size_parts).
ROWS = [(f"p{i:04d}", 20 + i % 50, "Engineer" if i % 3 else "Designer") for i in range(60)]
PARTITIONS = 3


def translated(action: Callable[[], object]) -> object:
    """Run a Spark action, turning a failure into the cipherspark error it carries."""
    with cipherspark_errors():
        return action()


@dataclass(frozen=True)
class Written:
    kms: LocalKms
    run: Path  # a Spark-written dataset of ROWS
    other_run: Path  # the same rows written again: same shape, another data key


@pytest.fixture(scope="module")
def written(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Written]:
    base = tmp_path_factory.mktemp("manifest")
    service = open_kms((base / "kms").as_uri(), TEST_CREDENTIALS, create=True)
    assert isinstance(service, LocalKms)
    service.create_key(TEST_KEY)
    df = spark.createDataFrame(ROWS, PEOPLE).repartition(PARTITIONS)
    for name in ("run", "other_run"):
        write_encrypted_csv(df, str(base / name), kms_url=service.url, key=TEST_KEY)
    yield Written(service, base / "run", base / "other_run")


def copy_of(folder: Path, tmp_path: Path, kms: LocalKms) -> Path:
    """A copy of ``folder``, registered where it lands (as ``cipherspark dataset cp`` does):
    what is done to it afterwards is then caught by the manifest checks tested here, not by the
    registry (whose own refusals are tests/spark/test_registry_reads.py's)."""
    target = tmp_path / folder.name
    shutil.copytree(folder, target)
    register_dataset(target, kms)
    return target


def got_rows(df: object) -> Counter[tuple[object, ...]]:
    return Counter(tuple(row) for row in df.collect())  # type: ignore[attr-defined]


def test_spark_writer_commits_a_manifest_of_its_parts(written: Written, tmp_path: Path) -> None:
    kms = written.kms
    parts = list_parts(written.run)
    assert len(parts) == PARTITIONS
    manifest = read_manifest(written.run,
                             lambda h: kms.unwrap_data_key(h.key_id, h.wrapped_key))
    assert manifest is not None
    assert [p.name for p in manifest.parts] == [p.name for p in parts]
    assert [p.size for p in manifest.parts] == [p.stat().st_size for p in parts]
    assert manifest.rows == len(ROWS)
    # Each part's row count is the number of data lines it decrypts to.
    for number, (entry, part) in enumerate(zip(manifest.parts, parts, strict=True)):
        out = tmp_path / f"part{number}.csv"
        # A part alone is not a registered dataset: the registry check is off for it.
        decrypt_path(part, out, kms, unsafe_skip_registry=True)
        lines = out.read_bytes().splitlines()
        assert lines[0] == b"name,age,job"
        assert entry.rows == len(lines) - 1
    # The manifest is encrypted under the dataset's key id and wrapped data key.
    with open(written.run / MANIFEST_NAME, "rb") as f:
        manifest_header, _ = read_header(f)
    with open(parts[0], "rb") as f:
        part_header, _ = read_header(f)
    # Version 3: the writer records the DataFrame's columns.
    assert manifest_header.content_type == MANIFEST_CONTENT_TYPE_V3
    assert manifest.schema is not None and manifest.schema.startswith("`name` STRING")
    assert (manifest_header.key_id, manifest_header.wrapped_key) == (
        part_header.key_id, part_header.wrapped_key)
    assert b"p0001" not in (written.run / MANIFEST_NAME).read_bytes()


def test_written_rows_is_the_row_count(written: Written, spark: SparkSession) -> None:
    url = written.kms.url
    assert written_rows(str(written.run), kms_url=url) == len(ROWS)
    df = read_encrypted_csv(spark, str(written.run), kms_url=url, schema=PEOPLE)
    assert df.count() == len(ROWS)
    assert written_rows(str(written.other_run), kms_url=url) == len(ROWS)


def test_written_rows_of_an_empty_result(written: Written, spark: SparkSession,
                                         tmp_path: Path) -> None:
    url = written.kms.url
    df = read_encrypted_csv(spark, str(written.run), kms_url=url, schema=PEOPLE)
    out = tmp_path / "nobody"
    write_encrypted_csv(df.filter(col("age") > 1000), str(out), kms_url=url, key=TEST_KEY)
    assert written_rows(str(out), kms_url=url) == 0
    back = read_encrypted_csv(spark, str(out), kms_url=url, schema=PEOPLE)
    assert back.count() == 0
    # One (empty) part is kept, so the empty dataset stays readable, and it decrypts.
    assert len(list_parts(out)) == 1
    decrypt_path(out, tmp_path / "nobody.csv", written.kms)
    assert (tmp_path / "nobody.csv").read_bytes() == b"name,age,job\n"


def test_written_rows_needs_a_manifest(written: Written, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "part-0.csv").write_bytes(b"name,age,job\nann,30,Developer\n")
    encrypt_path(plain, tmp_path / "enc", written.kms, TEST_KEY)
    (tmp_path / "enc" / MANIFEST_NAME).unlink()
    with pytest.raises(InputError, match="no dataset manifest"):
        written_rows(str(tmp_path / "enc"), kms_url=written.kms.url)


def test_written_rows_refuses_a_tampered_manifest(written: Written, tmp_path: Path) -> None:
    folder = copy_of(written.run, tmp_path, written.kms)
    manifest = folder / MANIFEST_NAME
    flip_bit(manifest, manifest.stat().st_size - 5)
    with pytest.raises(IntegrityError):
        written_rows(str(folder), kms_url=written.kms.url)


def test_encrypted_folder_is_read_and_needs_its_manifest(
    written: Written, spark: SparkSession, tmp_path: Path
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "part-0.csv").write_bytes(b"name,age,job\nann,30,Developer\nbob,41,Engineer\n")
    (plain / "part-1.csv").write_bytes(b"name,age,job\ncyd,25,Designer\n")
    encrypt_path(plain, tmp_path / "enc", written.kms, TEST_KEY)
    assert written_rows(str(tmp_path / "enc"), kms_url=written.kms.url) == 3
    df = read_encrypted_csv(spark, str(tmp_path / "enc"), kms_url=written.kms.url,
                            schema=PEOPLE)
    assert got_rows(df) == Counter([("ann", 30, "Developer"), ("bob", 41, "Engineer"),
                                    ("cyd", 25, "Designer")])
    decrypt_path(tmp_path / "enc", tmp_path / "all.csv", written.kms)
    assert (tmp_path / "all.csv").read_bytes().count(b"\n") == 4
    (tmp_path / "enc" / MANIFEST_NAME).unlink()
    with pytest.raises(IntegrityError, match="no dataset manifest"):
        translated(lambda: read_encrypted_csv(spark, str(tmp_path / "enc"),
                                              kms_url=written.kms.url, schema=PEOPLE).count())


def test_intact_copy_reads_and_decrypts(written: Written, spark: SparkSession,
                                        tmp_path: Path) -> None:
    """The tamper tests below start from such a copy: it must be valid to begin with."""
    folder = copy_of(written.run, tmp_path, written.kms)
    df = read_encrypted_csv(spark, str(folder), kms_url=written.kms.url, schema=PEOPLE)
    assert got_rows(df) == Counter(ROWS)
    decrypt_path(folder, tmp_path / "all.csv", written.kms)
    assert (tmp_path / "all.csv").read_bytes().count(b"\n") == 1 + len(ROWS)


def _tampered(case: str, written: Written, tmp_path: Path) -> tuple[Path, type[Exception]]:
    folder = copy_of(written.run, tmp_path, written.kms)
    expected = TAMPERS[case](folder, written.other_run)
    return folder, expected


@pytest.mark.parametrize("case", sorted(TAMPERS))
def test_tampered_spark_folder_does_not_decrypt(case: str, written: Written,
                                                tmp_path: Path) -> None:
    folder, expected = _tampered(case, written, tmp_path)
    out = tmp_path / "out.csv"
    with pytest.raises(expected) as raised:
        decrypt_path(folder, out, written.kms)
    assert type(raised.value) is expected
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name]


@pytest.mark.parametrize("case", sorted(TAMPERS))
def test_tampered_spark_folder_fails_the_read(case: str, written: Written, spark: SparkSession,
                                              tmp_path: Path) -> None:
    folder, expected = _tampered(case, written, tmp_path)
    df = read_encrypted_csv(spark, str(folder), kms_url=written.kms.url, schema=PEOPLE)
    with pytest.raises(expected) as raised:
        translated(df.count)
    assert type(raised.value) is expected


@pytest.mark.parametrize("case", ["remove_part", "foreign_part", "foreign_manifest"])
def test_tampered_spark_folder_fails_schema_inference(case: str, written: Written,
                                                      spark: SparkSession,
                                                      tmp_path: Path) -> None:
    """Without a schema the source infers one at load, from a verified listing only."""
    folder, expected = _tampered(case, written, tmp_path)
    with pytest.raises(expected) as raised:
        read_encrypted_csv(spark, str(folder), kms_url=written.kms.url,
                           infer_schema=True).count()
    assert type(raised.value) is expected
