"""``cipherspark run APP.py``: an ordinary PySpark application, unchanged, on encrypted data.

One report (Parquet in, join, aggregates, a window function, Parquet out) runs through
``cipherspark run`` on encrypted Parquet and through plain PySpark on the plaintext: the two
outputs are equal, and cipherspark's is PME-encrypted with no input value in its bytes. Then what
the application sees (no secret in its conf, plan or argv), attested release with the simulated
TEE (released, and denied with its reason), and bad input as one line with nothing written.
"""

from __future__ import annotations

import json
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

from cipherspark.errors import InputError, JobError
from cipherspark.files import encrypt_path
from cipherspark.jobs.application import parse_tables, run_application
from cipherspark.kms import LocalKms
from cipherspark.spark.pme import find_pme_jar
from tests.conftest import TEST_CREDENTIALS, TEST_KEY
from tests.spark.test_pme import CipherSparkArrowKms, crypto_metadata

pytestmark = [
    pytest.mark.spark,
    pytest.mark.skipif(find_pme_jar() is None, reason="scripts/build-java has not been run"),
]

REPORT = '''"""An ordinary PySpark report: it knows nothing of encryption."""
import sys

from pyspark.sql import SparkSession, Window
from pyspark.sql import functions as F

people_path, jobs_path, out = sys.argv[1:4]
spark = SparkSession.builder.appName("report").getOrCreate()
people = spark.read.parquet(people_path)
jobs = spark.read.parquet(jobs_path)
joined = people.join(jobs, "job_id")
by_age = Window.partitionBy("job").orderBy(F.col("age").desc(), F.col("name"))
ranked = joined.withColumn("rank", F.row_number().over(by_age)).where("rank <= 3")
summary = joined.groupBy("job").agg(
    F.count("*").alias("people"), F.avg("age").alias("avg_age"), F.max("name").alias("last")
)
ranked.join(summary, "job").select(
    "job", "name", "age", "rank", "people", "avg_age", "last"
).write.mode("overwrite").parquet(out)
'''

INSPECT = '''"""Reports what an application sees of its session."""
import json
import sys

from pyspark.sql import SparkSession

spark = SparkSession.builder.appName("inspect").config("spark.sql.shuffle.partitions", "3") \\
    .getOrCreate()
counts = spark.read.parquet(sys.argv[1]).groupBy("job_id").count()
view = spark.sql("SELECT job, count(*) AS n FROM staff GROUP BY job ORDER BY job")
seen = {
    "argv": sys.argv,
    "conf": dict(spark.sparkContext.getConf().getAll()),
    "sql_conf": dict(spark.conf.getAll),
    "plans": counts._jdf.queryExecution().toString() + view._jdf.queryExecution().toString(),
    "groups": counts.count(),
    "staff": [list(r) for r in view.collect()],
}
with open(sys.argv[2], "w") as out:
    json.dump(seen, out)
'''

def canary() -> str:
    return "".join(random.choices(string.ascii_lowercase, k=14))


@dataclass(frozen=True)
class World:
    """The keystore, the plaintext and encrypted inputs, and the environment of the runs."""

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


def arrow_props(url: str, *, encrypt: bool) -> object:
    factory = pe.CryptoFactory(CipherSparkArrowKms)
    config = pe.KmsConnectionConfig(kms_instance_url=url)
    if encrypt:
        return factory.file_encryption_properties(
            config, pe.EncryptionConfiguration(footer_key=TEST_KEY, uniform_encryption=True)
        )
    return factory.file_decryption_properties(config, pe.DecryptionConfiguration())


def read_encrypted(folder: Path, url: str) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for part in sorted(folder.glob("*.parquet")):
        file = pq.ParquetFile(str(part), decryption_properties=arrow_props(url, encrypt=False))
        rows += file.read().to_pylist()
    return rows


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("run")
    kms = LocalKms(root / "kms", TEST_CREDENTIALS, create=True)
    kms.create_key(TEST_KEY)
    rng = random.Random(7)
    names = tuple("".join(rng.choices(string.ascii_lowercase, k=14)) for _ in range(400))
    people = pa.table(
        {
            "name": list(names),
            "age": [rng.randint(18, 60) for _ in names],
            "job_id": [rng.randint(1, 4) for _ in names],
        }
    )
    jobs = pa.table(
        {"job_id": [1, 2, 3, 4], "job": ["Developer", "Engineer", "Researcher", "Zookeeper"]}
    )
    for name, table in (("people", people), ("jobs", jobs)):
        (root / "plain" / name).mkdir(parents=True)
        pq.write_table(table, str(root / "plain" / name / "part-0.parquet"))
        # The encrypted copies, written by pyarrow's PME through cipherspark's key code.
        (root / "enc" / name).mkdir(parents=True)
        pq.write_table(
            table,
            str(root / "enc" / name / "part-0.parquet"),
            encryption_properties=arrow_props(kms.url, encrypt=True),
        )
    (root / "report.py").write_text(REPORT)
    (root / "inspect_app.py").write_text(INSPECT)
    csv = root / "staff.csv"
    csv.write_text(
        "name,job\n" + "".join(f"{n},{['Dev', 'Ops'][i % 2]}\n" for i, n in enumerate(names[:10]))
    )
    encrypt_path(csv, root / "staff.csv.cspk", kms, TEST_KEY)
    csv.unlink()
    env = {
        **os.environ,
        "CIPHERSPARK_KMS": kms.url,
        "CIPHERSPARK_APP_ID": TEST_CREDENTIALS.app_id,
        "CIPHERSPARK_API_KEY": TEST_CREDENTIALS.api_key,
        "CIPHERSPARK_MASTER": "local[2]",
    }
    env.pop("CIPHERSPARK_KEY", None)
    env.pop("CIPHERSPARK_TEE", None)
    return World(root, kms, names, env)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cipherspark: error: "), result.stderr
    return lines[0]


def test_an_unmodified_report_gives_plain_pysparks_answer_encrypted(world: World) -> None:
    root = world.root
    result = world.cli(
        "run", "--key", TEST_KEY, "report.py", "enc/people", "enc/jobs", "out/secure"
    )
    assert result.returncode == 0, result.stderr
    plain_env = {k: v for k, v in world.env.items() if not k.startswith("CIPHERSPARK_")}
    plain = subprocess.run(
        [sys.executable, "report.py", "plain/people", "plain/jobs", "out/plain"],
        cwd=root,
        env={**plain_env, "PYSPARK_PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert plain.returncode == 0, plain.stderr
    secure_parts = sorted((root / "out" / "secure").glob("*.parquet"))
    assert secure_parts
    for part in secure_parts:
        data = part.read_bytes()
        assert data[:4] == b"PARE" and data[-4:] == b"PARE"  # encrypted footer
        assert not any(name.encode() in data for name in world.names)
        assert b'"doubleWrapping":true' in crypto_metadata(part)
    plain_bytes = b"".join(p.read_bytes() for p in (root / "out" / "plain").glob("*.parquet"))
    assert any(name.encode() in plain_bytes for name in world.names)  # the search can fail
    ordering = lambda row: (row["job"], row["rank"])  # noqa: E731
    expected = pq.read_table(str(root / "out" / "plain")).to_pylist()
    got = read_encrypted(root / "out" / "secure", world.kms.url)
    assert len(got) == 12
    assert sorted(got, key=ordering) == sorted(expected, key=ordering)


def test_what_the_application_sees(world: World) -> None:
    result = world.cli(
        "run",
        "--key",
        TEST_KEY,
        "--table",
        "staff=staff.csv.cspk",
        "inspect_app.py",
        "enc/people",
        "seen.json",
        "--key",
        "not-ours",
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads((world.root / "seen.json").read_text())
    # Everything after APP.py is the application's, our option names included.
    assert seen["argv"][1:] == ["enc/people", "seen.json", "--key", "not-ours"]
    assert seen["groups"] == 4
    assert seen["staff"] == [["Dev", 5], ["Ops", 5]]
    conf = seen["conf"]
    assert conf["spark.authenticate"] == "true"
    assert conf["spark.network.crypto.cipher"] == "AES/GCM/NoPadding"
    assert conf["spark.io.encryption.enabled"] == "true"
    assert conf["spark.python.unix.domain.socket.enabled"] == "true"
    assert seen["sql_conf"]["parquet.encryption.uniform.key"] == TEST_KEY
    assert seen["sql_conf"]["spark.sql.shuffle.partitions"] == "3"
    text = json.dumps(seen)
    assert TEST_CREDENTIALS.api_key not in text
    assert "spark.authenticate.secret" not in conf
    log = "".join(p.read_text() for p in (world.root / ".cipherspark" / "logs").glob("*.log"))
    assert TEST_CREDENTIALS.api_key not in log


# Attested release for 'run' (reads and writes, a measurement the policy does not list) is
# tests/spark/test_pme_server.py::test_attested_only_key_with_the_simulated_tee, through the
# KMS server: the same executor code (_pme_keys with CIPHERSPARK_TEE set), and three fewer
# Spark starts here.


def test_a_tampered_parquet_input_is_one_line_and_nothing_is_written(world: World) -> None:
    folder = world.root / "tampered"
    shutil.copytree(world.root / "enc" / "people", folder)
    part = folder / "part-0.parquet"
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0x01
    part.write_bytes(bytes(data))
    result = world.cli(
        "run", "--key", TEST_KEY, "report.py", "tampered", "enc/jobs", "out/from-tampered"
    )
    line = one_error_line(result)
    assert "part-0.parquet does not authenticate" in line, line
    assert not (world.root / "out" / "from-tampered").exists()


def test_a_parquet_input_under_a_key_the_caller_lacks(world: World, tmp_path: Path) -> None:
    # Written under a key of another keystore: this caller's KMS has no such key.
    other = LocalKms(tmp_path / "other", TEST_CREDENTIALS, create=True)
    other.create_key("elsewhere")
    folder = world.root / "foreign"
    folder.mkdir()
    factory = pe.CryptoFactory(CipherSparkArrowKms)
    config = pe.KmsConnectionConfig(kms_instance_url=other.url)
    props = factory.file_encryption_properties(
        config, pe.EncryptionConfiguration(footer_key="elsewhere", uniform_encryption=True)
    )
    pq.write_table(
        pa.table({"name": ["x"], "age": [1], "job_id": [1]}),
        str(folder / "part-0.parquet"),
        encryption_properties=props,
    )
    result = world.cli(
        "run", "--key", TEST_KEY, "report.py", "foreign", "enc/jobs", "out/from-foreign"
    )
    line = one_error_line(result)
    assert "no primary key named 'elsewhere'" in line, line
    assert not (world.root / "out" / "from-foreign").exists()


def test_a_kms_that_is_down_is_one_line_before_spark_starts(world: World) -> None:
    from tests.kms.server.conftest import free_port

    result = world.cli(
        "run",
        "--key",
        TEST_KEY,
        "report.py",
        "enc/people",
        "enc/jobs",
        "out/no-kms",
        env={"CIPHERSPARK_KMS": f"https://127.0.0.1:{free_port()}"},
    )
    line = one_error_line(result)
    assert "cannot reach the KMS" in line, line
    assert not (world.root / "out" / "no-kms").exists()
    assert not (world.root / ".cipherspark" / "logs" / "none").exists()


PLAINTEXT = """import sys
from pyspark.sql import SparkSession
spark = SparkSession.builder.getOrCreate()
people = spark.read.parquet(sys.argv[1])
people.write.csv(sys.argv[2])
spark.sql(f"INSERT OVERWRITE DIRECTORY '{sys.argv[2]}-sql' USING json SELECT 1 AS a")
people.write.parquet(sys.argv[2] + "-parquet")
"""


def test_plaintext_writes_of_an_application_are_refused(world: World) -> None:
    (world.root / "plaintext_app.py").write_text(PLAINTEXT)
    line = one_error_line(
        world.cli("run", "--key", TEST_KEY, "plaintext_app.py", "enc/people", "out/plain-csv")
    )
    assert "refuses to write files of format CSV in plaintext" in line, line
    assert not list((world.root / "out").glob("plain-csv*/*.csv"))


def test_a_plaintext_parquet_input_is_refused(world: World) -> None:
    """A plaintext file among an application's inputs may be anyone's rows: the reading JVM
    refuses it (the application's own spark.read.parquet), one line, nothing written."""
    args = ("report.py", "plain/people", "enc/jobs")
    line = one_error_line(world.cli("run", "--key", TEST_KEY, *args, "out/from-plain"))
    assert "part-0.parquet is not encrypted" in line, line
    assert not (world.root / "out" / "from-plain").exists()


def test_the_named_opt_outs_read_and_write_plaintext(world: World) -> None:
    # One run for both opt-outs (each one's refusal is the tests above): a plaintext Parquet
    # input read, plaintext CSV and JSON written, and the Parquet output still encrypted.
    (world.root / "plaintext_app.py").write_text(PLAINTEXT)
    result = world.cli(
        "run",
        "--key",
        TEST_KEY,
        "--unsafe-plaintext-output",
        "--unsafe-plaintext-parquet-input",
        "plaintext_app.py",
        "plain/people",
        "out/opted-in",
    )
    assert result.returncode == 0, result.stderr
    out = world.root / "out"
    text = "".join(p.read_text() for p in (out / "opted-in").glob("*.csv"))
    assert sum(name in text for name in world.names) == len(world.names)
    assert list((out / "opted-in-sql").glob("*.json"))
    parts = sorted((out / "opted-in-parquet").glob("*.parquet"))
    assert parts and all(p.read_bytes()[-4:] == b"PARE" for p in parts)


def test_usage_errors(world: World) -> None:
    assert "--unsafe-plaintext-parquet" in one_error_line(
        world.cli("run", "report.py", "a", "b", "c")
    )
    assert "no primary key named 'absent'" in one_error_line(
        world.cli("run", "--key", "absent", "report.py", "a", "b", "c")
    )
    assert "does not exist" in one_error_line(world.cli("run", "--key", TEST_KEY, "nope.py"))
    assert "NAME=PATH" in one_error_line(
        world.cli("run", "--key", TEST_KEY, "--table", "bad", "report.py")
    )


def test_build_java_without_a_compiler_is_one_line(tmp_path: Path) -> None:
    # A machine with every tool of this one but javac (a Java runtime only, say).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in Path("/usr/bin").iterdir():
        if tool.name != "javac":
            (bin_dir / tool.name).symlink_to(tool)
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    shutil.copy(Path(__file__).parents[1] / "scripts" / "build-java", checkout / "scripts")
    shutil.copytree(Path(__file__).parents[1] / "java", checkout / "java")
    result = subprocess.run(
        [str(checkout / "scripts" / "build-java")],
        env={"PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs a Java compiler (javac" in lines[0], result.stderr
    assert not (checkout / "build").exists()


# -- run_application in this process (the shared session) ------------------------------------------


def test_run_application_exit_status_errors_and_argv(spark: SparkSession, tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(
        "import sys\n"
        "from pyspark.sql import SparkSession\n"
        "spark = SparkSession.builder.getOrCreate()\n"
        "assert spark.conf.get('spark.io.encryption.enabled') == 'true'\n"
        "with open(sys.argv[1], 'w') as out:\n"
        "    out.write(repr(sys.argv[1:]) + __name__)\n"
        "if len(sys.argv) > 2:\n"
        "    sys.exit(int(sys.argv[2]))\n"
    )
    seen = tmp_path / "seen"
    assert run_application(spark, app, [str(seen)]) == 0
    assert seen.read_text() == repr([str(seen)]) + "__main__"
    assert run_application(spark, app, [str(seen), "3"]) == 3
    assert sys.argv[0] != str(app)  # restored

    broken = tmp_path / "broken.py"
    broken.write_text("values = {'canaryvalue': 1}\n\nraise KeyError('canaryvalue-secret')\n")
    with pytest.raises(JobError, match=r"KeyError at line 3 of broken.py") as caught:
        run_application(spark, broken)
    assert "canaryvalue" not in str(caught.value)
    with pytest.raises(InputError, match="does not exist"):
        run_application(spark, tmp_path / "absent.py")


def test_parse_tables(tmp_path: Path) -> None:
    from cipherspark.errors import UsageError

    (tmp_path / "t.cspk").write_bytes(b"")
    assert parse_tables([f"t={tmp_path / 't.cspk'}"]) == {"t": tmp_path / "t.cspk"}
    for bad in ("t", "=x", "1t=x", "t-1=x"):
        with pytest.raises(UsageError):
            parse_tables([bad])
    with pytest.raises(UsageError, match="twice"):
        parse_tables([f"t={tmp_path}", f"t={tmp_path}"])
    with pytest.raises(InputError, match="does not exist"):
        parse_tables(["t=/nonexistent"])
