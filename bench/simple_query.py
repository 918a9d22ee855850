"""Simple Query: Spark's native CSV on plaintext vs cipherspark on the encrypted copy.

Both run in one secure Spark session over the same generated data, alternating, so machine noise
hits both alike. Two paths are timed:

* read: read + filter (Developers aged 20-40) + count;
* full job: the whole Simple Query (count names, filter, write the selection, count it), with
  Spark's plaintext CSV write on one side and the encrypted write on the other.

Prints the medians, ``write ratio encrypted/plaintext: X.XX`` and, last,
``ratio encrypted/plaintext: X.XX`` for the read path.

    .venv/bin/python bench/simple_query.py --rows 5000000
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.functions import col

from cipherspark.datagen import generate_people
from cipherspark.files import encrypt_path
from cipherspark.jobs import PEOPLE_SCHEMA, simple_query
from cipherspark.kms import Credentials, open_kms
from cipherspark.spark import read_encrypted_csv, secure_session

KEY = "bench"


def _developers(df: DataFrame) -> DataFrame:
    return df.filter((col("job") == "Developer") & col("age").between(20, 40))


def _timed(fn: Callable[[], int]) -> tuple[float, int]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--runs", type=int, default=3, help="timed runs per side (>= 3)")
    parser.add_argument("--master", default="local[*]")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep data here (default: a temporary folder)")
    parser.add_argument("--partition-mib", type=int, default=None,
                        help="cipherspark partition size in MiB (default: the library's)")
    args = parser.parse_args()
    runs = max(3, args.runs)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cipherspark-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    credentials = Credentials("bench-app", "bench-api-key")
    kms = open_kms((workdir / "kms").as_uri(), credentials, create=True)
    if KEY not in {k.name for k in kms.list_keys()}:
        kms.create_key(KEY)
    plain = workdir / "people.csv"
    encrypted = workdir / "people.csv.cspk"
    people = generate_people(plain, args.rows, seed=42, overwrite=True)
    encrypt_path(plain, encrypted, kms, KEY, overwrite=True)
    print(f"rows: {args.rows:,}  plaintext: {people.size / 1e6:.1f} MB  "
          f"encrypted: {encrypted.stat().st_size / 1e6:.1f} MB  "
          f"expected Developers aged 20-40: {people.developers_20_40:,}")

    spark: SparkSession = secure_session(master=args.master, app_name="cipherspark-bench",
                                         credentials=credentials)
    partition_bytes = args.partition_mib << 20 if args.partition_mib else None

    def read_plain() -> int:
        df = spark.read.option("header", "true").schema(PEOPLE_SCHEMA).csv(str(plain))
        return _developers(df).count()

    def read_encrypted() -> int:
        df = read_encrypted_csv(spark, str(encrypted), kms_url=kms.url, schema=PEOPLE_SCHEMA,
                                partition_bytes=partition_bytes)
        return _developers(df).count()

    def job_plain() -> int:
        out = workdir / "out-plain"
        df = spark.read.option("header", "true").schema(PEOPLE_SCHEMA).csv(str(plain))
        df.select("name").count()
        _developers(df).write.mode("overwrite").option("header", "true").csv(str(out))
        return spark.read.option("header", "true").schema(PEOPLE_SCHEMA).csv(str(out)).count()

    def job_encrypted() -> int:
        out = workdir / "out-encrypted"
        result = simple_query(spark, str(encrypted), str(out), kms_url=kms.url, key=KEY,
                              overwrite=True)
        return result.developers_20_40

    timings: dict[str, list[float]] = {}
    for name, fn in (("read plain", read_plain), ("read encrypted", read_encrypted),
                     ("job plain", job_plain), ("job encrypted", job_encrypted)):
        _, value = _timed(fn)  # warm-up, and a correctness check
        if value != people.developers_20_40:
            raise SystemExit(f"{name}: got {value}, expected {people.developers_20_40}")
        timings[name] = []
    for _ in range(runs):
        for name, fn in (("read plain", read_plain), ("read encrypted", read_encrypted)):
            timings[name].append(_timed(fn)[0])
        for name, fn in (("job plain", job_plain), ("job encrypted", job_encrypted)):
            timings[name].append(_timed(fn)[0])
    medians = {name: statistics.median(values) for name, values in timings.items()}
    for name, values in timings.items():
        shown = " ".join(f"{v:.2f}" for v in values)
        print(f"{name:<15} median {medians[name]:6.2f} s   runs: {shown}")
    spark.stop()
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"cores: {os.cpu_count()}  master: {args.master}")
    print(f"write ratio encrypted/plaintext: {medians['job encrypted'] / medians['job plain']:.2f}")
    print(f"ratio encrypted/plaintext: {medians['read encrypted'] / medians['read plain']:.2f}")


if __name__ == "__main__":
    main()
