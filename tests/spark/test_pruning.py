"""encrypted_sql: the same answers as the unpruned query and Spark's own CSV reader, while each
encrypted scan reads only the columns the query uses."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType

from cipherspark.files import encrypt_path
from cipherspark.kms import LocalKms
from cipherspark.spark import encrypted_sql, read_encrypted_csv
from cipherspark.spark._pruning import scans as _scans
from tests.conftest import TEST_KEY

pytestmark = pytest.mark.spark

ORDERS = "o_id int, o_cust int, o_day date, o_total decimal(12,2), o_note string"
CUSTOMERS = "c_id int, c_name string, c_segment string, c_balance decimal(12,2)"


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    rng = random.Random(5)
    folder = tmp_path_factory.mktemp("pruning")
    orders = ["o_id,o_cust,o_day,o_total,o_note"]
    for i in range(600):
        orders.append(f"{i},{rng.randrange(40)},199{rng.randrange(3, 6)}-0{rng.randrange(1, 10)}"
                      f"-1{rng.randrange(10)},{rng.randrange(100000) / 100:.2f},note {i % 9}")
    customers = ["c_id,c_name,c_segment,c_balance"]
    for i in range(40):
        customers.append(f"{i},cust{i},{rng.choice(['BUILDING', 'AUTO', 'HOUSE'])},"
                         f"{rng.randrange(-1000, 9000) / 10:.2f}")
    paths = {}
    for name, lines in (("orders", orders), ("customers", customers)):
        paths[name] = folder / f"{name}.csv"
        paths[name].write_text("\n".join(lines) + "\n")
    return paths


def encrypted(spark: SparkSession, kms: LocalKms, tables: dict[str, Path],
              tmp_path: Path) -> dict[str, DataFrame]:
    frames = {}
    for name, schema in (("orders", ORDERS), ("customers", CUSTOMERS)):
        target = tmp_path / f"{name}.cspk"
        encrypt_path(tables[name], target, kms, TEST_KEY, segment_size=1024)
        frames[name] = read_encrypted_csv(spark, str(target), kms_url=kms.url, schema=schema,
                                          partition_bytes=4096)
    return frames


QUERIES = {
    "projection": "SELECT o_id, o_total FROM orders WHERE o_day >= date '1994-01-01'",
    "join": """SELECT c_segment, sum(o_total) AS total, count(*) AS n FROM customers, orders
               WHERE c_id = o_cust AND c_balance > 0 GROUP BY c_segment ORDER BY c_segment""",
    "count": "SELECT count(*) FROM orders",
    "filter_on_other_column": "SELECT o_note FROM orders WHERE o_total > 500",
    "self_join": """SELECT a.o_id, b.o_note FROM orders a JOIN orders b ON a.o_id = b.o_id + 1
                    WHERE a.o_cust = 3""",
    "everything": "SELECT * FROM customers",
    "filter_only": "SELECT * FROM customers WHERE c_balance > 100",
    "union": """SELECT c_id, c_name FROM customers UNION ALL
                SELECT o_id, o_note FROM orders WHERE o_cust = 1""",
    "union_of_whole_tables": "SELECT * FROM customers UNION ALL SELECT * FROM customers",
    "scalar_subquery": """SELECT o_id FROM orders
                          WHERE o_total > (SELECT avg(o_total) * 1.9 FROM orders)""",
    # The subquery needs o_note, which the outer query does not.
    "subquery_needs_more": """SELECT o_id FROM orders WHERE o_total >
                              (SELECT avg(o_total) FROM orders WHERE o_note = 'note 3')""",
    "in_subquery": """SELECT o_note, count(*) FROM orders WHERE o_cust IN
                      (SELECT c_id FROM customers WHERE c_segment = 'AUTO') GROUP BY o_note""",
    "window": """SELECT o_id, rank() OVER (PARTITION BY o_cust ORDER BY o_total DESC) AS r
                 FROM orders WHERE o_day < date '1994-01-01'""",
    "cte": """WITH big AS (SELECT o_cust, o_total FROM orders WHERE o_total > 900)
              SELECT c_name, max(o_total) FROM big JOIN customers ON o_cust = c_id
              GROUP BY c_name""",
}


@pytest.mark.parametrize("name", list(QUERIES))
def test_pruned_results_equal_unpruned_and_native(
        name: str, tables: dict[str, Path], tmp_path: Path, kms: LocalKms,
        spark: SparkSession) -> None:
    query = QUERIES[name]
    frames = encrypted(spark, kms, tables, tmp_path)
    ours = encrypted_sql(spark, query, frames).collect()
    for view, df in frames.items():
        df.createOrReplaceTempView(view)
    unpruned = spark.sql(query).collect()
    for view, schema in (("orders", ORDERS), ("customers", CUSTOMERS)):
        spark.read.option("header", "true").schema(schema).csv(
            str(tables[view])).createOrReplaceTempView(view)
    native = spark.sql(query).collect()
    assert ours, "a query with an empty answer proves little"
    assert Counter(map(tuple, ours)) == Counter(map(tuple, unpruned)) == \
        Counter(map(tuple, native))


def test_scans_read_only_the_columns_used(tables: dict[str, Path], tmp_path: Path,
                                          kms: LocalKms, spark: SparkSession) -> None:
    frames = encrypted(spark, kms, tables, tmp_path)
    reads = {Path(path).stem: columns for path, columns, _ in
             _scans(encrypted_sql(spark, QUERIES["join"], frames))}
    assert reads == {"customers": ["c_id", "c_segment", "c_balance"],
                     "orders": ["o_cust", "o_total"]}
    # count(*) still needs one column to count rows of; everything reads everything.
    assert [c for _, c, _ in _scans(encrypted_sql(spark, QUERIES["count"], frames))] == [["o_id"]]
    everything = _scans(encrypted_sql(spark, QUERIES["everything"], frames))
    assert everything[0][1] == StructType.fromDDL(CUSTOMERS).fieldNames()  # type: ignore[attr-defined]
    # The views are left as they were given.
    assert spark.table("orders").columns == StructType.fromDDL(ORDERS).fieldNames()  # type: ignore[attr-defined]


def test_other_dataframes_are_used_as_they_are(tables: dict[str, Path], tmp_path: Path,
                                               kms: LocalKms, spark: SparkSession) -> None:
    frames = encrypted(spark, kms, tables, tmp_path)
    frames["orders"] = frames["orders"].where("o_cust < 10")  # not a plain scan
    rows = encrypted_sql(spark, "SELECT max(o_cust), count(*) FROM orders", frames).collect()
    assert rows[0][0] == 9 and rows[0][1] > 0


def _joins(df: DataFrame) -> list[str]:
    import re

    plan = df._jdf.queryExecution().executedPlan().toString()
    return re.findall(r"BroadcastHashJoin|SortMergeJoin|ShuffledHashJoin", plan)


def test_small_encrypted_tables_are_broadcast_like_files(
        tables: dict[str, Path], tmp_path: Path, kms: LocalKms, spark: SparkSession) -> None:
    # Spark knows the plaintext files' sizes and broadcasts the small side; it knows nothing of
    # a Python source's size, so encrypted_sql estimates it the same way and hints.
    frames = encrypted(spark, kms, tables, tmp_path)
    for view, schema in (("orders", ORDERS), ("customers", CUSTOMERS)):
        spark.read.option("header", "true").schema(schema).csv(
            str(tables[view])).createOrReplaceTempView(view)
    native = _joins(spark.sql(QUERIES["join"]))
    assert native == ["BroadcastHashJoin"]
    assert _joins(encrypted_sql(spark, QUERIES["join"], frames)) == native
    previous = spark.conf.get("spark.sql.autoBroadcastJoinThreshold")
    spark.conf.set("spark.sql.autoBroadcastJoinThreshold", "-1")
    try:
        assert _joins(encrypted_sql(spark, QUERIES["join"], frames)) == ["SortMergeJoin"]
    finally:
        spark.conf.set("spark.sql.autoBroadcastJoinThreshold", previous)  # type: ignore[arg-type]
