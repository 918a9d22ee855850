"""The runtime image's launch path, played on this machine (no Docker daemon or cluster here).

A pod's JVM starts before the session does: the driver pod's entrypoint runs ``spark-submit
... main.py``, executors run ``java -cp SPARK_HOME/jars/*``, and the SGX launcher fixes the same
class path. So cipherspark's client jar must be in ``SPARK_HOME/jars``, or the plaintext-write
guard cannot load and every secure session refuses to start (a pod once ran without it: the
session named the guard in its conf while Spark had skipped it, and a CSV write went through).

These tests build a SPARK_HOME the way the image does (PySpark's folder, plus the Dockerfile's
own jar step, run as written) and run the driver pod's command from deploy/docker/entrypoint.sh,
with a local master instead of Kubernetes.
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

from cipherspark.files import decrypt_path, encrypt_path
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


@pytest.mark.spark
def test_a_driver_pods_command_runs_the_simple_query(
    image_spark_home: Path, tmp_path: Path
) -> None:
    kms = open_kms((tmp_path / "kms").as_uri(), TEST_CREDENTIALS, create=True)
    assert isinstance(kms, LocalKms)
    kms.create_key(TEST_KEY)
    people = generate_people(tmp_path / "people.csv", 400, seed=5)
    encrypt_path(people.path, tmp_path / "people.csv.cspk", kms, TEST_KEY)
    output = tmp_path / "developers"
    env = {
        **_image_env(image_spark_home),
        "SPARK_DRIVER_BIND_ADDRESS": "127.0.0.1",
        "CIPHERSPARK_KMS": kms.url,
    }
    # What Spark's Kubernetes scheduler runs in a driver pod: "driver", then spark-submit's
    # arguments (the master would be k8s://...; the job's options come from deploy submit).
    result = subprocess.run(
        [
            "bash",
            str(ENTRYPOINT),
            "driver",
            "--master",
            "local[1]",
            str(MAIN_PY),
            "query",
            "simple",
            "--input",
            str(tmp_path / "people.csv.cspk"),
            "--output",
            str(output),
            "--key",
            TEST_KEY,
            "--master",
            "local[1]",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Developers aged 20-40: {people.developers_20_40}" in result.stdout
    decrypt_path(output, tmp_path / "developers.csv", kms)
    want = Counter(
        row
        for row in _people(people.path).elements()
        if row[2] == "Developer" and 20 <= row[1] <= 40
    )
    assert _people(tmp_path / "developers.csv") == want
