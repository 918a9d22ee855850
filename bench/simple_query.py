"""Simple Query: Spark's native CSV on plaintext vs cipherspark on the encrypted copy.

Both run in one secure Spark session over the same generated data, alternating, so machine noise
hits both alike. Two paths are timed:

* read: read + filter (Developers aged 20-40) + count;
* full job: the whole Simple Query (count names, filter, write the selection, count it), with
  Spark's plaintext CSV write on one side and the encrypted write on the other.

``--format parquet`` times the same two paths on Parquet instead: the generated rows written once
as plaintext Parquet (the writer's explicit opt-out) and once as encrypted Parquet (the session's
default: PME, encrypted footer, the session's key), both read by Spark's own Parquet reader (the
encrypted side through ``read_encrypted_parquet``, which first checks every footer); the full job
writes its selection as Parquet, plaintext on one side and encrypted on the other. Both sides'
counts are checked against the generator's.

``--rows`` takes a list (e.g. 1M 5M 20M): each size is generated, encrypted and timed in the same
session. ``--master`` picks the Spark master (``local[*]`` by default); ``--cluster`` instead
starts a local 2-worker standalone cluster (one core each) and runs the driver against it.
``--json`` writes the figures for the report (bench/report.py).

Prints the medians per size, then, for the last size, ``write ratio encrypted/plaintext: X.XX``
and, last, ``ratio encrypted/plaintext: X.XX`` for the read path.

    .venv/bin/python bench/simple_query.py --rows 1000000 5000000 20000000
    .venv/bin/python bench/simple_query.py --rows 5000000 --cluster
    .venv/bin/python bench/simple_query.py --rows 5000000 --format parquet
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
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.functions import col

from cipherspark.files import encrypt_path
from cipherspark.jobs import PEOPLE_SCHEMA, simple_query
from cipherspark.jobs.datagen import generate_people
from cipherspark.kms import Credentials, KeyManagementService, open_kms
from cipherspark.spark import read_encrypted_csv, read_encrypted_parquet, secure_session
from cipherspark.spark.cluster import start_cluster, stop_cluster
from cipherspark.spark.pme import (
    ParquetEncryption,
    unsafe_plaintext_parquet_options,
    unsafe_plaintext_parquet_read_options,
)

KEY = "bench"


def _developers(df: DataFrame) -> DataFrame:
    return df.filter((col("job") == "Developer") & col("age").between(20, 40))


def _timed(fn: Callable[[], int]) -> tuple[float, int]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


Paths = dict[str, Callable[[], int]]


def _csv_paths(
    spark: SparkSession,
    workdir: Path,
    plain: Path,
    kms_url: str,
    kms: KeyManagementService,
    partition_bytes: int | None,
) -> tuple[Paths, str]:
    """Spark's CSV reader and writer on ``plain`` vs cipherspark on an encrypted copy."""
    encrypted = workdir / f"{plain.stem}.csv.cspk"
    encrypt_path(plain, encrypted, kms, KEY, overwrite=True)

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

    paths = {
        "read plain": read_plain,
        "read encrypted": read_encrypted,
        "job plain": job_plain,
        "job encrypted": job_encrypted,
    }
    return paths, f"encrypted: {encrypted.stat().st_size / 1e6:.1f} MB"


def _footer_magic(folder: Path) -> set[bytes]:
    """The last four bytes of every Parquet part in ``folder`` (``PAR1`` plaintext footer,
    ``PARE`` encrypted footer)."""
    magics = set()
    for part in folder.glob("*.parquet"):
        with part.open("rb") as f:
            f.seek(-4, os.SEEK_END)
            magics.add(f.read(4))
    return magics


def _parquet_paths(spark: SparkSession, workdir: Path, plain: Path) -> tuple[Paths, str]:
    """Spark's Parquet reader and writer on plaintext vs encrypted Parquet of the same rows."""
    plain_pq, enc_pq = workdir / f"{plain.stem}.parquet", workdir / f"{plain.stem}.pme.parquet"
    people = spark.read.option("header", "true").schema(PEOPLE_SCHEMA).csv(str(plain))
    people.write.mode("overwrite").options(**unsafe_plaintext_parquet_options()).parquet(
        str(plain_pq)
    )
    people.write.mode("overwrite").parquet(str(enc_pq))  # the session's default: encrypted
    # Neither side may silently be the other: an honest ratio needs both footers checked.
    if _footer_magic(plain_pq) != {b"PAR1"} or _footer_magic(enc_pq) != {b"PARE"}:
        raise SystemExit("the Parquet sides are not plaintext and encrypted as intended")

    # The plaintext side's reads need the named opt-out: secure sessions refuse plaintext files.
    plain_reader = spark.read.options(**unsafe_plaintext_parquet_read_options())

    def read_plain() -> int:
        return _developers(plain_reader.parquet(str(plain_pq))).count()

    def read_encrypted() -> int:
        return _developers(read_encrypted_parquet(spark, str(enc_pq), key=KEY)).count()

    def job_plain() -> int:
        out = str(workdir / "out-plain")
        df = plain_reader.parquet(str(plain_pq))
        df.select("name").count()
        _developers(df).write.mode("overwrite").options(
            **unsafe_plaintext_parquet_options()
        ).parquet(out)
        return plain_reader.parquet(out).count()

    def job_encrypted() -> int:
        out = str(workdir / "out-encrypted")
        df = read_encrypted_parquet(spark, str(enc_pq), key=KEY)
        df.select("name").count()
        _developers(df).write.mode("overwrite").parquet(out)
        return read_encrypted_parquet(spark, out, key=KEY).count()

    def size(folder: Path) -> float:
        return sum(p.stat().st_size for p in folder.glob("*.parquet")) / 1e6

    paths = {
        "read plain": read_plain,
        "read encrypted": read_encrypted,
        "job plain": job_plain,
        "job encrypted": job_encrypted,
    }
    return (
        paths,
        f"plaintext Parquet: {size(plain_pq):.1f} MB  encrypted Parquet: {size(enc_pq):.1f} MB",
    )


def _measure(
    spark: SparkSession,
    workdir: Path,
    kms_url: str,
    rows: int,
    runs: int,
    partition_bytes: int | None,
    kms: KeyManagementService,
    fmt: str,
) -> dict[str, float]:
    plain = workdir / f"people-{rows}.csv"
    people = generate_people(plain, rows, seed=42, overwrite=True)
    if fmt == "parquet":
        paths, sizes = _parquet_paths(spark, workdir, plain)
    else:
        paths, sizes = _csv_paths(spark, workdir, plain, kms_url, kms, partition_bytes)
    print(
        f"rows: {rows:,}  format: {fmt}  CSV: {people.size / 1e6:.1f} MB  {sizes}  "
        f"expected Developers aged 20-40: {people.developers_20_40:,}",
        flush=True,
    )

    timings: dict[str, list[float]] = {}
    for name, fn in paths.items():
        _, value = _timed(fn)  # warm-up, and a correctness check
        if value != people.developers_20_40:
            raise SystemExit(f"{name}: got {value}, expected {people.developers_20_40}")
        timings[name] = []
    pairs = [("read plain", "read encrypted"), ("job plain", "job encrypted")]
    for i in range(runs):
        # Every other run each pair in the reverse order: the second of a pair would otherwise
        # always find the first one's JIT-compiled and code-generated classes warm.
        for pair in pairs:
            for name in pair if i % 2 == 0 else pair[::-1]:
                timings[name].append(_timed(paths[name])[0])
    medians = {name: statistics.median(values) for name, values in timings.items()}
    for name, values in timings.items():
        shown = " ".join(f"{v:.2f}" for v in values)
        print(f"{name:<15} median {medians[name]:6.2f} s   runs: {shown}")
    read_ratio = medians["read encrypted"] / medians["read plain"]
    write_ratio = medians["job encrypted"] / medians["job plain"]
    print(f"rows {rows:,}: read ratio {read_ratio:.2f}  write ratio {write_ratio:.2f}", flush=True)
    plain.unlink()
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
    parser.add_argument(
        "--format",
        choices=["csv", "parquet"],
        default="csv",
        help="csv: Spark's CSV vs encrypted CSV; parquet: plaintext vs encrypted Parquet",
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
    session: dict[str, Any] = {
        "app_name": "cipherspark-bench",
        "credentials": credentials,
        # Parquet writes are encrypted under KEY unless the writer opts out (the plaintext side).
        "parquet": ParquetEncryption(kms.url, KEY),
        # The CSV plaintext baseline is written with Spark's own CSV writer.
        "unsafe_plaintext_writes": args.format == "csv",
    }
    try:
        if args.cluster:
            # Executors read the KMS credentials from the workers' environment.
            os.environ["CIPHERSPARK_APP_ID"] = credentials.app_id
            os.environ["CIPHERSPARK_API_KEY"] = credentials.api_key
            cluster = start_cluster(workdir / "cluster", workers=2, cores=1, memory="2g")
            master = "2-worker standalone cluster"
            spark: SparkSession = secure_session(
                master=cluster.master_url, properties_file=cluster.properties, **session
            )
        else:
            spark = secure_session(master=master, **session)
        results = [
            _measure(spark, workdir, kms.url, rows, runs, partition_bytes, kms, args.format)
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
            json.dumps(
                {
                    "master": master,
                    "format": args.format,
                    "cores": os.cpu_count(),
                    "results": results,
                },
                indent=1,
            )
        )
    print(f"cores: {os.cpu_count()}  master: {master}  format: {args.format}")
    print(f"write ratio encrypted/plaintext: {results[-1]['write_ratio']:.2f}")
    print(f"ratio encrypted/plaintext: {results[-1]['read_ratio']:.2f}")


if __name__ == "__main__":
    main()
