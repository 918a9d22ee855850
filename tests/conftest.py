"""Shared fixtures: test credentials, fresh keystores, and one local Spark session per run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cipherspark.kms import Credentials, LocalKms, open_kms

# Executors read the KMS credentials from the environment; set them before any JVM starts.
TEST_CREDENTIALS = Credentials("test-app", "test-api-key-not-secret")
os.environ["CIPHERSPARK_APP_ID"] = TEST_CREDENTIALS.app_id
os.environ["CIPHERSPARK_API_KEY"] = TEST_CREDENTIALS.api_key

TEST_KEY = "test-key"

# Every Spark driver JVM this run starts (in-process sessions and the CLI's subprocesses inherit
# the variable; spark-submit adds it to the driver's command line) stops at the C1 compiler and
# uses the serial collector: the suite's JVMs live seconds to minutes, so C2 compilation and
# parallel GC threads cost CPU that never pays back, and on CI's 2 cores the suite is CPU-bound.
# Measured here: tests/spark/test_filters.py and test_pruning.py use 125 s of CPU instead of
# 164 s (same wall time alone); test_smoke.py and jobs/test_jobs.py 49 s instead of 67 s.
# Results cannot change (the JIT tier is not semantics); a caller's own setting wins. The
# benchmarks, run by 'make bench' outside pytest, keep the JVM's defaults.
#
# With the class-data-sharing archive scripts/ensure-spark-cds builds (make test runs it), they
# also map Spark's classes from it instead of loading them from the jars: a secure session and
# a small query took 5.5 s of CPU instead of 9.3 s (measured, see the script). A JVM whose class
# path differs from the archive's ignores it; -Xlog:cds*=off keeps it from saying so on the
# console of the tests that read it.
_CDS_ARCHIVE = Path(__file__).resolve().parents[1] / "build" / "spark-cds" / "spark-driver.jsa"
_CDS = (
    f" -XX:SharedArchiveFile={_CDS_ARCHIVE} -Xlog:cds*=off" if _CDS_ARCHIVE.is_file() else ""
)
os.environ.setdefault("SPARK_SUBMIT_OPTS", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC" + _CDS)


@pytest.fixture(scope="session", autouse=True)
def cheap_test_keystores() -> Iterator[None]:
    """Keystores this test process creates use scrypt at n = 2^10 instead of 2^17.

    A keystore file records its scrypt parameters, so every process that opens one pays them:
    the CLI's subprocesses, Spark's Python workers and the Parquet key helper, each once per
    keystore (0.6 s of CPU and 128 MiB at 2^17, memory-bound when many run at once). Measured on
    a fresh clone with 2 cores: the whole suite took 1010 s instead of 1590 s. Nothing is
    weakened in the product: the default is tested as it is
    (tests/kms/test_local.py sets it back and checks the stored parameters), and keystores made
    by a ``cipherspark key create`` subprocess (the README's) keep it.
    """
    from cipherspark.kms import local

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(local, "_SCRYPT", {"n": 1 << 10, "r": 8, "p": 1})
        yield


@pytest.fixture(scope="session", autouse=True)
def simulated_platform_key_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Keep the simulated-platform key (local keys' policies register it) out of ``~``."""
    path = tmp_path_factory.mktemp("simulated-tee") / "platform.key"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CIPHERSPARK_SIMULATED_TEE_KEY", str(path))
        yield path


@pytest.fixture
def credentials() -> Credentials:
    """The credentials every test keystore is created with."""
    return TEST_CREDENTIALS


@pytest.fixture
def kms(tmp_path: Path) -> LocalKms:
    """A fresh keystore holding one primary key, ``TEST_KEY``."""
    service = open_kms((tmp_path / "kms").as_uri(), TEST_CREDENTIALS, create=True)
    assert isinstance(service, LocalKms)
    service.create_key(TEST_KEY)
    return service


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    """One secure local[2] SparkSession for the whole run (starting one costs ~5 s)."""
    from cipherspark.spark import secure_session

    session = secure_session(master="local[2]", app_name="cipherspark-tests",
                             credentials=TEST_CREDENTIALS)
    yield session
    session.stop()


# The test files that take longest, longest first (measured on CI's 2 cores, stop 24, and
# here). pytest-xdist's --dist loadfile hands files to its workers one at a time, by default
# those with the most tests first: the 2-test chain proof, the longest file, started 19 minutes
# into a 28-minute run and ran to its end alone. With --no-loadscope-reorder (the Makefile) it
# keeps collection order, which this hook makes longest first: the long files overlap each
# other and the many short ones fill in after them (LPT scheduling). Files not listed keep
# their order, after these; tests within a file keep theirs (the README's blocks depend on it).
LONGEST_FIRST = (
    "tests/chain/test_chain_proof.py",
    "tests/bench/test_bench_smoke.py",
    "tests/test_cli_run.py",
    "tests/test_readme.py",
    "tests/jobs/test_tpch_sql.py",
    "tests/test_cli_parquet.py",
    "tests/bench/test_bench_cold.py",
    "tests/spark/test_differential.py",
    "tests/spark/test_pme_server.py",
    "tests/spark/test_parse_modes.py",
    "tests/bench/test_bench_tpch.py",
    "tests/chain/test_cluster_faults.py",
    "tests/kms/server/test_cli_kms_ca.py",
    "tests/spark/test_error_privacy.py",
    "tests/chain/test_open_ports.py",
    "tests/attestation/test_spark_attested.py",
    "tests/spark/test_pruning.py",
    "tests/kms/server/test_sealed_store.py",
    "tests/jobs/test_demo_kms_server.py",
    "tests/spark/test_filters.py",
    "tests/spark/test_datasource.py",
    "tests/spark/test_projection.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Order the files longest first (see LONGEST_FIRST); a stable sort, so each file's own
    order stays."""
    root = Path(str(config.rootpath))
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}

    def key(item: pytest.Item) -> int:
        try:
            name = Path(str(item.path)).relative_to(root).as_posix()
        except ValueError:
            return len(rank)
        return rank.get(name, len(rank))

    items.sort(key=key)
