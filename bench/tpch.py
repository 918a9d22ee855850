"""TPC-H, all 22 queries in Spark SQL: plaintext vs encrypted, CSV or Parquet.

Data comes from ``tpchgen-cli csv`` (the ``bench`` extra; comma CSV with a header). One secure
session holds every side's tables (explicit schemas; money is DECIMAL, so sums are exact) and runs
each query on each side, alternating, ``--runs`` times, after a first run that checks every side's
result equal to the plaintext one. ``--format`` picks the sides:

* ``csv`` (default): Spark's native CSV reader on the plaintext files vs ``read_encrypted_csv`` on
  copies encrypted with ``encrypt_path``. Encrypted queries run with ``encrypted_sql`` (what the
  ``cipherspark sql`` job uses), which reads only the columns a query uses: Spark prunes columns
  inside its own CSV reader but cannot ask a Python data source to. ``--unpruned`` also times
  ``spark.sql`` over the encrypted views (every column parsed), as a third side.
* ``parquet``: the tables written once as plaintext Parquet (the writer's explicit opt-out,
  ``unsafe_plaintext_parquet_options``) and once as encrypted Parquet (the session's default:
  PME, encrypted footer, the session's key), both queried with ``spark.sql`` through Spark's own
  Parquet reader: the cost of the encryption alone.
* ``both``: the two Parquet sides, plus encrypted CSV (``encrypted_sql``) as a third side, timed
  against plaintext Parquet: what a user would otherwise pick against what cipherspark's CSV
  path costs.

Prints the medians per query and, last, ``tpch encrypted/plaintext geomean: X.XX`` and
``tpch encrypted/plaintext max: X.XX (Qn)``.

    .venv/bin/python bench/tpch.py --scale 1
    .venv/bin/python bench/tpch.py --scale 1 --format parquet
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
from collections.abc import Callable
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from cipherspark.files import encrypt_path
from cipherspark.kms import Credentials, open_kms
from cipherspark.spark import (
    encrypted_sql,
    read_encrypted_csv,
    read_encrypted_parquet,
    secure_session,
)
from cipherspark.spark.pme import (
    ParquetEncryption,
    unsafe_plaintext_parquet_options,
    unsafe_plaintext_parquet_read_options,
)

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
    "part": "p_partkey long, p_name string, p_mfgr string, p_brand string, p_type string, "
    f"p_size int, p_container string, p_retailprice {M}, p_comment string",
    "partsupp": "ps_partkey long, ps_suppkey long, ps_availqty int, "
    f"ps_supplycost {M}, ps_comment string",
    "supplier": "s_suppkey long, s_name string, s_address string, s_nationkey long, "
    f"s_phone string, s_acctbal {M}, s_comment string",
    "nation": "n_nationkey long, n_name string, n_regionkey long, n_comment string",
    "region": "r_regionkey long, r_name string, r_comment string",
}

# The 22 queries as Apache Spark runs them in its own TPC-H tests
# (sql/core/src/test/resources/tpch/q1.sql ... q22.sql, "using default substitutions"), from
# the Apache Spark project, Copyright The Apache Software Foundation, Apache License 2.0
# (http://www.apache.org/licenses/LICENSE-2.0); the queries are TPC Benchmark H's (tpc.org).
# Text unchanged except whitespace. Where an ORDER BY leaves ties, the order of tied rows is
# Spark's choice, so results are compared as ordered lists or, failing that, as multisets.
QUERIES = {
    "Q1": """
select
    l_returnflag,
    l_linestatus,
    sum(l_quantity) as sum_qty,
    sum(l_extendedprice) as sum_base_price,
    sum(l_extendedprice * (1 - l_discount)) as sum_disc_price,
    sum(l_extendedprice * (1 - l_discount) * (1 + l_tax)) as sum_charge,
    avg(l_quantity) as avg_qty,
    avg(l_extendedprice) as avg_price,
    avg(l_discount) as avg_disc,
    count(*) as count_order
from
    lineitem
where
    l_shipdate <= date '1998-12-01' - interval '90' day
group by
    l_returnflag,
    l_linestatus
order by
    l_returnflag,
    l_linestatus
""",
    "Q2": """
select
    s_acctbal,
    s_name,
    n_name,
    p_partkey,
    p_mfgr,
    s_address,
    s_phone,
    s_comment
from
    part,
    supplier,
    partsupp,
    nation,
    region
where
    p_partkey = ps_partkey
    and s_suppkey = ps_suppkey
    and p_size = 15
    and p_type like '%BRASS'
    and s_nationkey = n_nationkey
    and n_regionkey = r_regionkey
    and r_name = 'EUROPE'
    and ps_supplycost = (
        select
            min(ps_supplycost)
        from
            partsupp,
            supplier,
            nation,
            region
        where
            p_partkey = ps_partkey
            and s_suppkey = ps_suppkey
            and s_nationkey = n_nationkey
            and n_regionkey = r_regionkey
            and r_name = 'EUROPE'
    )
order by
    s_acctbal desc,
    n_name,
    s_name,
    p_partkey
limit 100
""",
    "Q3": """
select
    l_orderkey,
    sum(l_extendedprice * (1 - l_discount)) as revenue,
    o_orderdate,
    o_shippriority
from
    customer,
    orders,
    lineitem
where
    c_mktsegment = 'BUILDING'
    and c_custkey = o_custkey
    and l_orderkey = o_orderkey
    and o_orderdate < date '1995-03-15'
    and l_shipdate > date '1995-03-15'
group by
    l_orderkey,
    o_orderdate,
    o_shippriority
order by
    revenue desc,
    o_orderdate
limit 10
""",
    "Q4": """
select
    o_orderpriority,
    count(*) as order_count
from
    orders
where
    o_orderdate >= date '1993-07-01'
    and o_orderdate < date '1993-07-01' + interval '3' month
    and exists (
        select
            *
        from
            lineitem
        where
            l_orderkey = o_orderkey
            and l_commitdate < l_receiptdate
    )
group by
    o_orderpriority
order by
    o_orderpriority
""",
    "Q5": """
select
    n_name,
    sum(l_extendedprice * (1 - l_discount)) as revenue
from
    customer,
    orders,
    lineitem,
    supplier,
    nation,
    region
where
    c_custkey = o_custkey
    and l_orderkey = o_orderkey
    and l_suppkey = s_suppkey
    and c_nationkey = s_nationkey
    and s_nationkey = n_nationkey
    and n_regionkey = r_regionkey
    and r_name = 'ASIA'
    and o_orderdate >= date '1994-01-01'
    and o_orderdate < date '1994-01-01' + interval '1' year
group by
    n_name
order by
    revenue desc
""",
    "Q6": """
select
    sum(l_extendedprice * l_discount) as revenue
from
    lineitem
where
    l_shipdate >= date '1994-01-01'
    and l_shipdate < date '1994-01-01' + interval '1' year
    and l_discount between .06 - 0.01 and .06 + 0.01
    and l_quantity < 24
""",
    "Q7": """
select
    supp_nation,
    cust_nation,
    l_year,
    sum(volume) as revenue
from
    (
        select
            n1.n_name as supp_nation,
            n2.n_name as cust_nation,
            year(l_shipdate) as l_year,
            l_extendedprice * (1 - l_discount) as volume
        from
            supplier,
            lineitem,
            orders,
            customer,
            nation n1,
            nation n2
        where
            s_suppkey = l_suppkey
            and o_orderkey = l_orderkey
            and c_custkey = o_custkey
            and s_nationkey = n1.n_nationkey
            and c_nationkey = n2.n_nationkey
            and (
                (n1.n_name = 'FRANCE' and n2.n_name = 'GERMANY')
                or (n1.n_name = 'GERMANY' and n2.n_name = 'FRANCE')
            )
            and l_shipdate between date '1995-01-01' and date '1996-12-31'
    ) as shipping
group by
    supp_nation,
    cust_nation,
    l_year
order by
    supp_nation,
    cust_nation,
    l_year
""",
    "Q8": """
select
    o_year,
    sum(case
        when nation = 'BRAZIL' then volume
        else 0
    end) / sum(volume) as mkt_share
from
    (
        select
            year(o_orderdate) as o_year,
            l_extendedprice * (1 - l_discount) as volume,
            n2.n_name as nation
        from
            part,
            supplier,
            lineitem,
            orders,
            customer,
            nation n1,
            nation n2,
            region
        where
            p_partkey = l_partkey
            and s_suppkey = l_suppkey
            and l_orderkey = o_orderkey
            and o_custkey = c_custkey
            and c_nationkey = n1.n_nationkey
            and n1.n_regionkey = r_regionkey
            and r_name = 'AMERICA'
            and s_nationkey = n2.n_nationkey
            and o_orderdate between date '1995-01-01' and date '1996-12-31'
            and p_type = 'ECONOMY ANODIZED STEEL'
    ) as all_nations
group by
    o_year
order by
    o_year
""",
    "Q9": """
select
    nation,
    o_year,
    sum(amount) as sum_profit
from
    (
        select
            n_name as nation,
            year(o_orderdate) as o_year,
            l_extendedprice * (1 - l_discount) - ps_supplycost * l_quantity as amount
        from
            part,
            supplier,
            lineitem,
            partsupp,
            orders,
            nation
        where
            s_suppkey = l_suppkey
            and ps_suppkey = l_suppkey
            and ps_partkey = l_partkey
            and p_partkey = l_partkey
            and o_orderkey = l_orderkey
            and s_nationkey = n_nationkey
            and p_name like '%green%'
    ) as profit
group by
    nation,
    o_year
order by
    nation,
    o_year desc
""",
    "Q10": """
select
    c_custkey,
    c_name,
    sum(l_extendedprice * (1 - l_discount)) as revenue,
    c_acctbal,
    n_name,
    c_address,
    c_phone,
    c_comment
from
    customer,
    orders,
    lineitem,
    nation
where
    c_custkey = o_custkey
    and l_orderkey = o_orderkey
    and o_orderdate >= date '1993-10-01'
    and o_orderdate < date '1993-10-01' + interval '3' month
    and l_returnflag = 'R'
    and c_nationkey = n_nationkey
group by
    c_custkey,
    c_name,
    c_acctbal,
    c_phone,
    n_name,
    c_address,
    c_comment
order by
    revenue desc
limit 20
""",
    "Q11": """
select
    ps_partkey,
    sum(ps_supplycost * ps_availqty) as value
from
    partsupp,
    supplier,
    nation
where
    ps_suppkey = s_suppkey
    and s_nationkey = n_nationkey
    and n_name = 'GERMANY'
group by
    ps_partkey having
        sum(ps_supplycost * ps_availqty) > (
            select
                sum(ps_supplycost * ps_availqty) * 0.0001000000
            from
                partsupp,
                supplier,
                nation
            where
                ps_suppkey = s_suppkey
                and s_nationkey = n_nationkey
                and n_name = 'GERMANY'
        )
order by
    value desc
""",
    "Q12": """
select
    l_shipmode,
    sum(case
        when o_orderpriority = '1-URGENT'
            or o_orderpriority = '2-HIGH'
            then 1
        else 0
    end) as high_line_count,
    sum(case
        when o_orderpriority <> '1-URGENT'
            and o_orderpriority <> '2-HIGH'
            then 1
        else 0
    end) as low_line_count
from
    orders,
    lineitem
where
    o_orderkey = l_orderkey
    and l_shipmode in ('MAIL', 'SHIP')
    and l_commitdate < l_receiptdate
    and l_shipdate < l_commitdate
    and l_receiptdate >= date '1994-01-01'
    and l_receiptdate < date '1994-01-01' + interval '1' year
group by
    l_shipmode
order by
    l_shipmode
""",
    "Q13": """
select
    c_count,
    count(*) as custdist
from
    (
        select
            c_custkey,
            count(o_orderkey) as c_count
        from
            customer left outer join orders on
                c_custkey = o_custkey
                and o_comment not like '%special%requests%'
        group by
            c_custkey
    ) as c_orders
group by
    c_count
order by
    custdist desc,
    c_count desc
""",
    "Q14": """
select
    100.00 * sum(case
        when p_type like 'PROMO%'
            then l_extendedprice * (1 - l_discount)
        else 0
    end) / sum(l_extendedprice * (1 - l_discount)) as promo_revenue
from
    lineitem,
    part
where
    l_partkey = p_partkey
    and l_shipdate >= date '1995-09-01'
    and l_shipdate < date '1995-09-01' + interval '1' month
""",
    "Q15": """
with revenue0 as
    (select
        l_suppkey as supplier_no,
        sum(l_extendedprice * (1 - l_discount)) as total_revenue
    from
        lineitem
    where
        l_shipdate >= date '1996-01-01'
        and l_shipdate < date '1996-01-01' + interval '3' month
    group by
        l_suppkey)


select
    s_suppkey,
    s_name,
    s_address,
    s_phone,
    total_revenue
from
    supplier,
    revenue0
where
    s_suppkey = supplier_no
    and total_revenue = (
        select
            max(total_revenue)
        from
            revenue0
    )
order by
    s_suppkey
""",
    "Q16": """
select
    p_brand,
    p_type,
    p_size,
    count(distinct ps_suppkey) as supplier_cnt
from
    partsupp,
    part
where
    p_partkey = ps_partkey
    and p_brand <> 'Brand#45'
    and p_type not like 'MEDIUM POLISHED%'
    and p_size in (49, 14, 23, 45, 19, 3, 36, 9)
    and ps_suppkey not in (
        select
            s_suppkey
        from
            supplier
        where
            s_comment like '%Customer%Complaints%'
    )
group by
    p_brand,
    p_type,
    p_size
order by
    supplier_cnt desc,
    p_brand,
    p_type,
    p_size
""",
    "Q17": """
select
    sum(l_extendedprice) / 7.0 as avg_yearly
from
    lineitem,
    part
where
    p_partkey = l_partkey
    and p_brand = 'Brand#23'
    and p_container = 'MED BOX'
    and l_quantity < (
        select
            0.2 * avg(l_quantity)
        from
            lineitem
        where
            l_partkey = p_partkey
    )
""",
    "Q18": """
select
    c_name,
    c_custkey,
    o_orderkey,
    o_orderdate,
    o_totalprice,
    sum(l_quantity)
from
    customer,
    orders,
    lineitem
where
    o_orderkey in (
        select
            l_orderkey
        from
            lineitem
        group by
            l_orderkey having
                sum(l_quantity) > 300
    )
    and c_custkey = o_custkey
    and o_orderkey = l_orderkey
group by
    c_name,
    c_custkey,
    o_orderkey,
    o_orderdate,
    o_totalprice
order by
    o_totalprice desc,
    o_orderdate
limit 100
""",
    "Q19": """
select
    sum(l_extendedprice* (1 - l_discount)) as revenue
from
    lineitem,
    part
where
    (
        p_partkey = l_partkey
        and p_brand = 'Brand#12'
        and p_container in ('SM CASE', 'SM BOX', 'SM PACK', 'SM PKG')
        and l_quantity >= 1 and l_quantity <= 1 + 10
        and p_size between 1 and 5
        and l_shipmode in ('AIR', 'AIR REG')
        and l_shipinstruct = 'DELIVER IN PERSON'
    )
    or
    (
        p_partkey = l_partkey
        and p_brand = 'Brand#23'
        and p_container in ('MED BAG', 'MED BOX', 'MED PKG', 'MED PACK')
        and l_quantity >= 10 and l_quantity <= 10 + 10
        and p_size between 1 and 10
        and l_shipmode in ('AIR', 'AIR REG')
        and l_shipinstruct = 'DELIVER IN PERSON'
    )
    or
    (
        p_partkey = l_partkey
        and p_brand = 'Brand#34'
        and p_container in ('LG CASE', 'LG BOX', 'LG PACK', 'LG PKG')
        and l_quantity >= 20 and l_quantity <= 20 + 10
        and p_size between 1 and 15
        and l_shipmode in ('AIR', 'AIR REG')
        and l_shipinstruct = 'DELIVER IN PERSON'
    )
""",
    "Q20": """
select
    s_name,
    s_address
from
    supplier,
    nation
where
    s_suppkey in (
        select
            ps_suppkey
        from
            partsupp
        where
            ps_partkey in (
                select
                    p_partkey
                from
                    part
                where
                    p_name like 'forest%'
            )
            and ps_availqty > (
                select
                    0.5 * sum(l_quantity)
                from
                    lineitem
                where
                    l_partkey = ps_partkey
                    and l_suppkey = ps_suppkey
                    and l_shipdate >= date '1994-01-01'
                    and l_shipdate < date '1994-01-01' + interval '1' year
            )
    )
    and s_nationkey = n_nationkey
    and n_name = 'CANADA'
order by
    s_name
""",
    "Q21": """
select
    s_name,
    count(*) as numwait
from
    supplier,
    lineitem l1,
    orders,
    nation
where
    s_suppkey = l1.l_suppkey
    and o_orderkey = l1.l_orderkey
    and o_orderstatus = 'F'
    and l1.l_receiptdate > l1.l_commitdate
    and exists (
        select
            *
        from
            lineitem l2
        where
            l2.l_orderkey = l1.l_orderkey
            and l2.l_suppkey <> l1.l_suppkey
    )
    and not exists (
        select
            *
        from
            lineitem l3
        where
            l3.l_orderkey = l1.l_orderkey
            and l3.l_suppkey <> l1.l_suppkey
            and l3.l_receiptdate > l3.l_commitdate
    )
    and s_nationkey = n_nationkey
    and n_name = 'SAUDI ARABIA'
group by
    s_name
order by
    numwait desc,
    s_name
limit 100
""",
    "Q22": """
select
    cntrycode,
    count(*) as numcust,
    sum(c_acctbal) as totacctbal
from
    (
        select
            substring(c_phone, 1, 2) as cntrycode,
            c_acctbal
        from
            customer
        where
            substring(c_phone, 1, 2) in
                ('13', '31', '23', '29', '30', '18', '17')
            and c_acctbal > (
                select
                    avg(c_acctbal)
                from
                    customer
                where
                    c_acctbal > 0.00
                    and substring(c_phone, 1, 2) in
                        ('13', '31', '23', '29', '30', '18', '17')
            )
            and not exists (
                select
                    *
                from
                    orders
                where
                    o_custkey = c_custkey
            )
    ) as custsale
group by
    cntrycode
order by
    cntrycode
""",
}

Rows = list[tuple[object, ...]]


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


def _same(rows: Rows, expected: Rows) -> bool:
    """Equal as ordered lists or, where ORDER BY leaves ties, as multisets (values exact)."""
    return rows == expected or sorted(map(repr, rows)) == sorted(map(repr, expected))


def _footer_magic(folder: Path) -> set[bytes]:
    """The last four bytes of every Parquet part in ``folder`` (``PAR1`` plaintext footer,
    ``PARE`` encrypted footer)."""
    magics = set()
    for part in folder.glob("*.parquet"):
        with part.open("rb") as f:
            f.seek(-4, os.SEEK_END)
            magics.add(f.read(4))
    return magics


def _write_parquet(spark: SparkSession, csv_dir: Path, plain: Path, encrypted: Path) -> None:
    """Each table once as plaintext Parquet (the writer's opt-out) and once encrypted (the
    session's default); each side's footers checked, so neither side is silently the other."""
    for table, schema in SCHEMAS.items():
        frame = (
            spark.read.option("header", "true").schema(schema).csv(str(csv_dir / f"{table}.csv"))
        )
        frame.write.options(**unsafe_plaintext_parquet_options()).parquet(str(plain / table))
        frame.write.parquet(str(encrypted / table))
        if _footer_magic(plain / table) != {b"PAR1"}:
            raise SystemExit(f"{table}: the plaintext Parquet side is not plaintext")
        if _footer_magic(encrypted / table) != {b"PARE"}:
            raise SystemExit(f"{table}: the encrypted Parquet side is not encrypted")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="TPC-H scale factor")
    parser.add_argument(
        "--runs",
        type=int,
        default=3,
        help="timed runs per side, after the checking run (0: report the checking run's times)",
    )
    parser.add_argument("--master", default="local[*]")
    parser.add_argument(
        "--driver-memory",
        default="6g",
        help="the driver JVM's heap (Spark's default, 1g, is too small to broadcast SF 1's "
        "join sides: measured, 'Not enough memory to build and broadcast the table')",
    )
    parser.add_argument(
        "--format",
        choices=["csv", "parquet", "both"],
        default="csv",
        help="csv: plaintext vs encrypted CSV; parquet: plaintext vs encrypted Parquet; both: "
        "the Parquet sides plus encrypted CSV against plaintext Parquet",
    )
    parser.add_argument("--queries", nargs="+", default=list(QUERIES), choices=list(QUERIES))
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument(
        "--unpruned",
        action="store_true",
        help="(--format csv) also time spark.sql over the encrypted views (no column pruning)",
    )
    args = parser.parse_args()
    if args.runs < 0:
        parser.error("--runs must be 0 or more")
    if args.unpruned and args.format != "csv":
        parser.error("--unpruned applies to --format csv")
    fmt: str = args.format
    workdir = Path(tempfile.mkdtemp(prefix="cipherspark-tpch-"))
    try:
        credentials = Credentials("bench-app", "bench-api-key-throwaway-keystore")
        kms = open_kms((workdir / "kms").as_uri(), credentials, create=True)
        kms.create_key(KEY)
        csv_dir, enc_csv = workdir / "plain", workdir / "encrypted"
        plain_pq, enc_pq = workdir / "plain-parquet", workdir / "encrypted-parquet"
        started = time.perf_counter()
        generate(args.scale, csv_dir)
        csv_bytes = sum((csv_dir / f"{table}.csv").stat().st_size for table in SCHEMAS)
        if fmt != "parquet":
            enc_csv.mkdir()
            for table in SCHEMAS:
                encrypt_path(csv_dir / f"{table}.csv", enc_csv / f"{table}.csv.cspk", kms, KEY)
        spark: SparkSession = secure_session(
            master=args.master,
            app_name="cipherspark-tpch",
            credentials=credentials,
            # Every Parquet write of this session is encrypted under KEY unless the writer
            # opts out (the plaintext side does, explicitly).
            parquet=ParquetEncryption(kms.url, KEY),
            # Applies when this call starts the JVM, as it does here (a fresh process).
            extra_conf={"spark.driver.memory": args.driver_memory},
        )
        prepared = "generated" + ("" if fmt == "parquet" else ", encrypted")
        if fmt != "csv":
            _write_parquet(spark, csv_dir, plain_pq, enc_pq)
            prepared += ", written as Parquet (plaintext and encrypted)"
        print(
            f"scale factor {args.scale:g}: {csv_bytes / 1e6:.0f} MB of CSV, "
            f"{prepared} in {time.perf_counter() - started:.1f} s",
            flush=True,
        )

        def csv_tables(encrypted: bool) -> dict[str, DataFrame]:
            frames = {}
            for table, schema in SCHEMAS.items():
                if encrypted:
                    frames[table] = read_encrypted_csv(
                        spark, str(enc_csv / f"{table}.csv.cspk"), kms_url=kms.url, schema=schema
                    )
                else:
                    frames[table] = (
                        spark.read.option("header", "true")
                        .schema(schema)
                        .csv(str(csv_dir / f"{table}.csv"))
                    )
            return frames

        def parquet_tables(encrypted: bool) -> dict[str, DataFrame]:
            if encrypted:
                # Checks every part's footer is encrypted under KEY, as the CLI's readers do.
                return {t: read_encrypted_parquet(spark, str(enc_pq / t), key=KEY) for t in SCHEMAS}
            # The named opt-out: secure sessions refuse plaintext Parquet files.
            plain_reader = spark.read.options(**unsafe_plaintext_parquet_read_options())
            return {t: plain_reader.parquet(str(plain_pq / t)) for t in SCHEMAS}

        def sql_over(frames: dict[str, DataFrame]) -> Callable[[str], DataFrame]:
            def query(text: str) -> DataFrame:
                for table, frame in frames.items():
                    frame.createOrReplaceTempView(table)
                return spark.sql(text)

            return query

        # Each side: how it builds its tables (not timed) and how it runs a query over them.
        sides: dict[str, Callable[[], Callable[[str], DataFrame]]] = {}
        if fmt == "csv":
            sides["plaintext"] = lambda: sql_over(csv_tables(False))
            sides["encrypted"] = lambda: _encrypted_sql(spark, csv_tables(True))
            if args.unpruned:
                sides["unpruned"] = lambda: sql_over(csv_tables(True))
        else:
            sides["plaintext"] = lambda: sql_over(parquet_tables(False))
            sides["encrypted"] = lambda: sql_over(parquet_tables(True))
            if fmt == "both":
                sides["encrypted CSV"] = lambda: _encrypted_sql(spark, csv_tables(True))

        def run(query: str, side: str) -> tuple[float, Rows]:
            runner = sides[side]()  # builds the side's tables: not timed
            start = time.perf_counter()
            # (the spark.sql sides register their views here: timed, and tiny)
            rows = [tuple(r) for r in runner(QUERIES[query]).collect()]
            return time.perf_counter() - start, rows

        names = list(sides)
        counts: dict[str, int] = {}
        checked: dict[tuple[str, str], list[float]] = {}
        for query in args.queries:
            seconds, plain_rows = run(query, "plaintext")  # warm-up and the correctness check
            checked[(query, "plaintext")] = [seconds]
            counts[query] = len(plain_rows)
            for side in names[1:]:
                seconds, rows = run(query, side)
                checked[(query, side)] = [seconds]
                if not _same(rows, plain_rows):
                    raise SystemExit(
                        f"{query}: {side} result differs from plaintext "
                        f"({len(rows)} vs {len(plain_rows)} rows)"
                    )
            # Progress on stderr: SF 1 takes tens of minutes, the table comes at the end.
            print(f"{query}: results equal on every side", file=sys.stderr, flush=True)
        if not any(counts.values()):
            raise SystemExit("every query returned no rows: nothing was compared")
        # --runs 0 (smoke tests): the checking pass's times, first runs, not a measurement.
        times: dict[tuple[str, str], list[float]] = {} if args.runs > 0 else checked
        for i in range(args.runs):
            # Every other run in the reverse order: whichever side runs second would otherwise
            # always find the first one's JIT-compiled and code-generated classes warm.
            order = names if i % 2 == 0 else names[::-1]
            for query in args.queries:
                for side in order:
                    times.setdefault((query, side), []).append(run(query, side)[0])
            print(f"timed run {i + 1} of {args.runs} done", file=sys.stderr, flush=True)
        spark.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    _report(args, fmt, names, times, counts)


def _encrypted_sql(spark: SparkSession, frames: dict[str, DataFrame]) -> Callable[[str], DataFrame]:
    return lambda text: encrypted_sql(spark, text, frames)


def _report(
    args: argparse.Namespace,
    fmt: str,
    names: list[str],
    times: dict[tuple[str, str], list[float]],
    counts: dict[str, int],
) -> None:
    base = "plaintext Parquet" if fmt != "csv" else "plaintext"
    print(
        f"cores: {os.cpu_count()}  master: {args.master}  format: {fmt}  runs: {args.runs} "
        "(medians; times include planning"
        + (", and encrypted_sql's pruning pass)" if fmt != "parquet" else ")")
    )
    results: list[dict[str, object]] = []
    ratios: dict[str, dict[str, float]] = {side: {} for side in names[1:]}
    for query in args.queries:
        plain = statistics.median(times[(query, "plaintext")])
        enc = statistics.median(times[(query, "encrypted")])
        result: dict[str, object] = {
            "query": query,
            "rows": counts[query],
            "plaintext": plain,
            "encrypted": enc,
            "ratio": enc / plain,
        }
        line = (
            f"{query:<4} plaintext {plain:6.2f} s  encrypted {enc:6.2f} s  ratio {enc / plain:.2f}"
        )
        for side in names[1:]:
            ratios[side][query] = statistics.median(times[(query, side)]) / plain
        for side in names[2:]:
            seconds = statistics.median(times[(query, side)])
            result[side.replace(" ", "_")] = seconds
            line += f"  ({side} {seconds:6.2f} s, ratio {seconds / plain:.2f})"
        results.append(result)
        print(f"{line}  results equal ({counts[query]} rows)")
    figures: dict[str, object] = {
        "scale": args.scale,
        "master": args.master,
        "format": fmt,
        "results": results,
    }
    for side in names[2:]:
        side_geomean = _geomean(list(ratios[side].values()))
        label = "unpruned encrypted" if side == "unpruned" else side
        figures[f"{side.replace(' ', '_')}_geomean"] = side_geomean
        print(f"tpch {label}/{base} geomean: {side_geomean:.2f}")
    geomean = _geomean(list(ratios["encrypted"].values()))
    worst = max(ratios["encrypted"], key=lambda q: ratios["encrypted"][q])
    figures["geomean"] = geomean
    figures["max"] = {"query": worst, "ratio": ratios["encrypted"][worst]}
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=1))
    print(f"tpch encrypted/plaintext geomean: {geomean:.2f}")
    print(f"tpch encrypted/plaintext max: {ratios['encrypted'][worst]:.2f} ({worst})")


def _geomean(ratios: list[float]) -> float:
    return math.exp(statistics.mean(math.log(r) for r in ratios))


if __name__ == "__main__":
    main()
