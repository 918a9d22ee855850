"""The wheel ships the JVM classes: scripts/build-wheel builds java/ and puts the jar in it.

Every secure session loads the jar (the Parquet KMS client, the crypto factory, the
plaintext-write guard); a wheel without it, as the runtime image installs, could not start one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
JAR = "cipherspark/spark/cipherspark-pme.jar"
FIND_JAR = "from cipherspark.spark.pme import find_pme_jar; print(find_pme_jar())"


def test_the_runtime_image_installs_the_wheel_with_the_jar() -> None:
    """deploy/Dockerfile's build stage: the wheel the image installs comes from build-wheel."""
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    build = text.split("FROM ${PYTHON_IMAGE} AS build\n", 1)[1].split("\nFROM ", 1)[0]
    assert "openjdk-17-jdk-headless" in build
    assert "COPY java ./java" in build
    assert "scripts/build-wheel /wheels" in build
    assert "pip wheel" not in build  # a plain wheel build would leave the jar out


@pytest.mark.servers
@pytest.mark.skipif(shutil.which("javac") is None, reason="no javac (scripts/ensure-java)")
def test_the_wheel_ships_the_jar_and_the_installed_package_finds_it(tmp_path: Path) -> None:
    # A copy of the checkout: the build puts the jar into src/ for a moment, which must not be
    # seen by the other tests running from this one.
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, tree / name)
    for folder in ("src", "java", "scripts"):
        shutil.copytree(
            ROOT / folder, tree / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
        )
    result = subprocess.run(
        ["scripts/build-wheel", str(tmp_path / "dist")],
        cwd=tree,
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("cipherspark-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        shipped = zf.read(JAR)
        zf.extractall(tmp_path / "installed")
    assert shipped == (tree / "build" / "java" / "cipherspark-pme.jar").read_bytes()
    with zipfile.ZipFile(tmp_path / "installed" / JAR) as jar:
        classes = set(jar.namelist())
    assert {
        "org/cipherspark/pme/CipherSparkKmsClient.class",
        "org/cipherspark/pme/CipherSparkCryptoFactory.class",
        "org/cipherspark/spark/PlaintextWriteGuard.class",
        "org/cipherspark/spark/ExactJson.class",
    } <= classes
    # Nothing left in the source tree that an editable checkout would find instead.
    assert not (tree / "src" / JAR).exists()
    # The package as installed from the wheel finds its own jar.
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "from cipherspark.spark.pme import find_pme_jar; print(find_pme_jar())",
        ],
        env={"PYTHONPATH": str(tmp_path / "installed"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert probe.stdout.strip() == str(tmp_path / "installed" / JAR)
