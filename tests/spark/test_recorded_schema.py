"""Self-describing datasets: the schema a dataset records (manifest version 3) is the schema its
readers give, with the values Spark gives for the plaintext under that schema.

Written by Spark (the CSV writer records the DataFrame's columns, the JSON writer the rows'
columns) or given at ``encrypt --schema``, and read back with no schema named: the columns come
out typed (dates as dates, money as decimals), equal to what was written. A schema named by the
reader wins; inference is for datasets that record none; a recorded schema cannot be changed in
storage (it is inside the authenticated manifest).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DateType,
    DecimalType,
    DoubleType,
    IntegerType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
)

from cipherspark._ddl import canonical_ddl, struct_ddl
from cipherspark.crypto.manifest import read_manifest
from cipherspark.errors import IntegrityError
from cipherspark.files import encrypt_path
from cipherspark.jobs.sql import read_table
from cipherspark.kms import LocalKms
from cipherspark.spark import (
    read_encrypted_csv,
    read_encrypted_json,
    write_encrypted_csv,
    write_encrypted_json,
)
from cipherspark.spark._errors import cipherspark_errors
from tests.conftest import TEST_KEY

pytestmark = pytest.mark.spark

FLAT = StructType(
    [
        StructField("name", StringType()),
        StructField("age", IntegerType()),
        StructField("visits", LongType()),
        StructField("pay", DecimalType(12, 2)),
        StructField("score", DoubleType()),
        StructField("joined", DateType()),
        StructField("active", BooleanType()),
    ]
)
FLAT_ROWS = [
    ('Ann, "the" first', 31, 1 << 40, Decimal("1234567890.12"), 0.1, dt.date(2001, 2, 3), True),
    ("Bo", None, -3, Decimal("-0.50"), -1e300, dt.date(1970, 1, 1), False),
    (None, 0, 0, None, None, None, None),
]
NESTED = StructType(
    [
        StructField("id", IntegerType()),
        StructField("odd name`s", StringType()),
        StructField(
            "info",
            StructType(
                [
                    StructField("pay", DecimalType(38, 10)),
                    StructField("tags", ArrayType(StringType())),
                ]
            ),
        ),
        StructField("extra", MapType(StringType(), DateType())),
    ]
)
NESTED_ROWS: list[tuple[Any, ...]] = [
    (1, "x", (Decimal("12.5000000000"), ["a", "b"]), {"k": dt.date(2024, 2, 29)}),
    (2, None, None, None),
    (3, "z", (None, []), {}),
]


def _rows(df: DataFrame) -> list[tuple[Any, ...]]:
    return sorted((tuple(r) for r in df.collect()), key=repr)


def _as_read(schema: StructType) -> StructType:
    """``schema`` as file sources give it back: every column nullable (and no comments, which
    a recorded schema does not keep)."""
    fields = [{**f.jsonValue(), "nullable": True, "metadata": {}} for f in schema]
    return StructType.fromJson({**schema.jsonValue(), "fields": fields})


def test_struct_ddl_is_spark_s_schema(spark: SparkSession) -> None:
    """What the writers record parses, in Spark, to the very schema written."""
    for schema in (FLAT, NESTED):
        ddl = struct_ddl(schema)
        assert ddl is not None and canonical_ddl(ddl) == ddl
        assert StructType.fromDDL(ddl) == schema
    # A user's spelling, made canonical, means what Spark reads it to mean.
    text = "a dec(7), `b``c` array<struct<x:int, y: timestamp_ntz>>, d interval day to second"
    assert StructType.fromDDL(canonical_ddl(text)) == StructType.fromDDL(text)


# Refused by cipherspark by design although Spark parses them: recorded, they would be changed.
_REFUSED_BY_DESIGN = ("collate", "nested too deeply", "appears twice")


def test_canonical_spellings_mean_what_spark_reads(spark: SparkSession) -> None:
    """Every spelling of tests/test_ddl.py means, canonical, what Spark parses the user's text
    to (less NOT NULL, which file sources drop); what cipherspark refuses, Spark refuses too,
    except the refusals made by design."""
    from pyspark.errors import PySparkException

    from tests.test_ddl import REFUSED, SPELLINGS

    for text, canonical in SPELLINGS:
        assert canonical_ddl(text) == canonical
        parsed = StructType.fromDDL(text)
        assert isinstance(parsed, StructType)
        assert StructType.fromDDL(canonical) == _as_read(parsed), text
    for text, reason in REFUSED:
        if any(word in text.lower() or word in reason for word in _REFUSED_BY_DESIGN):
            continue
        if not text.strip():
            continue  # Spark reads an empty text as a schema of no columns; none is recorded
        with pytest.raises(PySparkException):
            StructType.fromDDL(text)


def test_csv_written_by_spark_reads_back_typed(
    spark: SparkSession, kms: LocalKms, tmp_path: Path
) -> None:
    written = spark.createDataFrame(FLAT_ROWS, FLAT)
    out = tmp_path / "flat"
    with cipherspark_errors():
        write_encrypted_csv(written, str(out), kms_url=kms.url, key=TEST_KEY)
    manifest = read_manifest(out, lambda h: kms.unwrap_data_key(h.key_id, h.wrapped_key))
    assert manifest is not None and manifest.version == 3
    assert manifest.schema == struct_ddl(FLAT)

    # No schema named and inference off (read_encrypted_csv's default): the recorded types.
    back = read_encrypted_csv(spark, str(out), kms_url=kms.url)
    assert back.schema == _as_read(FLAT)
    with cipherspark_errors():
        assert _rows(back) == _rows(written)
        # Reused, and narrowed to some columns by a query: still the recorded types.
        assert back.where("pay > 0").select("joined", "pay").collect()[0] == (
            dt.date(2001, 2, 3),
            Decimal("1234567890.12"),
        )
    # Through cipherspark sql's table reader, which would infer otherwise.
    table = read_table(spark, str(out), kms_url=kms.url)
    assert table.schema == _as_read(FLAT)


def test_json_written_by_spark_reads_back_typed(
    spark: SparkSession, kms: LocalKms, tmp_path: Path
) -> None:
    written = spark.createDataFrame(NESTED_ROWS, NESTED)
    out = tmp_path / "nested"
    with cipherspark_errors():
        write_encrypted_json(written, str(out), kms_url=kms.url, key=TEST_KEY)
    back = read_encrypted_json(spark, str(out), kms_url=kms.url)
    # Inference would make the decimal a double and the dates strings; the record keeps them.
    assert back.schema == _as_read(NESTED)
    with cipherspark_errors():
        assert _rows(back) == _rows(written)
    table = read_table(spark, str(out), kms_url=kms.url)
    assert table.schema == _as_read(NESTED)


def test_schema_given_at_encrypt(spark: SparkSession, kms: LocalKms, tmp_path: Path) -> None:
    plain = tmp_path / "money.csv"
    plain.write_text("who,amount,day\nann,10.10,2024-01-31\nbo,0.20,2024-02-01\n")
    target = tmp_path / "money.csv.cspk"
    ddl = "who string, amount decimal(9,2), day date"
    encrypt_path(plain, target, kms, TEST_KEY, schema=ddl)
    assert target.is_dir()  # a file with a schema is a dataset folder of one part
    df = read_table(spark, str(target), kms_url=kms.url)
    expected = spark.read.option("header", "true").schema(ddl).csv(str(plain))
    assert df.schema == expected.schema
    with cipherspark_errors():
        assert _rows(df) == _rows(expected)
        assert df.agg({"amount": "sum"}).collect()[0][0] == Decimal("10.30")
    # A schema the reader names wins over the recorded one.
    names = "a string, b string, c string"
    override = read_table(spark, str(target), kms_url=kms.url, schema=names)
    assert override.columns == ["a", "b", "c"]
    with cipherspark_errors():
        assert _rows(override) == [("ann", "10.10", "2024-01-31"), ("bo", "0.20", "2024-02-01")]


def test_datasets_without_a_record_are_still_inferred(
    spark: SparkSession, kms: LocalKms, tmp_path: Path
) -> None:
    plain = tmp_path / "people.csv"
    plain.write_text("name,age\nann,31\n")
    target = tmp_path / "people.csv.cspk"
    encrypt_path(plain, target, kms, TEST_KEY)
    assert read_table(spark, str(target), kms_url=kms.url).schema == StructType(
        [StructField("name", StringType()), StructField("age", IntegerType())]
    )


def test_recorded_schema_cannot_be_swapped_in_storage(
    spark: SparkSession, kms: LocalKms, tmp_path: Path
) -> None:
    """The attacker puts another dataset's manifest (same key, other columns' types) beside
    these parts: refused, never read under the other schema."""
    plain = tmp_path / "t.csv"
    plain.write_text("a,b\n1,2\n")
    first, second = tmp_path / "first", tmp_path / "second"
    encrypt_path(plain, first, kms, TEST_KEY, schema="a int, b int")
    encrypt_path(plain, second, kms, TEST_KEY, schema="a string, b date")
    (first / "_manifest.cspk").write_bytes((second / "_manifest.cspk").read_bytes())
    with pytest.raises(IntegrityError), cipherspark_errors():
        read_encrypted_csv(spark, str(first), kms_url=kms.url).collect()


def test_csv_refuses_column_types_it_does_not_implement(
    spark: SparkSession, kms: LocalKms, tmp_path: Path
) -> None:
    """A timestamp column is refused by name, in one clear error, when written or read as
    encrypted CSV (its CSV semantics, Spark's session time zone and lenient formats, are not
    implemented), rather than failing in the worker with a withheld message."""
    from pyspark.sql.types import TimestampType

    from cipherspark.errors import UsageError

    frame = spark.createDataFrame(
        [(1, dt.datetime(2020, 1, 2, 3, 4, 5))],
        StructType([StructField("id", IntegerType()), StructField("at", TimestampType())]),
    )
    with pytest.raises(UsageError, match="column 'at' is timestamp: encrypted CSV holds"):
        write_encrypted_csv(frame, str(tmp_path / "out"), kms_url=kms.url, key=TEST_KEY)
    assert not (tmp_path / "out").exists()
    plain = tmp_path / "t.csv"
    plain.write_text("id,at\n1,2020-01-02 03:04:05\n")
    encrypt_path(plain, tmp_path / "t.cspk", kms, TEST_KEY)
    with pytest.raises(UsageError, match="column 'at' is timestamp"), cipherspark_errors():
        read_encrypted_csv(
            spark, str(tmp_path / "t.cspk"), kms_url=kms.url, schema="id int, at timestamp"
        ).collect()
