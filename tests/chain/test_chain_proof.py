"""The chain proof: no plaintext and no key anywhere outside the Spark processes and the owner.

A real KMS server (TLS) and a real 2-worker standalone cluster run the whole flow — encrypt,
the distributed Simple Query, SQL with shuffles (group by job, group by name), decrypt, and an
ordinary PySpark application through ``cipherspark run`` on encrypted Parquet (Spark's own
reader and writer, Parquet Modular Encryption: the KMS client and its key helper on every
executor) — while tcpdump captures every loopback packet. Then planted canary names, every data
key (raw, hex, base64; for Parquet also each file's data key and each JVM's key-encryption key)
and the API key are searched for in the capture, the cluster's logs, work and local (shuffle /
spill) folders, the driver's local folder and output, the CLI's Spark logs and the encrypted
results (containers and Parquet files). A query that fails on a cast over the canaries
(Spark's message quotes the value) is part of the run: its error line and every log must not
quote them either.

The control run does the same shuffle query with Spark's security settings off (local mode)
and must find the canaries in the capture: proof that the search can fail.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cipherspark.crypto import read_header
from cipherspark.jobs.datagen import generate_people
from cipherspark.kms import Credentials
from cipherspark.kms.remote import RemoteKms
from cipherspark.spark.cluster import start_cluster, stop_cluster
from cipherspark.spark.pme import ENCRYPTED_MAGIC, check_encrypted_parquet
from tests.kms.server.conftest import free_port, start_server, stop_server

pytestmark = [
    pytest.mark.spark,
    pytest.mark.skipif(
        shutil.which("tcpdump") is None or os.geteuid() != 0,
        reason="needs tcpdump and root to capture loopback traffic ('make test' installs tcpdump)",
    ),
]

KEY = "chain"
CANARIES = [
    "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(14)) for _ in range(12)
]


# An ordinary PySpark application: it knows nothing of encryption. Parquet in, an aggregate
# (a shuffle by job) joined back to every row, a window function (another shuffle), Parquet out.
# Every row is kept, so the canaries go through it.
LAKE_APP = '''"""A report over a Parquet lake: every person with their job's figures and rank."""
import sys

from pyspark.sql import SparkSession, Window
from pyspark.sql import functions as F

people_path, out = sys.argv[1:3]
spark = SparkSession.builder.appName("lake-report").getOrCreate()
people = spark.read.parquet(people_path)
by_job = people.groupBy("job").agg(F.count("*").alias("n"), F.avg("age").alias("avg_age"))
oldest_first = Window.partitionBy("job").orderBy(F.col("age").desc(), F.col("name"))
report = people.join(by_job, "job").withColumn("rank", F.row_number().over(oldest_first))
report = report.select("job", "name", "age", "rank", "n", "avg_age")
report.repartition(4).write.parquet(out)
'''


def _lake_expected(people_csv: Path) -> list[tuple[str, str, int, int, int, float]]:
    """What LAKE_APP computes, by plain Python on the plaintext (sorted rows)."""
    with people_csv.open(newline="") as f:
        rows = [(r["job"], r["name"], int(r["age"])) for r in csv.DictReader(f)]
    expected = []
    for job in sorted({job for job, _, _ in rows}):
        group = sorted((r for r in rows if r[0] == job), key=lambda r: (-r[2], r[1]))
        mean = sum(age for _, _, age in group) / len(group)
        expected += [
            (job, name, age, rank, len(group), mean) for rank, (_, name, age) in enumerate(group, 1)
        ]
    return sorted(expected)


class _OwnerArrowKms(pe.KmsClient):
    """pyarrow's Parquet KMS client as the owner: unwraps the KEKs the cluster wrapped
    (Vault Transit form) with the owner's credential."""

    def __init__(self, kms: RemoteKms) -> None:
        super().__init__()
        self.kms = kms

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        raise AssertionError("the owner only reads here")

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        return self.kms.transit_decrypt(master_key_identifier, wrapped_key)


def _lake_decrypted(
    env: dict[str, str], files: list[Path]
) -> list[tuple[str, str, int, int, int, float]]:
    """The owner's reading of the application's encrypted Parquet output: pyarrow's own PME
    reader (an independent implementation), with the owner's KMS credential. ('cipherspark
    decrypt' of Parquet is a local Spark job, proved in tests/test_cli_parquet.py; here it would
    only add a JVM start.)"""
    with RemoteKms(
        env["CIPHERSPARK_KMS"],
        Credentials(env["CIPHERSPARK_APP_ID"], env["CIPHERSPARK_API_KEY"]),
        ca_file=env["CIPHERSPARK_KMS_CA"],
    ) as kms:
        factory = pe.CryptoFactory(lambda _config: _OwnerArrowKms(kms))
        props = factory.file_decryption_properties(
            pe.KmsConnectionConfig(), pe.DecryptionConfiguration()
        )
        rows = []
        for path in files:
            rows += pq.ParquetFile(str(path), decryption_properties=props).read().to_pylist()
    return sorted(
        (r["job"], r["name"], r["age"], r["rank"], r["n"], r["avg_age"]) for r in rows
    )


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env, cwd=cwd)
    assert result.returncode == 0, f"{args[:4]} failed:\n{result.stderr[-3000:]}"
    return result


def _cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-m", "cipherspark", *args], env, cwd)


def _cli_fails(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "cipherspark", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=cwd,
    )
    assert result.returncode == 1, f"{args[:4]} did not fail as a job:\n{result.stderr[-3000:]}"
    return result


@dataclass
class Capture:
    """A running tcpdump on the loopback interface."""

    path: Path
    proc: subprocess.Popen[bytes]

    @classmethod
    def start(cls, path: Path) -> Capture:
        proc = subprocess.Popen(
            ["tcpdump", "-i", "lo", "-n", "-U", "-s", "0", "-w", str(path), "tcp"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert proc.stderr is not None
        line = proc.stderr.readline()  # "listening on lo, ..." once the capture runs
        assert b"listening" in line, line
        return cls(path, proc)

    def stop(self) -> bytes:
        time.sleep(0.5)
        self.proc.send_signal(signal.SIGINT)
        self.proc.communicate(timeout=20)  # waits, and closes its stderr pipe
        return self.path.read_bytes()


def _forms(key: bytes) -> list[bytes]:
    return [
        key,
        key.hex().encode(),
        key.hex().upper().encode(),
        base64.b64encode(key),
        base64.urlsafe_b64encode(key).rstrip(b"="),
    ]


def _files_under(*folders: Path) -> Iterator[Path]:
    for folder in folders:
        if folder.exists():
            yield from (p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def _found(needles: list[bytes], haystacks: Iterator[Path] | list[Path]) -> list[str]:
    hits = []
    for path in haystacks:
        data = path.read_bytes()
        hits += [f"{path}: {n[:20]!r}" for n in needles if n in data]
    return hits


def _people(path: Path) -> None:
    generate_people(path, 20_000, seed=5)
    with open(path, "a") as f:
        for i, name in enumerate(CANARIES):
            job = ("Developer", "Engineer", "Researcher")[i % 3]
            f.write(f"{name},{25 + i},{job}\n")


@pytest.fixture(scope="module")
def kms_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A KMS server on 127.0.0.1 with TLS, an app, and the primary key ``chain``."""
    base = tmp_path_factory.mktemp("chain-kms")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIPHERSPARK_")}
    init = json.loads(
        _cli("kms", "init", "--data", str(base / "data"), "--json", env=env, cwd=base).stdout
    )
    server = start_server(base / "data", free_port(), base)
    try:
        app = json.loads(
            _cli(
                "kms",
                "app",
                "create",
                "chain-app",
                "--kms",
                server.url,
                "--kms-ca",
                str(server.ca),
                "--json",
                env={**env, "CIPHERSPARK_KMS_ADMIN_TOKEN": init["admin_token"]},
                cwd=base,
            ).stdout
        )
        with RemoteKms(
            server.url, Credentials(app["app_id"], app["api_key"]), ca_file=server.ca
        ) as kms:
            kms.create_key(KEY)
        # The owner encrypts and decrypts with its owner credential; the cluster gets a workload
        # credential (the key has no release policy: the trusted-cluster mode).
        workload = json.loads(
            _cli(
                "kms",
                "credential",
                "create",
                "--app",
                app["app_id"],
                "--role",
                "workload",
                "--label",
                "chain cluster",
                "--json",
                "--kms",
                server.url,
                "--kms-ca",
                str(server.ca),
                env={**env, "CIPHERSPARK_KMS_ADMIN_TOKEN": init["admin_token"]},
                cwd=base,
            ).stdout
        )
        yield {
            **env,
            "CIPHERSPARK_KMS": server.url,
            "CIPHERSPARK_KMS_CA": str(server.ca),
            "CIPHERSPARK_APP_ID": app["app_id"],
            "CIPHERSPARK_API_KEY": app["api_key"],
            "CIPHERSPARK_KEY": KEY,
            "WORKLOAD_API_KEY": workload["api_key"],
        }
    finally:
        stop_server(server)


def _data_keys(env: dict[str, str], files: list[Path]) -> list[bytes]:
    keys = set()
    with RemoteKms(
        env["CIPHERSPARK_KMS"],
        Credentials(env["CIPHERSPARK_APP_ID"], env["CIPHERSPARK_API_KEY"]),
        ca_file=env["CIPHERSPARK_KMS_CA"],
    ) as kms:
        for path in files:
            with open(path, "rb") as f:
                header, _ = read_header(f)
            keys.add(kms.unwrap_data_key(header.key_id, header.wrapped_key))
    return sorted(keys)


def _parquet_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.parquet") if p.is_file())


def _crypto_metadata(path: Path) -> bytes:
    """The plaintext FileCryptoMetaData just before an encrypted footer (its key material)."""
    data = path.read_bytes()
    length = int.from_bytes(data[-8:-4], "little")
    return data[len(data) - 8 - length : len(data) - 8]


_KEY_MATERIAL = re.compile(rb'\{[^{}]*"keyMaterialType":"PKMT1"[^{}]*\}')


def _parquet_keys(env: dict[str, str], files: list[Path]) -> list[bytes]:
    """Every key-encryption key and data key of encrypted Parquet ``files``, recovered as the
    owner: the footer's key material (double wrapping) holds the KEK wrapped by the KMS
    (Transit) and the footer's data key wrapped by the KEK (AES-GCM, the KEK's id as AAD)."""
    keys = set()
    with RemoteKms(
        env["CIPHERSPARK_KMS"],
        Credentials(env["CIPHERSPARK_APP_ID"], env["CIPHERSPARK_API_KEY"]),
        ca_file=env["CIPHERSPARK_KMS_CA"],
    ) as kms:
        for path in files:
            found = _KEY_MATERIAL.findall(_crypto_metadata(path))
            assert found, f"{path} has no key material in its footer"
            for text in found:
                material = json.loads(text)
                assert material["doubleWrapping"] is True
                kek = kms.transit_decrypt(material["masterKeyID"], material["wrappedKEK"])
                wrapped_dek = base64.b64decode(material["wrappedDEK"])
                dek = AESGCM(kek).decrypt(
                    wrapped_dek[:12],
                    wrapped_dek[12:],
                    base64.b64decode(material["keyEncryptionKeyID"]),
                )
                keys.update([kek, dek])
    return sorted(keys)


# Ten CLI processes, each starting Spark, on a 2-core machine: about 4 minutes idle before the
# Parquet step (which adds three), 6 to 9 minutes measured at load 8 to 19; more than the
# suite's 10-minute default when the machine is busy.
@pytest.mark.timeout(1500)
def test_no_plaintext_or_key_anywhere_on_a_secure_cluster(
    kms_server: dict[str, str], tmp_path: Path
) -> None:
    env = {**kms_server, "SPARK_LOCAL_DIRS": str(tmp_path / "driver-local")}
    # The jobs (driver and executors) run on the cluster's workload credential; encrypt and
    # decrypt on the owner's.
    workload = {k: v for k, v in kms_server.items() if k != "WORKLOAD_API_KEY"}
    workload["CIPHERSPARK_API_KEY"] = kms_server["WORKLOAD_API_KEY"]
    job_env = {**workload, "SPARK_LOCAL_DIRS": str(tmp_path / "driver-local")}
    (tmp_path / "driver-local").mkdir()
    _people(tmp_path / "people.csv")
    cluster = start_cluster(
        tmp_path / "cluster", workers=2, cores=1, memory="1g", extra_env=workload
    )
    spark_args = ["--master", cluster.master_url, "--spark-properties", str(cluster.properties)]
    capture = Capture.start(tmp_path / "secure.pcap")
    logs: list[str] = []
    try:
        _cli("encrypt", "people.csv", "people.cspk", env=env, cwd=tmp_path)
        result = _cli(
            "query",
            "simple",
            "-i",
            "people.cspk",
            "-o",
            "developers.cspk",
            *spark_args,
            env=job_env,
            cwd=tmp_path,
        )
        logs += [result.stdout, result.stderr]
        # A shuffle keyed by the canaries themselves (one group per name).
        result = _cli(
            "sql",
            "SELECT name, count(*) AS n FROM people GROUP BY name",
            "--table",
            "people=people.cspk",
            "-o",
            "by_name.cspk",
            *spark_args,
            env=job_env,
            cwd=tmp_path,
        )
        logs += [result.stdout, result.stderr]
        _cli("decrypt", "by_name.cspk", "by_name.csv", env=env, cwd=tmp_path)
        # A query that fails over the canaries: Spark's message quotes the value it could not
        # cast; neither the CLI's output nor any log (driver, executors, workers) may.
        failed = _cli_fails(
            "sql",
            "SELECT CAST(name AS INT) AS n FROM people",
            "--table",
            "people=people.cspk",
            "-o",
            "cast.cspk",
            *spark_args,
            env=job_env,
            cwd=tmp_path,
        )
        logs += [failed.stdout, failed.stderr]
        assert "CAST_INVALID_INPUT" in failed.stderr, failed.stderr[-2000:]
        # An ordinary PySpark application on an encrypted Parquet lake, on the cluster: the
        # owner converts the CSV (executors wrap with the workload credential), the job runs
        # the unmodified script (executors unwrap and wrap through the KMS client and its key
        # helper), the owner decrypts the result.
        (tmp_path / "lake.py").write_text(LAKE_APP)
        _cli(
            "encrypt",
            "people.csv",
            "people.parquet",
            "--to",
            "parquet",
            *spark_args,
            env=env,
            cwd=tmp_path,
        )
        result = _cli(
            "run", *spark_args, "lake.py", "people.parquet", "lake-out", env=job_env, cwd=tmp_path
        )
        logs += [result.stdout, result.stderr]
    finally:
        packets = capture.stop()
        stop_cluster(cluster.directory)
    (tmp_path / "driver.log").write_text("\n".join(logs))

    # The canaries went all the way through: they are in the decrypted shuffle result.
    decrypted = (tmp_path / "by_name.csv").read_text()
    assert all(name in decrypted for name in CANARIES)
    assert len(packets) > 100_000, "the capture saw the cluster's traffic"

    # The application's output is PME-encrypted (encrypted footers, every file), and decrypted
    # it is what plain Python computes from the plaintext, canaries included.
    parquet = _parquet_files(tmp_path / "people.parquet") + _parquet_files(tmp_path / "lake-out")
    for path in parquet:
        data = path.read_bytes()
        assert data[:4] == data[-4:] == ENCRYPTED_MAGIC, path
    assert check_encrypted_parquet(tmp_path / "lake-out") == KEY
    lake = _lake_decrypted(kms_server, _parquet_files(tmp_path / "lake-out"))
    assert lake == _lake_expected(tmp_path / "people.csv")
    assert {name for _, name, *_ in lake} >= set(CANARIES)

    encrypted = [p for p in _files_under(tmp_path) if p.name.endswith(".cspk")]
    data_keys = _data_keys(kms_server, encrypted)
    assert len(data_keys) >= 3  # input, and one per written dataset
    # Parquet's keys: a KEK per master key and executor JVM, a data key per file.
    parquet_keys = _parquet_keys(kms_server, parquet)
    assert len(parquet_keys) >= 2 + len(parquet)
    needles = (
        [n.encode() for n in CANARIES]
        + [f for k in data_keys + parquet_keys for f in _forms(k)]
        + [kms_server["CIPHERSPARK_API_KEY"].encode(), kms_server["WORKLOAD_API_KEY"].encode()]
    )
    assert not [n for n in needles if n in packets], "plaintext or a key crossed loopback"
    # The CLI's Spark logs (.cipherspark/logs: the driver JVM's console) are searched too.
    places = [
        tmp_path / "cluster",
        tmp_path / "driver-local",
        tmp_path / ".cipherspark",
        tmp_path / "driver.log",
    ]
    assert list(_files_under(tmp_path / ".cipherspark" / "logs"))
    assert not _found(needles, [*_files_under(*places[:3]), places[3], *encrypted, *parquet])
    # Shuffle and spill really happened on disk (so the search above covered them).
    shuffle = [p for p in _files_under(tmp_path / "cluster" / "local") if ".data" in p.name]
    work = list(_files_under(tmp_path / "cluster" / "work"))
    assert shuffle or work


def test_control_run_without_security_leaks_and_the_search_finds_it(
    kms_server: dict[str, str], tmp_path: Path
) -> None:
    env = {**kms_server, "SPARK_LOCAL_DIRS": str(tmp_path / "driver-local")}
    (tmp_path / "driver-local").mkdir()
    _people(tmp_path / "people.csv")
    _cli("encrypt", "people.csv", "people.cspk", env=env, cwd=tmp_path)
    # Local mode, not a second cluster (three more JVMs): with the security settings off, the
    # JVM <-> Python worker link alone carries the decrypted rows over loopback TCP, which is
    # all this run has to show the search finding.
    script = (
        "import sys\n"
        "from cipherspark.kms import Credentials, open_kms\n"
        "from cipherspark.jobs.sql import run_sql\n"
        "from cipherspark.spark import secure_session\n"
        "import os\n"
        "creds = Credentials(os.environ['CIPHERSPARK_APP_ID'], os.environ['CIPHERSPARK_API_KEY'])\n"
        "kms = open_kms(os.environ['CIPHERSPARK_KMS'], creds,\n"
        "               ca_file=os.environ.get('CIPHERSPARK_KMS_CA'))\n"
        "spark = secure_session(master=sys.argv[1], credentials=creds,\n"
        "                       unsafe_without_security=True)\n"
        "run_sql(spark, 'SELECT name, count(*) AS n FROM people GROUP BY name',\n"
        "        {'people': 'people.cspk'}, 'by_name.cspk', kms_url=kms.url, key='chain')\n"
    )
    capture = Capture.start(tmp_path / "control.pcap")
    try:
        _run([sys.executable, "-c", script, "local[2]"], env, tmp_path)
    finally:
        packets = capture.stop()
    leaked = [name for name in CANARIES if name.encode() in packets]
    assert leaked, "with Spark's security off the canaries must be visible on loopback"
