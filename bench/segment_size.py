"""Which ciphertext segment size reads fastest through Spark? (the default was picked with this)

The same people.csv is encrypted with each segment size; one secure session then times the read
path (read + filter + count) over each copy, alternating, and prints medians relative to 1 MiB.
Smaller segments cost more per-segment work; larger ones make every split read more past its end
to finish its last line.

    .venv/bin/python bench/segment_size.py --rows 5000000
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from pyspark.sql.functions import col

from cipherspark.files import encrypt_path
from cipherspark.jobs import PEOPLE_SCHEMA
from cipherspark.jobs.datagen import generate_people
from cipherspark.kms import Credentials, open_kms
from cipherspark.spark import read_encrypted_csv, secure_session

SIZES = (256 << 10, 1 << 20, 2 << 20, 4 << 20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="cipherspark-segments-"))
    credentials = Credentials("bench-app", "bench-api-key-throwaway-keystore")
    kms = open_kms((workdir / "kms").as_uri(), credentials, create=True)
    kms.create_key("bench")
    people = generate_people(workdir / "people.csv", args.rows, seed=3)
    copies = {}
    for size in SIZES:
        copies[size] = workdir / f"people-{size >> 10}k.cspk"
        encrypt_path(workdir / "people.csv", copies[size], kms, "bench", segment_size=size)
    spark = secure_session(credentials=credentials, app_name="cipherspark-segments")

    def read(path: Path) -> int:
        df = read_encrypted_csv(spark, str(path), kms_url=kms.url, schema=PEOPLE_SCHEMA)
        return df.filter((col("job") == "Developer") & col("age").between(20, 40)).count()

    times: dict[int, list[float]] = {size: [] for size in SIZES}
    for size in SIZES:
        assert read(copies[size]) == people.developers_20_40  # warm-up and check
    for _ in range(max(3, args.runs)):
        for size in SIZES:
            start = time.perf_counter()
            read(copies[size])
            times[size].append(time.perf_counter() - start)
    spark.stop()
    shutil.rmtree(workdir, ignore_errors=True)
    base = statistics.median(times[1 << 20])
    for size in SIZES:
        median = statistics.median(times[size])
        print(
            f"segment {size >> 10:5d} KiB: median {median:.2f} s  "
            f"relative to 1 MiB: {median / base:.2f}"
        )


if __name__ == "__main__":
    main()
