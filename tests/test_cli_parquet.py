"""The CLI on encrypted Parquet: ``encrypt --to parquet``, ``decrypt`` of Parquet (to CSV and to
plaintext Parquet), ``sql`` and ``query simple`` over Parquet tables (the format told from the
bytes), each answer checked against plain Spark on the plaintext in the same test; then the
attacker: a plaintext file slipped into an encrypted table, a table under another key, a key the
caller lacks, a tampered file, a KMS that is down, each one line with nothing written.
"""

from __future__ import annotations

import csv
import os
import random
import shutil
import string
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest
from pyspark.sql import SparkSession

from cipherspark.files import decrypt_path, encrypt_path
from cipherspark.kms import LocalKms
from cipherspark.spark.pme import find_pme_jar
from tests.conftest import TEST_CREDENTIALS, TEST_KEY
from tests.spark.test_pme import CipherSparkArrowKms, crypto_metadata

pytestmark = [
    pytest.mark.spark,
    pytest.mark.skipif(find_pme_jar() is None, reason="scripts/build-java has not been run"),
]

JOBS = ("Developer", "Engineer", "Researcher", "Zookeeper")
QUERY = (
    "SELECT s.dept, p.job, count(*) AS n, sum(p.age) AS total, max(p.name) AS last "
    "FROM people p JOIN staff s ON p.job = s.job GROUP BY s.dept, p.job"
)


@dataclass(frozen=True)
class World:
    """A keystore, plaintext people.csv / staff.csv, their encrypted forms, the CLI's env."""

    root: Path
    kms: LocalKms
    names: tuple[str, ...]
    env: dict[str, str]

    def cli(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cipherspark", *args],
            cwd=self.root,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=900,
        )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cipherspark: error: "), result.stderr
    return lines[0]


def listing(root: Path) -> set[str]:
    """Every path under ``root`` except Spark's logs: hidden staging leftovers included."""
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if not str(p.relative_to(root)).startswith(".cipherspark")
    }


def arrow_encryption(url: str, key: str) -> pe.FileEncryptionProperties:
    config = pe.KmsConnectionConfig(kms_instance_url=url)
    return pe.CryptoFactory(CipherSparkArrowKms).file_encryption_properties(
        config, pe.EncryptionConfiguration(footer_key=key, uniform_encryption=True)
    )


def read_encrypted(folder: Path, url: str) -> list[dict[str, object]]:
    config = pe.KmsConnectionConfig(kms_instance_url=url)
    props = pe.CryptoFactory(CipherSparkArrowKms).file_decryption_properties(
        config, pe.DecryptionConfiguration()
    )
    rows: list[dict[str, object]] = []
    for part in sorted(folder.glob("*.parquet")):
        rows += pq.ParquetFile(str(part), decryption_properties=props).read().to_pylist()
    return rows


def plain_rows(spark: SparkSession, path: Path) -> list[tuple[object, ...]]:
    """Plain Spark's reading of a plaintext CSV file (header, inferred schema), sorted."""
    frame = spark.read.option("header", "true").option("inferSchema", "true").csv(str(path))
    return sorted(tuple(r) for r in frame.collect())


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("cli-parquet")
    kms = LocalKms(root / "kms", TEST_CREDENTIALS, create=True)
    kms.create_key(TEST_KEY)
    kms.create_key("other")
    rng = random.Random(15)
    names = tuple("".join(rng.choices(string.ascii_lowercase, k=14)) for _ in range(300))
    with (root / "people.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["name", "age", "job"])
        for name in names:
            writer.writerow([name, rng.randint(18, 60), rng.choice(JOBS)])
    (root / "staff.csv").write_text(
        "job,dept\nDeveloper,R&D\nEngineer,R&D\nResearcher,Lab\nZookeeper,Zoo\n"
    )
    encrypt_path(root / "staff.csv", root / "staff.csv.cspk", kms, TEST_KEY)
    env = {
        **os.environ,
        "CIPHERSPARK_KMS": kms.url,
        "CIPHERSPARK_APP_ID": TEST_CREDENTIALS.app_id,
        "CIPHERSPARK_API_KEY": TEST_CREDENTIALS.api_key,
        "CIPHERSPARK_MASTER": "local[2]",
    }
    for name in ("CIPHERSPARK_KEY", "CIPHERSPARK_TEE", "CIPHERSPARK_DEBUG"):
        env.pop(name, None)
    world = World(root, kms, names, env)
    result = world.cli(
        "encrypt", "people.csv", "people.parquet", "--key", TEST_KEY, "--to", "parquet"
    )
    assert result.returncode == 0, result.stderr
    assert "encrypted 300 rows" in result.stdout
    return world


def test_encrypt_to_parquet_and_decrypt_to_csv_and_to_parquet(
    world: World, spark: SparkSession
) -> None:
    root = world.root
    expected = plain_rows(spark, root / "people.csv")
    parts = sorted((root / "people.parquet").glob("*.parquet"))
    assert parts
    for part in parts:
        data = part.read_bytes()
        assert data[:4] == b"PARE" and data[-4:] == b"PARE"  # encrypted footer
        assert not any(name.encode() in data for name in world.names)
        assert f'"masterKeyID":"{TEST_KEY}"'.encode() in crypto_metadata(part)
    # Another PME reader (pyarrow) sees the rows and types plain Spark reads from the CSV.
    got = read_encrypted(root / "people.parquet", world.kms.url)
    assert sorted((r["name"], r["age"], r["job"]) for r in got) == expected

    result = world.cli("decrypt", "people.parquet", "back.csv")
    assert result.returncode == 0, result.stderr
    assert "decrypted 300 rows" in result.stdout
    text = (root / "back.csv").read_text()
    assert text.startswith("name,age,job\n") and text.count("name,age,job") == 1
    assert plain_rows(spark, root / "back.csv") == expected

    result = world.cli(
        "decrypt", "people.parquet", "back-plain", "--to", "parquet", "--key", TEST_KEY
    )
    assert result.returncode == 0, result.stderr
    plain_parts = sorted((root / "back-plain").glob("*.parquet"))
    assert plain_parts and all(p.read_bytes()[-4:] == b"PAR1" for p in plain_parts)
    table = pq.read_table(str(root / "back-plain")).to_pylist()
    assert sorted((r["name"], r["age"], r["job"]) for r in table) == expected


def test_sql_over_a_parquet_and_a_csv_table(world: World, spark: SparkSession) -> None:
    root = world.root
    result = world.cli(
        "sql",
        QUERY,
        "-t",
        "people=people.parquet",
        "-t",
        "staff=staff.csv.cspk",
        "-o",
        "by-dept",
        "--key",
        TEST_KEY,
    )
    assert result.returncode == 0, result.stderr
    decrypt_path(root / "by-dept", root / "by-dept.csv", world.kms)
    for name, source in (("people", "people.csv"), ("staff", "staff.csv")):
        frame = spark.read.option("header", "true").option("inferSchema", "true")
        frame.csv(str(root / source)).createOrReplaceTempView(name)
    expected = sorted(tuple(str(v) for v in r) for r in spark.sql(QUERY).collect())
    with (root / "by-dept.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["dept", "job", "n", "total", "last"]
    assert sorted(tuple(r) for r in rows[1:]) == expected
    assert len(expected) == len(JOBS)


def test_query_simple_on_parquet(world: World, spark: SparkSession) -> None:
    root = world.root
    result = world.cli(
        "query", "simple", "--input", "people.parquet", "-o", "developers", "--key", TEST_KEY
    )
    assert result.returncode == 0, result.stderr
    people = (
        spark.read.option("header", "true")
        .option("inferSchema", "true")
        .csv(str(root / "people.csv"))
    )
    selected = people.where("job = 'Developer' AND age BETWEEN 20 AND 40")
    expected = sorted(tuple(r) for r in selected.collect())
    assert expected  # the comparison can fail
    assert "names: 300" in result.stdout
    assert f"Developers aged 20-40: {len(expected)}" in result.stdout
    decrypt_path(root / "developers", root / "developers.csv", world.kms)
    assert plain_rows(spark, root / "developers.csv") == expected


# -- the attacker ---------------------------------------------------------------------------------


def test_a_plaintext_file_slipped_into_an_encrypted_table_is_refused(world: World) -> None:
    table = world.root / "planted"
    shutil.copytree(world.root / "people.parquet", table)
    # Whoever can write to storage adds rows of their choosing: PME would read them.
    pq.write_table(
        pa.table({"name": ["mallory"], "age": [30], "job": ["Developer"]}),
        str(table / "part-99999-planted.parquet"),
    )
    before = listing(world.root)
    for args in (
        (
            "sql",
            "SELECT count(*) FROM people",
            "-t",
            "people=planted",
            "-o",
            "p1",
            "--key",
            TEST_KEY,
        ),
        ("query", "simple", "-i", "planted", "-o", "p2", "--key", TEST_KEY),
        ("decrypt", "planted", "p3.csv"),
    ):
        line = one_error_line(world.cli(*args))
        assert "part-99999-planted.parquet is not encrypted Parquet" in line, line
    assert listing(world.root) == before


def test_a_table_under_another_key_and_a_key_the_caller_lacks(world: World, tmp_path: Path) -> None:
    other = world.root / "under-other"
    other.mkdir()
    pq.write_table(
        pa.table({"name": ["x"], "age": [1], "job": ["Developer"]}),
        str(other / "part-0.parquet"),
        encryption_properties=arrow_encryption(world.kms.url, "other"),
    )
    foreign_kms = LocalKms(tmp_path / "foreign-kms", TEST_CREDENTIALS, create=True)
    foreign_kms.create_key("elsewhere")
    foreign = world.root / "foreign"
    foreign.mkdir()
    pq.write_table(
        pa.table({"name": ["x"], "age": [1], "job": ["Developer"]}),
        str(foreign / "part-0.parquet"),
        encryption_properties=arrow_encryption(foreign_kms.url, "elsewhere"),
    )
    before = listing(world.root)
    # Inputs must be under --input-key (default --key): another key of the same keystore is
    # another dataset, swapped in.
    line = one_error_line(
        world.cli(
            "sql", "SELECT count(*) FROM t", "-t", "t=under-other", "-o", "o1", "--key", TEST_KEY
        )
    )
    assert "under key 'other', not 'test-key'" in line, line
    line = one_error_line(world.cli("decrypt", "under-other", "o2.csv", "--key", TEST_KEY))
    assert "under key 'other', not 'test-key'" in line, line
    line = one_error_line(world.cli("decrypt", "foreign", "o3.csv"))
    assert "no primary key named 'elsewhere'" in line, line
    line = one_error_line(
        world.cli(
            "query",
            "simple",
            "-i",
            "foreign",
            "-o",
            "o4",
            "--key",
            TEST_KEY,
            "--input-key",
            "elsewhere",
        )
    )
    assert "no primary key named 'elsewhere'" in line, line
    assert listing(world.root) == before
    foreign_kms.close()


def test_a_tampered_parquet_file_is_one_line_and_nothing_is_written(world: World) -> None:
    table = world.root / "tampered"
    shutil.copytree(world.root / "people.parquet", table)
    for crc in table.glob(".*.crc"):
        crc.unlink()  # storage rewrites Hadoop's checksums as well
    part = sorted(table.glob("*.parquet"))[0]
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0x01
    part.write_bytes(bytes(data))
    before = listing(world.root)
    line = one_error_line(world.cli("decrypt", "tampered", "from-tampered.csv"))
    assert f"{part.name} does not authenticate" in line, line
    line = one_error_line(
        world.cli(
            "sql",
            "SELECT max(name) FROM t",
            "-t",
            "t=tampered",
            "-o",
            "from-tampered",
            "--key",
            TEST_KEY,
        )
    )
    assert f"{part.name} does not authenticate" in line, line
    assert listing(world.root) == before


def test_a_kms_that_is_down_is_one_line_before_spark_starts(world: World) -> None:
    from tests.kms.server.conftest import free_port

    down = {"CIPHERSPARK_KMS": f"https://127.0.0.1:{free_port()}"}
    before = listing(world.root)
    for args in (
        ("encrypt", "people.csv", "down.parquet", "--key", TEST_KEY, "--to", "parquet"),
        ("decrypt", "people.parquet", "down.csv"),
        ("sql", "SELECT 1", "-t", "p=people.parquet", "-o", "down", "--key", TEST_KEY),
    ):
        line = one_error_line(world.cli(*args, env=down))
        assert "cannot reach the KMS" in line, line
    assert listing(world.root) == before


def test_usage_errors(world: World) -> None:
    line = one_error_line(world.cli("decrypt", "staff.csv.cspk", "x.csv", "--to", "parquet"))
    assert "--to is for encrypted Parquet" in line, line
    line = one_error_line(world.cli("decrypt", "people.parquet", "x.csv", "--dataset-id", "0" * 32))
    assert "no dataset id" in line, line
    line = one_error_line(
        world.cli("encrypt", "people.csv", "people.parquet", "--key", TEST_KEY, "--to", "parquet")
    )
    assert "exists already" in line, line
