"""The suite's class-data-sharing archive (scripts/ensure-spark-cds) is one Spark's JVMs use.

It only makes the suite faster, so a broken or stale archive would not fail anything by
itself: the JVMs would ignore it and CI would slow down by minutes. This test makes that loud.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import _CDS_ARCHIVE

pytestmark = pytest.mark.spark

ROOT = Path(__file__).resolve().parents[1]


def test_spark_submit_maps_the_archive() -> None:
    built = subprocess.run(
        [str(ROOT / "scripts" / "ensure-spark-cds")],
        capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    assert built.stdout.strip() == str(_CDS_ARCHIVE.relative_to(ROOT)), built.stderr
    import pyspark

    spark_home = Path(pyspark.__file__).parent
    # -Xshare:on: a JVM that cannot map the archive (another class path, another JDK) fails to
    # start instead of running without it.
    opts = f"-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -XX:SharedArchiveFile={_CDS_ARCHIVE}"
    result = subprocess.run(
        [str(spark_home / "bin" / "spark-submit"), "--version"],
        env={**os.environ, "SPARK_HOME": str(spark_home),
             "SPARK_SUBMIT_OPTS": f"{opts} -Xshare:on"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "version" in result.stdout + result.stderr
