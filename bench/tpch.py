"""TPC-H Q1, Q3, Q5, Q6 and Q10 in Spark SQL: plaintext CSV vs cipherspark encrypted CSV.

Data comes from ``tpchgen-cli csv`` (the ``bench`` extra; comma CSV with a header, so the
cipherspark reader can parse it); each table file is also encrypted with ``encrypt_path``. One
secure session registers both sets of tables with explicit schemas (Spark's native CSV reader on
plaintext, ``read_encrypted_csv`` on the encrypted copies) and runs each query on both,
alternating, ``--runs`` times; the results are checked equal (money is DECIMAL, so sums are exact).
Plaintext queries run with ``spark.sql``; encrypted ones with ``encrypted_sql`` (what the
``cipherspark sql`` job uses), which reads only the columns a query uses: Spark prunes columns
inside its own CSV reader but cannot ask a Python data source to. ``--unpruned`` also times
``spark.sql`` over the encrypted views (every column parsed), as a third side.
Prints the medians per query and, last, ``tpch encrypted/plaintext geomean: X.XX``.

    .venv/bin/python bench/tpch.py --scale 1
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from cipherspark.files import encrypt_path
from cipherspark.kms import Credentials, open_kms
from cipherspark.spark import encrypted_sql, read_encrypted_csv, secure_session

KEY = "bench"
M = "decimal(15,2)"
SCHEMAS = {
    "lineitem": f"l_orderkey long, l_partkey long, l_suppkey long, l_linenumber int, "
    f"l_quantity {M}, l_extendedprice {M}, l_discount {M}, l_tax {M}, "
    "l_returnflag string, l_linestatus string, l_shipdate date, l_commitdate date, "
    "l_receiptdate date, l_shipinstruct string, l_shipmode string, l_comment string",
    "orders": f"o_orderkey long, o_custkey long, o_orderstatus string, o_totalprice {M}, "
    "o_orderdate date, o_orderpriority string, o_clerk string, o_shippriority int, "
    "o_comment string",
    "customer": "c_custkey long, c_name string, c_address string, c_nationkey long, "
    f"c_phone string, c_acctbal {M}, c_mktsegment string, c_comment string",
    "supplier": "s_suppkey long, s_name string, s_address string, s_nationkey long, "
    f"s_phone string, s_acctbal {M}, s_comment string",
    "nation": "n_nationkey long, n_name string, n_regionkey long, n_comment string",
    "region": "r_regionkey long, r_name string, r_comment string",
}

QUERIES = {
    "Q1": """
        SELECT l_returnflag, l_linestatus, sum(l_quantity) AS sum_qty,
               sum(l_extendedprice) AS sum_base_price,
               sum(l_extendedprice * (1 - l_discount)) AS sum_disc_price,
               sum(l_extendedprice * (1 - l_discount) * (1 + l_tax)) AS sum_charge,
               avg(l_quantity) AS avg_qty, avg(l_extendedprice) AS avg_price,
               avg(l_discount) AS avg_disc, count(*) AS count_order
        FROM lineitem
        WHERE l_shipdate <= date '1998-12-01' - interval 90 days
        GROUP BY l_returnflag, l_linestatus
        ORDER BY l_returnflag, l_linestatus""",
    "Q3": """
        SELECT l_orderkey, sum(l_extendedprice * (1 - l_discount)) AS revenue,
               o_orderdate, o_shippriority
        FROM customer, orders, lineitem
        WHERE c_mktsegment = 'BUILDING' AND c_custkey = o_custkey AND l_orderkey = o_orderkey
          AND o_orderdate < date '1995-03-15' AND l_shipdate > date '1995-03-15'
        GROUP BY l_orderkey, o_orderdate, o_shippriority
        ORDER BY revenue DESC, o_orderdate, l_orderkey
        LIMIT 10""",
    "Q5": """
        SELECT n_name, sum(l_extendedprice * (1 - l_discount)) AS revenue
        FROM customer, orders, lineitem, supplier, nation, region
        WHERE c_custkey = o_custkey AND l_orderkey = o_orderkey AND l_suppkey = s_suppkey
          AND c_nationkey = s_nationkey AND s_nationkey = n_nationkey
          AND n_regionkey = r_regionkey AND r_name = 'ASIA'
          AND o_orderdate >= date '1994-01-01' AND o_orderdate < date '1995-01-01'
        GROUP BY n_name
        ORDER BY revenue DESC""",
    "Q6": """
        SELECT sum(l_extendedprice * l_discount) AS revenue
        FROM lineitem
        WHERE l_shipdate >= date '1994-01-01' AND l_shipdate < date '1995-01-01'
          AND l_discount BETWEEN 0.05 AND 0.07 AND l_quantity < 24""",
    "Q10": """
        SELECT c_custkey, c_name, sum(l_extendedprice * (1 - l_discount)) AS revenue,
               c_acctbal, n_name, c_address, c_phone, c_comment
        FROM customer, orders, lineitem, nation
        WHERE c_custkey = o_custkey AND l_orderkey = o_orderkey
          AND o_orderdate >= date '1993-10-01' AND o_orderdate < date '1994-01-01'
          AND l_returnflag = 'R' AND c_nationkey = n_nationkey
        GROUP BY c_custkey, c_name, c_acctbal, c_phone, n_name, c_address, c_comment
        ORDER BY revenue DESC, c_custkey
        LIMIT 20""",
}


def generate(scale: float, folder: Path) -> None:
    """TPC-H tables as comma CSV with a header, by the tpchgen-cli of this interpreter's env."""
    exe = Path(sys.executable).parent / "tpchgen-cli"
    command = str(exe) if exe.exists() else shutil.which("tpchgen-cli")
    if command is None:
        raise SystemExit("tpchgen-cli is not installed (pip install -e '.[bench]')")
    subprocess.run(
        [command, "csv", "-s", str(scale), "-o", str(folder), "--tables", ",".join(SCHEMAS)],
        check=True,
        capture_output=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="TPC-H scale factor")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per side")
    parser.add_argument("--master", default="local[*]")
    parser.add_argument("--queries", nargs="+", default=list(QUERIES), choices=list(QUERIES))
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument(
        "--unpruned",
        action="store_true",
        help="also time spark.sql over the encrypted views (no column pruning)",
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="cipherspark-tpch-"))
    try:
        credentials = Credentials("bench-app", "bench-api-key-throwaway-keystore")
        kms = open_kms((workdir / "kms").as_uri(), credentials, create=True)
        kms.create_key(KEY)
        plain_dir, enc_dir = workdir / "plain", workdir / "encrypted"
        enc_dir.mkdir()
        started = time.perf_counter()
        generate(args.scale, plain_dir)
        sizes = {}
        for table in SCHEMAS:
            src = plain_dir / f"{table}.csv"
            encrypt_path(src, enc_dir / f"{table}.csv.cspk", kms, KEY)
            sizes[table] = src.stat().st_size
        print(
            f"scale factor {args.scale:g}: {sum(sizes.values()) / 1e6:.0f} MB of CSV, "
            f"generated and encrypted in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
        spark: SparkSession = secure_session(
            master=args.master, app_name="cipherspark-tpch", credentials=credentials
        )

        def tables(encrypted: bool) -> dict[str, DataFrame]:
            frames = {}
            for table, schema in SCHEMAS.items():
                if encrypted:
                    frames[table] = read_encrypted_csv(
                        spark, str(enc_dir / f"{table}.csv.cspk"), kms_url=kms.url, schema=schema
                    )
                else:
                    frames[table] = (
                        spark.read.option("header", "true")
                        .schema(schema)
                        .csv(str(plain_dir / f"{table}.csv"))
                    )
            return frames

        def run(query: str, side: str) -> tuple[float, list[tuple[object, ...]]]:
            frames = tables(side != "plaintext")  # registering tables is not timed (either side)
            start = time.perf_counter()
            if side == "encrypted":
                df = encrypted_sql(spark, QUERIES[query], frames)
            else:
                for table, frame in frames.items():
                    frame.createOrReplaceTempView(table)
                df = spark.sql(QUERIES[query])  # (view registration is timed; it is tiny)
            rows = [tuple(r) for r in df.collect()]
            return time.perf_counter() - start, rows

        sides = ["plaintext", "encrypted"] + (["unpruned"] if args.unpruned else [])
        times: dict[tuple[str, str], list[float]] = {}
        for query in args.queries:
            _, plain_rows = run(query, "plaintext")  # warm-up and the correctness check
            for side in sides[1:]:
                _, rows = run(query, side)
                if rows != plain_rows or not plain_rows:
                    raise SystemExit(
                        f"{query}: {side} result differs from plaintext "
                        f"({len(rows)} vs {len(plain_rows)} rows)"
                    )
        for _ in range(max(1, args.runs)):
            for query in args.queries:
                for side in sides:
                    times.setdefault((query, side), []).append(run(query, side)[0])
        spark.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results = []
    print(
        f"cores: {os.cpu_count()}  master: {args.master}  runs: {args.runs} (medians; times "
        "include planning, and encrypted_sql's pruning pass)"
    )
    for query in args.queries:
        plain = statistics.median(times[(query, "plaintext")])
        enc = statistics.median(times[(query, "encrypted")])
        result = {"query": query, "plaintext": plain, "encrypted": enc, "ratio": enc / plain}
        line = (
            f"{query:<4} plaintext {plain:6.2f} s  encrypted {enc:6.2f} s  ratio {enc / plain:.2f}"
        )
        if args.unpruned:
            unpruned = statistics.median(times[(query, "unpruned")])
            result["unpruned"] = unpruned
            line += f"  (unpruned {unpruned:6.2f} s, ratio {unpruned / plain:.2f})"
        results.append(result)
        print(line + "  results equal")
    geomean = _geomean([float(r["ratio"]) for r in results])  # type: ignore[arg-type]
    figures: dict[str, object] = {
        "scale": args.scale,
        "master": args.master,
        "results": results,
        "geomean": geomean,
    }
    if args.unpruned:
        unpruned_geomean = _geomean(
            [
                float(r["unpruned"]) / float(r["plaintext"])  # type: ignore[arg-type]
                for r in results
            ]
        )
        figures["unpruned_geomean"] = unpruned_geomean
        print(f"tpch unpruned encrypted/plaintext geomean: {unpruned_geomean:.2f}")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=1))
    print(f"tpch encrypted/plaintext geomean: {geomean:.2f}")


def _geomean(ratios: list[float]) -> float:
    return math.exp(statistics.mean(math.log(r) for r in ratios))


if __name__ == "__main__":
    main()
