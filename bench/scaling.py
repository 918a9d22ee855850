"""Wall time and executor peak memory of the encrypted read path against input rows.

One secure local session; for each size (e.g. 1M 5M 20M rows) the Simple Query read path (read +
filter + count over the encrypted copy) and the encrypted write (filter + write_encrypted_csv) are
timed while a sampler thread reads the RSS of the Spark JVM (the executor, in local mode) and of
every Spark Python worker (``pyspark.daemon`` children, where the decryption runs) from /proc via
psutil every 20 ms. Each size runs in a fresh session (a JVM's RSS never shrinks, so sizes measured
one after another in one JVM would report the largest input's heap for all of them), after the
same warm-up in every session: one read of a ``--warmup-rows`` file (JIT, Python workers, and the
JVM heap grown to its working size; a 1M-row job alone ends before G1 has sized its heap, which
is start-up, not a cost of input size). The JVM's RSS after the warm-up is printed too. Sizes are
run in turn, ``--runs`` times; figures are medians of the runs.

Time should grow linearly and memory per executor stay flat: the reader streams one partition at
a time, whatever the input size. The last line is
``peak python worker RSS max/min across sizes: X.XX``.

    .venv/bin/python bench/scaling.py --rows 1000000 5000000 20000000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.functions import col

from cipherspark.files import encrypt_path
from cipherspark.jobs import PEOPLE_SCHEMA
from cipherspark.jobs.datagen import generate_people
from cipherspark.kms import Credentials, open_kms
from cipherspark.spark import read_encrypted_csv, secure_session, write_encrypted_csv

KEY = "bench"


class PeakSampler:
    """Peak RSS of the JVM and of each Python worker under this process, sampled in a thread."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.jvm = 0
        self.worker = 0  # the largest single Python worker
        self.workers_total = 0  # all Python workers at one instant
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            try:
                children = me.children(recursive=True)
            except psutil.Error:
                children = []
            for proc in children:
                try:
                    name = proc.name()
                    rss = proc.memory_info().rss
                    if name == "java":
                        self.jvm = max(self.jvm, rss)
                    elif "pyspark" in " ".join(proc.cmdline()):
                        self.worker = max(self.worker, rss)
                        total += rss
                except psutil.Error:
                    continue
            self.workers_total = max(self.workers_total, total)
            self._stop.wait(self.interval)


def _jvm_rss() -> int:
    """RSS of the Spark JVM under this process, now."""
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.name() == "java":
                return int(proc.memory_info().rss)
        except psutil.Error:
            continue
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000, 20_000_000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--warmup-rows",
        type=int,
        default=5_000_000,
        help="rows of the file every session reads once before measuring",
    )
    parser.add_argument("--master", default="local[*]")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="cipherspark-scaling-"))
    results = []
    try:
        credentials = Credentials("bench-app", "bench-api-key-throwaway-keystore")
        kms = open_kms((workdir / "kms").as_uri(), credentials, create=True)
        kms.create_key(KEY)
        files = {}
        for rows in sorted({*args.rows, args.warmup_rows}):
            plain = workdir / f"people-{rows}.csv"
            people = generate_people(plain, rows, seed=5)
            files[rows] = (workdir / f"people-{rows}.cspk", people.developers_20_40)
            encrypt_path(plain, files[rows][0], kms, KEY)
            plain.unlink()

        def developers(spark: SparkSession, rows: int) -> DataFrame:
            df = read_encrypted_csv(
                spark, str(files[rows][0]), kms_url=kms.url, schema=PEOPLE_SCHEMA
            )
            return df.filter((col("job") == "Developer") & col("age").between(20, 40))

        def read(spark: SparkSession, rows: int) -> None:
            count = developers(spark, rows).count()
            if count != files[rows][1]:
                raise SystemExit(f"{rows} rows: counted {count}, expected {files[rows][1]}")

        def write(spark: SparkSession, rows: int) -> None:
            write_encrypted_csv(
                developers(spark, rows),
                str(workdir / "out"),
                kms_url=kms.url,
                key=KEY,
                overwrite=True,
            )

        samples: dict[tuple[int, str], list[tuple[float, int, int, int, int]]] = {}
        for _ in range(max(1, args.runs)):
            for rows in args.rows:
                spark = secure_session(
                    master=args.master, app_name="cipherspark-scaling", credentials=credentials
                )
                try:
                    read(spark, args.warmup_rows)  # the same warm-up for every size
                    warm = _jvm_rss()
                    for path, fn in (("read", read), ("write", write)):
                        job: Callable[[SparkSession, int], None] = fn
                        with PeakSampler() as peak:
                            start = time.perf_counter()
                            job(spark, rows)
                            elapsed = time.perf_counter() - start
                        samples.setdefault((rows, path), []).append(
                            (elapsed, peak.jvm, peak.worker, peak.workers_total, warm)
                        )
                finally:
                    spark.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"cores: {os.cpu_count()}  master: {args.master}  runs: {args.runs} (medians)")
    print(f"warm-up: one read of {args.warmup_rows:,} rows per session; JVM warm = its RSS after")
    print(
        f"{'rows':>12} {'path':>6} {'time s':>8} {'s/M rows':>9} {'JVM warm':>9} "
        f"{'JVM MB':>8} {'worker MB':>10} {'workers MB':>11}"
    )
    for (rows, path), values in samples.items():
        elapsed, jvm, worker, total, warm = (
            statistics.median(v) for v in zip(*values, strict=True)
        )
        results.append(
            {
                "rows": rows,
                "path": path,
                "seconds": elapsed,
                "jvm_rss": jvm,
                "worker_rss": worker,
                "workers_rss": total,
                "jvm_warm_rss": warm,
            }
        )
        print(
            f"{rows:>12,} {path:>6} {elapsed:8.2f} {elapsed / rows * 1e6:9.2f} "
            f"{warm / 1e6:9.0f} {jvm / 1e6:8.0f} {worker / 1e6:10.0f} {total / 1e6:11.0f}"
        )
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {"master": args.master, "cores": os.cpu_count(), "results": results}, indent=1
            )
        )
    reads = [r for r in results if r["path"] == "read"]
    jvm_ratio = max(r["jvm_rss"] for r in reads) / min(r["jvm_rss"] for r in reads)
    worker_ratio = max(r["worker_rss"] for r in reads) / min(r["worker_rss"] for r in reads)
    print(f"peak JVM RSS max/min across sizes: {jvm_ratio:.2f}")
    print(f"peak python worker RSS max/min across sizes: {worker_ratio:.2f}")


if __name__ == "__main__":
    main()
