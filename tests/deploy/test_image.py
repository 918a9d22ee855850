"""The runtime image's launch path, played on this machine (no Docker daemon or cluster here).

A pod's JVM starts before the session does: the driver pod's entrypoint runs ``spark-submit
... main.py``, executors run ``java -cp SPARK_HOME/jars/*``, and the SGX launcher fixes the same
class path. So cipherspark's client jar must be in ``SPARK_HOME/jars``, or the plaintext-write
guard cannot load and every secure session refuses to start (a pod once ran without it: the
session named the guard in its conf while Spark had skipped it, and a CSV write went through).

These tests build a SPARK_HOME the way the image does (PySpark's folder, plus the Dockerfile's
own jar step, run as written) and run the driver pod's command from deploy/docker/entrypoint.sh,
with a local master instead of Kubernetes: ``cipherspark run`` of an unmodified application over
an encrypted CSV table, writing encrypted Parquet (the CSV source, the guard and Parquet
encryption, all in a JVM spark-submit started first).
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from cipherspark.files import encrypt_path
from cipherspark.jobs.datagen import generate_people
from cipherspark.kms import LocalKms, open_kms
from tests.conftest import TEST_CREDENTIALS, TEST_KEY

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
ENTRYPOINT = ROOT / "deploy" / "docker" / "entrypoint.sh"
MAIN_PY = ROOT / "deploy" / "docker" / "main.py"


def _jar_step() -> str:
    """The Dockerfile's RUN line that puts the client jar into SPARK_HOME/jars."""
    steps = [
        line.removeprefix("RUN ")
        for line in DOCKERFILE.read_text(encoding="utf-8").splitlines()
        if line.startswith("RUN ") and "${SPARK_HOME}/jars/" in line
    ]
    assert len(steps) == 1, "deploy/Dockerfile must copy the client jar into SPARK_HOME/jars"
    return steps[0]


def _image_env(spark_home: Path) -> dict[str, str]:
    java = shutil.which("java")
    assert java is not None
    return {
        **os.environ,
        # The image's `python` is the one cipherspark is installed in.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "SPARK_HOME": str(spark_home),
        "JAVA_HOME": str(Path(java).resolve().parents[1]),
        "PYSPARK_PYTHON": sys.executable,
    }


@pytest.fixture
def image_spark_home(tmp_path: Path) -> Path:
    """PySpark's folder as the image has it: its jars, plus what the Dockerfile's step adds."""
    import pyspark

    real = Path(pyspark.__file__).resolve().parent
    home = tmp_path / "spark-home"
    home.mkdir()
    for entry in real.iterdir():
        if entry.name != "jars":
            (home / entry.name).symlink_to(entry)
    (home / "jars").mkdir()
    for jar in (real / "jars").iterdir():
        (home / "jars" / jar.name).symlink_to(jar)
    subprocess.run(
        ["bash", "-euo", "pipefail", "-c", _jar_step()],
        env=_image_env(home),
        check=True,
        timeout=120,
    )
    return home


def test_the_image_puts_the_client_jar_on_the_pods_class_path(image_spark_home: Path) -> None:
    from cipherspark.spark.pme import PME_JAR_NAME, require_pme_jar

    copied = image_spark_home / "jars" / PME_JAR_NAME
    assert copied.is_file() and not copied.is_symlink()
    assert copied.read_bytes() == require_pme_jar().read_bytes()


def _people(path: Path) -> Counter[tuple[str, int, str]]:
    with open(path, newline="") as f:
        return Counter((r["name"], int(r["age"]), r["job"]) for r in csv.DictReader(f))


def _driver_pod(spark_home: Path, kms: LocalKms, cwd: Path, *job: str) -> str:
    """What Spark's Kubernetes scheduler runs in a driver pod: "driver", then spark-submit's
    arguments (the master would be k8s://...; the job comes from deploy submit); its stdout."""
    env = {
        **_image_env(spark_home),
        "SPARK_DRIVER_BIND_ADDRESS": "127.0.0.1",
        "CIPHERSPARK_KMS": kms.url,
    }
    result = subprocess.run(
        ["bash", str(ENTRYPOINT), "driver", "--master", "local[1]", str(MAIN_PY), *job],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture
def owner_data(tmp_path: Path) -> tuple[LocalKms, Path, Counter[tuple[str, int, str]]]:
    """A keystore, the encrypted people table, and its plaintext rows."""
    kms = open_kms((tmp_path / "kms").as_uri(), TEST_CREDENTIALS, create=True)
    assert isinstance(kms, LocalKms)
    kms.create_key(TEST_KEY)
    people = generate_people(tmp_path / "people.csv", 400, seed=5)
    encrypt_path(people.path, tmp_path / "people.csv.cspk", kms, TEST_KEY)
    rows = _people(people.path)
    people.path.unlink()
    return kms, tmp_path / "people.csv.cspk", rows


def _developers(rows: Counter[tuple[str, int, str]]) -> Counter[tuple[str, int, str]]:
    return Counter(r for r in rows.elements() if r[2] == "Developer" and 20 <= r[1] <= 40)


APP = """import sys
from pyspark.sql import SparkSession
spark = SparkSession.builder.getOrCreate()
people = spark.table("people").where("job = 'Developer' AND age BETWEEN 20 AND 40")
people.groupBy("age").count().write.parquet(sys.argv[1])
"""


@pytest.mark.spark
def test_a_driver_pod_runs_an_unmodified_application(
    image_spark_home: Path,
    tmp_path: Path,
    owner_data: tuple[LocalKms, Path, Counter[tuple[str, int, str]]],
) -> None:
    from cipherspark.spark.pme import ParquetEncryption
    from tests.spark.test_pme import arrow_file

    kms, table, rows = owner_data
    (tmp_path / "app.py").write_text(APP)
    _driver_pod(
        image_spark_home, kms, tmp_path,
        "run", "--key", TEST_KEY, "--table", f"people={table}", "--master", "local[1]",
        str(tmp_path / "app.py"), str(tmp_path / "by-age"),
    )  # fmt: skip
    parts = sorted((tmp_path / "by-age").glob("*.parquet"))
    assert parts and all(p.read_bytes()[-4:] == b"PARE" for p in parts)  # encrypted footers
    got: Counter[int] = Counter()
    for part in parts:
        for row in arrow_file(part, ParquetEncryption(kms.url, TEST_KEY)).read().to_pylist():
            got[row["age"]] += row["count"]
    assert got == Counter(r[1] for r in _developers(rows).elements())
