"""The worker daemon drops redundant zips/jars from the path and freezes long-lived objects."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from cipherspark._spark_daemon import prefer_installed_packages
from cipherspark.spark._conf import parse_bytes


def _package(root: Path, name: str, version: str) -> Path:
    (root / name).mkdir(parents=True)
    (root / name / "__init__.py").write_text("")
    (root / name / "version.py").write_text(f'__version__ = "{version}"\n')
    return root


def _zip(path: Path, entries: dict[str, str]) -> str:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in entries.items():
            archive.writestr(name, text)
    return str(path)


def test_redundant_zips_and_python_free_jars_are_dropped(tmp_path: Path) -> None:
    site = _package(tmp_path / "site", "pyspark", "4.1.4")
    _package(site, "py4j", "0.10.9.9")
    pyspark_zip = _zip(tmp_path / "pyspark.zip", {"pyspark/__init__.py": "",
                                                  "pyspark/version.py": '__version__ = "4.1.4"\n'})
    py4j_zip = _zip(tmp_path / "py4j-0.10.9.9-src.zip", {
        "py4j/__init__.py": "", "py4j/version.py": '__version__ = "0.10.9.9"\n'})
    core_jar = _zip(tmp_path / "spark-core.jar", {"org/apache/Spark.class": "x"})
    python_jar = _zip(tmp_path / "with-python.jar", {"mod.py": "x = 1"})
    other_zip = _zip(tmp_path / "deps.zip", {"dep.py": ""})
    path = [pyspark_zip, py4j_zip, core_jar, python_jar, other_zip, str(site)]
    assert prefer_installed_packages(path) == [python_jar, other_zip, str(site)]


def test_zips_stay_when_the_installed_package_differs_or_is_missing(tmp_path: Path) -> None:
    site = _package(tmp_path / "site", "pyspark", "4.1.3")
    pyspark_zip = _zip(tmp_path / "pyspark.zip", {"pyspark/__init__.py": "",
                                                  "pyspark/version.py": '__version__ = "4.1.4"\n'})
    py4j_zip = _zip(tmp_path / "py4j-0.10.9.9-src.zip", {"py4j/__init__.py": ""})
    assert prefer_installed_packages([pyspark_zip, py4j_zip, str(site)]) == \
        [pyspark_zip, py4j_zip, str(site)]


@pytest.mark.spark
def test_python_workers_import_pyspark_from_the_installation(spark: object) -> None:
    def probe(_: object) -> object:
        import gc
        import sys
        import zipimport

        import pyspark

        zips = [k for k, v in sys.path_importer_cache.items()
                if isinstance(v, zipimport.zipimporter)]
        yield (pyspark.__file__, zips, [p for p in sys.path if p.endswith(".jar")],
               gc.get_freeze_count())

    context = spark.sparkContext  # type: ignore[attr-defined]
    module, zips, jars, frozen = context.parallelize([1], 1).mapPartitions(probe).collect()[0]
    assert ".zip" not in module and zips == [] and jars == []
    assert frozen > 10_000  # PySpark, pyarrow and the reader, frozen before the fork


@pytest.mark.parametrize(("text", "expected"), [
    ("10MB", 10 << 20), ("128m", 128 << 20), ("1048576", 1 << 20), ("-1", -1), ("2g", 2 << 30),
    (" 64k ", 64 << 10), ("7b", 7),
])
def test_spark_sizes(text: str, expected: int) -> None:
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "MB", "10 parsecs", "1.5g"])
def test_bad_spark_sizes(text: str) -> None:
    with pytest.raises(ValueError):
        parse_bytes(text)
