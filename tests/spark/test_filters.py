"""Filter pushdown and record counting: results must equal Spark's own on the plaintext."""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest
from pyspark.sql import SparkSession
from pyspark.sql.datasource import (
    EqualNullSafe,
    EqualTo,
    GreaterThan,
    GreaterThanOrEqual,
    In,
    IsNotNull,
    IsNull,
    LessThan,
    LessThanOrEqual,
    Not,
    StringContains,
    StringEndsWith,
    StringStartsWith,
)

from cipherspark.files import encrypt_path
from cipherspark.jobs import PEOPLE_SCHEMA
from cipherspark.kms import LocalKms
from cipherspark.spark import count_encrypted_csv, encrypted_sql, read_encrypted_csv
from cipherspark.spark._csv import count_records
from cipherspark.spark._filters import apply_filters, combine, to_expression
from cipherspark.spark._pruning import scans
from tests.conftest import TEST_KEY

ROWS = [
    ("ann", 20, "Developer"), ("bob", 40, "Developer"), ("cy", 19, "Developer"),
    ("dee", 41, "Engineer"), ("", 30, "Researcher"), ("eve", None, "Developer"),
    ("fay", 35, None), ("gus", 25, "Dev"), ("hal", 33, "Developer,Lead"),
    ('i"q', 28, "Researcher"), ("jo", 60, "Engineer"), ("kim", 18, "Developer"),
]

TABLE = pa.table({
    "name": [r[0] or None for r in ROWS],
    "age": pa.array([r[1] for r in ROWS], pa.int32()),
    "job": [r[2] for r in ROWS],
})

AGE, JOB, NAME = ("age",), ("job",), ("name",)


def python_truth(predicate: object) -> set[str | None]:
    """Names of rows where a Python predicate (SQL semantics: None -> excluded) holds."""
    out = set()
    for row in TABLE.to_pylist():
        if predicate(row):  # type: ignore[operator]
            out.add(row["name"])
    return out


def _ge(v: int) -> object:
    return lambda r: r["age"] is not None and r["age"] >= v


CASES = [
    (EqualTo(JOB, "Developer"), lambda r: r["job"] == "Developer"),
    (EqualNullSafe(JOB, "Engineer"), lambda r: r["job"] == "Engineer"),
    (GreaterThan(AGE, 30), lambda r: r["age"] is not None and r["age"] > 30),
    (GreaterThanOrEqual(AGE, 20), _ge(20)),
    (LessThan(AGE, 20), lambda r: r["age"] is not None and r["age"] < 20),
    (LessThanOrEqual(AGE, 40), lambda r: r["age"] is not None and r["age"] <= 40),
    (In(JOB, ("Engineer", "Dev")), lambda r: r["job"] in ("Engineer", "Dev")),
    (IsNull(AGE), lambda r: r["age"] is None),
    (IsNotNull(JOB), lambda r: r["job"] is not None),
    (Not(EqualTo(JOB, "Developer")), lambda r: r["job"] is not None and r["job"] != "Developer"),
    (StringStartsWith(JOB, "Dev"), lambda r: r["job"] is not None and r["job"].startswith("Dev")),
    (StringEndsWith(JOB, "er"), lambda r: r["job"] is not None and r["job"].endswith("er")),
    (StringContains(JOB, ","), lambda r: r["job"] is not None and "," in r["job"]),
]


@pytest.mark.parametrize(("spark_filter", "predicate"), CASES,
                         ids=[type(c[0]).__name__ for c in CASES])
def test_each_filter_matches_sql_semantics(spark_filter: object, predicate: object) -> None:
    expression = to_expression(spark_filter, TABLE.schema)  # type: ignore[arg-type]
    assert expression is not None
    got = set(apply_filters(TABLE, expression).column("name").to_pylist())
    assert got == python_truth(predicate)


def test_untranslatable_filters_are_left_to_spark() -> None:
    names = TABLE.schema
    assert to_expression(EqualTo(("nested", "field"), 1), names) is None
    assert to_expression(EqualTo(("missing",), 1), names) is None
    assert to_expression(EqualTo(AGE, float("nan")), names) is None
    assert to_expression(In(AGE, (1, None)), names) is None
    assert to_expression(EqualNullSafe(AGE, None), names) is None
    assert combine([EqualTo(("missing",), 1)], names) is None


TYPED = pa.table({
    "id": pa.array(range(6), pa.int32()),
    "price": pa.array([Decimal("0.04"), Decimal("0.05"), Decimal("0.07"), Decimal("24.00"),
                       None, Decimal("0.06")], pa.decimal128(15, 2)),
    "day": pa.array([date(1993, 12, 31), date(1994, 1, 1), None, date(1994, 12, 31),
                     date(1995, 1, 1), date(1994, 6, 1)], pa.date32()),
})
PRICE, DAY = ("price",), ("day",)


@pytest.mark.parametrize(("spark_filter", "expected"), [
    (GreaterThanOrEqual(PRICE, Decimal("0.05")), {1, 2, 3, 5}),
    (LessThan(PRICE, Decimal("0.050000000000000000000001")), {0, 1}),
    (EqualTo(PRICE, Decimal("24")), {3}),
    (In(PRICE, (Decimal("0.04"), Decimal("0.060"))), {0, 5}),
    (GreaterThanOrEqual(DAY, date(1994, 1, 1)), {1, 3, 4, 5}),
    (LessThan(DAY, date(1995, 1, 1)), {0, 1, 3, 5}),
    (In(DAY, (date(1994, 6, 1),)), {5}),
    (Not(EqualTo(DAY, date(1994, 1, 1))), {0, 3, 4, 5}),
], ids=lambda v: type(v).__name__ if not isinstance(v, set) else "")
def test_decimal_and_date_filters_are_exact(spark_filter: object, expected: set[int]) -> None:
    expression = to_expression(spark_filter, TYPED.schema)  # type: ignore[arg-type]
    assert expression is not None
    assert set(apply_filters(TYPED, expression).column("id").to_pylist()) == expected


def test_timestamps_and_odd_decimals_are_left_to_spark() -> None:
    names = TYPED.schema
    assert to_expression(EqualTo(DAY, datetime(1994, 1, 1, 12)), names) is None
    assert to_expression(EqualTo(PRICE, Decimal("NaN")), names) is None
    assert to_expression(EqualTo(PRICE, Decimal("Infinity")), names) is None
    # Wider than decimal128: Arrow compares it exactly as decimal256, or the filter keeps all.
    wide = to_expression(EqualTo(PRICE, Decimal("1" * 50)), names)
    assert wide is None or apply_filters(TYPED, wide).num_rows in (0, TYPED.num_rows)


def test_combined_filters_are_anded() -> None:
    expression = combine([EqualTo(JOB, "Developer"), GreaterThanOrEqual(AGE, 20),
                          LessThanOrEqual(AGE, 40)], TABLE.schema)
    got = set(apply_filters(TABLE, expression).column("name").to_pylist())
    assert got == {"ann", "bob"}


def test_a_filter_arrow_cannot_evaluate_keeps_every_row() -> None:
    # A string compared with a number: Arrow refuses, the rows go to Spark unfiltered.
    expression = to_expression(EqualTo(JOB, 3), TABLE.schema)
    assert apply_filters(TABLE, expression).num_rows == TABLE.num_rows


@pytest.mark.parametrize(("text", "expected"), [
    (b"", 0), (b"a", 1), (b"a\n", 1), (b"\n", 0), (b"a\n\nb", 2), (b"a\r\n\r\nb\r\n", 2),
    (b"\n\n\n", 0), (b"x\n\ny\n", 2), (b"\r", 0), (b"  \n", 1),
])
def test_count_records(text: bytes, expected: int) -> None:
    assert count_records(text) == expected


@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("filters")
    plain = folder / "people.csv"
    lines = ["name,age,job"]
    for name, age, job in ROWS:
        quoted = [f'"{v}"' if v is not None and ("," in v or '"' in v) else (v or "")
                  for v in (name.replace('"', '""'), job)]
        lines.append(f"{quoted[0]},{'' if age is None else age},{quoted[1]}")
    plain.write_text("\n".join(lines) + "\n")
    return plain


@pytest.mark.spark
@pytest.mark.parametrize("where", [
    "job = 'Developer' AND age BETWEEN 20 AND 40",
    "age > 30 OR job = 'Dev'",
    "NOT (job = 'Developer')",
    "job IN ('Engineer', 'Researcher') AND name IS NOT NULL",
    "age IS NULL",
    "job LIKE 'Dev%'",
    "job LIKE '%,%'",
    "name = ''",
])
def test_pushdown_results_equal_sparks_own_csv(
    where: str, people: Path, tmp_path: Path, kms: LocalKms, spark: SparkSession
) -> None:
    encrypted = tmp_path / "people.cspk"
    encrypt_path(people, encrypted, kms, TEST_KEY, segment_size=128)
    people_df = read_encrypted_csv(spark, str(encrypted), kms_url=kms.url, schema=PEOPLE_SCHEMA,
                                   partition_bytes=256)
    query = f"SELECT * FROM people WHERE {where}"
    result = encrypted_sql(spark, query, {"people": people_df})
    assert any(options.get("pushedFilters") for _, _, options in scans(result))
    ours = result.collect()
    native = (spark.read.option("header", "true").option("escape", '"').schema(PEOPLE_SCHEMA)
              .csv(str(people)).where(where).collect())
    assert Counter(map(tuple, ours)) == Counter(map(tuple, native))


TYPED_SCHEMA = "id int, price decimal(15,2), day date, note string"


@pytest.fixture(scope="module")
def typed_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import random

    rng = random.Random(11)
    lines = ["id,price,day,note"]
    for i in range(400):
        price = "" if i % 37 == 0 else f"{rng.randrange(0, 3000) / 100:.2f}"
        day = "" if i % 41 == 0 else date.fromordinal(
            date(1993, 6, 1).toordinal() + rng.randrange(0, 900)).isoformat()
        lines.append(f"{i},{price},{day},n{i % 7}")
    path = tmp_path_factory.mktemp("typed") / "typed.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.spark
@pytest.mark.parametrize("where", [
    "day >= date '1994-01-01' AND day < date '1995-01-01' AND price BETWEEN 0.05 AND 7.07",
    "price < 24 AND price >= 0.5",
    "price = 12.5 OR day = date '1994-03-03'",
    "price IN (1.50, 2.25, 29.99) OR day IN (date '1994-02-01', date '1995-01-01')",
    "NOT (day <= date '1994-06-30') AND note = 'n3'",
    "price > 10.005 AND day IS NOT NULL",
])
def test_decimal_and_date_pushdown_equals_sparks_own_csv(
    where: str, typed_csv: Path, tmp_path: Path, kms: LocalKms, spark: SparkSession
) -> None:
    encrypted = tmp_path / "typed.cspk"
    encrypt_path(typed_csv, encrypted, kms, TEST_KEY, segment_size=512)
    typed = read_encrypted_csv(spark, str(encrypted), kms_url=kms.url, schema=TYPED_SCHEMA,
                               partition_bytes=2048)
    ours = encrypted_sql(spark, f"SELECT * FROM typed WHERE {where}", {"typed": typed}).collect()
    native = (spark.read.option("header", "true").schema(TYPED_SCHEMA).csv(str(typed_csv))
              .where(where).collect())
    assert ours and Counter(map(tuple, ours)) == Counter(map(tuple, native))


@pytest.mark.spark
def test_count_encrypted_csv_equals_a_full_read(
    people: Path, tmp_path: Path, kms: LocalKms, spark: SparkSession
) -> None:
    encrypted = tmp_path / "people.cspk"
    encrypt_path(people, encrypted, kms, TEST_KEY, segment_size=100)
    full = read_encrypted_csv(spark, str(encrypted), kms_url=kms.url, schema=PEOPLE_SCHEMA,
                              partition_bytes=200).count()
    assert full == len(ROWS)
    assert count_encrypted_csv(spark, str(encrypted), kms_url=kms.url) == full
    assert count_encrypted_csv(spark, str(encrypted), kms_url=kms.url, header=False) == full + 1
