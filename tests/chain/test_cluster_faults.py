"""Faults on a real cluster: a killed executor, a killed job. Results stay exact or absent.

Also the distributed Simple Query at 5M rows on the 2-worker cluster.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cipherspark.files import decrypt_path, encrypt_path
from cipherspark.jobs.datagen import generate_people
from cipherspark.kms import LocalKms, open_kms
from cipherspark.spark.cluster import Cluster, start_cluster, stop_cluster
from tests.conftest import TEST_CREDENTIALS, TEST_KEY

pytestmark = pytest.mark.spark

ROWS = 5_000_000
EXECUTOR = b"CoarseGrainedExecutorBackend"


def _pids_of(needle: bytes) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _query(folder: Path, kms: LocalKms, cluster: Cluster | None, output: str,
           ) -> subprocess.Popen[str]:
    master = ["--master", cluster.master_url, "--spark-properties", str(cluster.properties)] \
        if cluster else ["--master", "local[2]"]
    return subprocess.Popen(
        [sys.executable, "-m", "cipherspark", "query", "simple", "-i", "people.cspk",
         "-o", output, "--key", TEST_KEY, "--kms", kms.url, *master],
        cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "SPARK_LOCAL_DIRS": str(folder / "driver-local")},
        start_new_session=True,  # so a test can kill the driver, its JVM and its workers
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, LocalKms, int]]:
    folder = tmp_path_factory.mktemp("faults")
    (folder / "driver-local").mkdir()
    kms = open_kms((folder / "kms").as_uri(), TEST_CREDENTIALS, create=True)
    assert isinstance(kms, LocalKms)
    kms.create_key(TEST_KEY)
    people = generate_people(folder / "people.csv", ROWS, seed=11)
    encrypt_path(folder / "people.csv", folder / "people.cspk", kms, TEST_KEY)
    (folder / "people.csv").unlink()
    yield folder, kms, people.developers_20_40


@pytest.fixture(scope="module")
def cluster(data: tuple[Path, LocalKms, int]) -> Iterator[Cluster]:
    folder, _, _ = data
    running = start_cluster(folder / "cluster", workers=2, cores=1, memory="2g")
    yield running
    stop_cluster(running.directory)
    assert not _pids_of(str(running.directory).encode())


def test_killed_executor_is_replaced_and_the_count_is_exact(
    data: tuple[Path, LocalKms, int], cluster: Cluster
) -> None:
    folder, kms, expected = data
    job = _query(folder, kms, cluster, "developers.cspk")
    deadline = time.monotonic() + 120
    executors: list[int] = []
    while len(executors) < 2 and time.monotonic() < deadline and job.poll() is None:
        executors = _pids_of(EXECUTOR)
        time.sleep(0.2)
    assert len(executors) >= 2, "both executors should be running the job"
    time.sleep(3)  # let tasks start on both
    os.kill(executors[0], signal.SIGKILL)
    out, err = job.communicate(timeout=300)
    assert job.returncode == 0, err[-2000:]
    assert f"names: {ROWS}" in out
    assert f"Developers aged 20-40: {expected}" in out
    decrypt_path(folder / "developers.cspk", folder / "developers.csv", kms)
    lines = (folder / "developers.csv").read_bytes().count(b"\n")
    assert lines == expected + 1


def test_killed_job_leaves_no_partial_output(data: tuple[Path, LocalKms, int]) -> None:
    folder, kms, expected = data
    output = folder / "killed.cspk"
    job = _query(folder, kms, None, output.name)
    deadline = time.monotonic() + 120
    staging: list[Path] = []
    while not staging and time.monotonic() < deadline and job.poll() is None:
        staging = list(folder.glob(".killed.cspk.cipherspark-*.staging"))
        time.sleep(0.05)
    assert staging, "the encrypted write should have started"
    time.sleep(0.5)
    os.killpg(job.pid, signal.SIGKILL)
    job.communicate(timeout=30)  # waits, and closes its pipes
    time.sleep(2)
    if output.exists():
        # The commit won the race: then the output is complete and verifies.
        decrypt_path(output, folder / "killed.csv", kms)
        assert (folder / "killed.csv").read_bytes().count(b"\n") == expected + 1
    else:
        # Never published: what is left is hidden staging, never committed (no manifest), and
        # nothing a reader would take for the output.
        leftovers = list(folder.glob(".killed.cspk.cipherspark-*"))
        assert leftovers and all(p.name.startswith(".") for p in leftovers)
        assert not [p for p in leftovers if (p / "_manifest.cspk").exists()]
