"""Simple Query: Spark's native CSV on plaintext vs cipherspark on the encrypted copy.

Both run in one secure Spark session over the same generated data, alternating, so machine noise
hits both alike. Two paths are timed:

* read: read + filter (Developers aged 20-40) + count;
* full job: the whole Simple Query (count names, filter, write the selection, count it), with
  Spark's plaintext CSV write on one side and the encrypted write on the other.

``--rows`` takes a list (e.g. 1M 5M 20M): each size is generated, encrypted and timed in the same
session. ``--master`` picks the Spark master (``local[*]`` by default); ``--cluster`` instead
starts a local 2-worker standalone cluster (one core each) and runs the driver against it.
``--json`` writes the figures for the report (bench/report.py).

Prints the medians per size, then, for the last size, ``write ratio encrypted/plaintext: X.XX``
and, last, ``ratio encrypted/plaintext: X.XX`` for the read path.

    .venv/bin/python bench/simple_query.py --rows 1000000 5000000 20000000
    .venv/bin/python bench/simple_query.py --rows 5000000 --cluster
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.functions import col

from cipherspark.files import encrypt_path
from cipherspark.jobs import PEOPLE_SCHEMA, simple_query
from cipherspark.jobs.datagen import generate_people
from cipherspark.kms import Credentials, open_kms
from cipherspark.spark import read_encrypted_csv, secure_session
from cipherspark.spark.cluster import start_cluster, stop_cluster

KEY = "bench"


def _developers(df: DataFrame) -> DataFrame:
    return df.filter((col("job") == "Developer") & col("age").between(20, 40))


def _timed(fn: Callable[[], int]) -> tuple[float, int]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def _measure(
    spark: SparkSession,
    workdir: Path,
    kms_url: str,
    rows: int,
    runs: int,
    partition_bytes: int | None,
    kms: object,
) -> dict[str, float]:
    plain = workdir / f"people-{rows}.csv"
    encrypted = workdir / f"people-{rows}.csv.cspk"
    people = generate_people(plain, rows, seed=42, overwrite=True)
    encrypt_path(plain, encrypted, kms, KEY, overwrite=True)  # type: ignore[arg-type]
    print(
        f"rows: {rows:,}  plaintext: {people.size / 1e6:.1f} MB  "
        f"encrypted: {encrypted.stat().st_size / 1e6:.1f} MB  "
        f"expected Developers aged 20-40: {people.developers_20_40:,}",
        flush=True,
    )

    def read_plain() -> int:
        df = spark.read.option("header", "true").schema(PEOPLE_SCHEMA).csv(str(plain))
        return _developers(df).count()

    def read_encrypted() -> int:
        df = read_encrypted_csv(
            spark,
            str(encrypted),
            kms_url=kms_url,
            schema=PEOPLE_SCHEMA,
            partition_bytes=partition_bytes,
        )
        return _developers(df).count()

    def job_plain() -> int:
        out = workdir / "out-plain"
        df = spark.read.option("header", "true").schema(PEOPLE_SCHEMA).csv(str(plain))
        df.select("name").count()
        _developers(df).write.mode("overwrite").option("header", "true").csv(str(out))
        return spark.read.option("header", "true").schema(PEOPLE_SCHEMA).csv(str(out)).count()

    def job_encrypted() -> int:
        out = workdir / "out-encrypted"
        result = simple_query(
            spark, str(encrypted), str(out), kms_url=kms_url, key=KEY, overwrite=True
        )
        return result.developers_20_40

    timings: dict[str, list[float]] = {}
    for name, fn in (
        ("read plain", read_plain),
        ("read encrypted", read_encrypted),
        ("job plain", job_plain),
        ("job encrypted", job_encrypted),
    ):
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
    read_ratio = medians["read encrypted"] / medians["read plain"]
    write_ratio = medians["job encrypted"] / medians["job plain"]
    print(f"rows {rows:,}: read ratio {read_ratio:.2f}  write ratio {write_ratio:.2f}", flush=True)
    plain.unlink()
    encrypted.unlink()
    return {
        "rows": rows,
        **{k.replace(" ", "_"): v for k, v in medians.items()},
        "read_ratio": read_ratio,
        "write_ratio": write_ratio,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[5_000_000])
    parser.add_argument("--runs", type=int, default=3, help="timed runs per side")
    parser.add_argument("--master", default="local[*]")
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="start a local 2-worker standalone cluster and run against it",
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep data here (default: a temporary folder)"
    )
    parser.add_argument(
        "--partition-mib",
        type=int,
        default=None,
        help="cipherspark partition size in MiB (default: the library's)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()
    runs = max(1, args.runs)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cipherspark-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    credentials = Credentials("bench-app", "bench-api-key-throwaway-keystore")
    kms = open_kms((workdir / "kms").as_uri(), credentials, create=True)
    if KEY not in {k.name for k in kms.list_keys()}:
        kms.create_key(KEY)
    partition_bytes = args.partition_mib << 20 if args.partition_mib else None
    cluster = None
    master = args.master
    try:
        if args.cluster:
            # Executors read the KMS credentials from the workers' environment.
            os.environ["CIPHERSPARK_APP_ID"] = credentials.app_id
            os.environ["CIPHERSPARK_API_KEY"] = credentials.api_key
            cluster = start_cluster(workdir / "cluster", workers=2, cores=1, memory="2g")
            master = "2-worker standalone cluster"
            spark: SparkSession = secure_session(
                master=cluster.master_url,
                properties_file=cluster.properties,
                app_name="cipherspark-bench",
                credentials=credentials,
                # The plaintext baseline is written with Spark's own CSV writer.
                unsafe_plaintext_writes=True,
            )
        else:
            spark = secure_session(
                master=master,
                app_name="cipherspark-bench",
                credentials=credentials,
                unsafe_plaintext_writes=True,
            )
        results = [
            _measure(spark, workdir, kms.url, rows, runs, partition_bytes, kms)
            for rows in args.rows
        ]
        spark.stop()
    finally:
        if cluster is not None:
            stop_cluster(cluster.directory)
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json is not None:
        args.json.write_text(
            json.dumps({"master": master, "cores": os.cpu_count(), "results": results}, indent=1)
        )
    print(f"cores: {os.cpu_count()}  master: {master}")
    print(f"write ratio encrypted/plaintext: {results[-1]['write_ratio']:.2f}")
    print(f"ratio encrypted/plaintext: {results[-1]['read_ratio']:.2f}")


if __name__ == "__main__":
    main()
