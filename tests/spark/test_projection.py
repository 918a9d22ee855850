"""Column projection: ``parse_csv(..., file_columns=)`` converts only the selected columns, and
``read_encrypted_csv(..., columns=)`` reads only those, with the rows of the full read."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Callable, Sequence
from itertools import permutations
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyspark.sql import SparkSession
from pyspark.sql.types import DoubleType, IntegerType, StringType, StructField, StructType

from cipherspark.errors import InputError, UsageError
from cipherspark.files import encrypt_path
from cipherspark.kms import LocalKms
from cipherspark.spark import FORMAT_NAME, cipherspark_errors, read_encrypted_csv
from cipherspark.spark._csv import parse_csv
from tests.conftest import TEST_KEY

FILE_COLUMNS = ["name", "age", "score"]
FULL = pa.schema([("name", pa.string()), ("age", pa.int32()), ("score", pa.float64())])
SPARK_FULL = StructType([
    StructField("name", StringType(), True),
    StructField("age", IntegerType(), True),
    StructField("score", DoubleType(), True),
])
# Every selection of 1, 2 or 3 of the 3 columns, in every order.
SELECTIONS = [list(p) for size in (1, 2, 3) for p in permutations(FILE_COLUMNS, size)]
PARTIAL = [s for s in SELECTIONS if len(s) < 3]


def to_csv(rows: Sequence[Sequence[str]]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().encode()


def sub_schema(selection: list[str]) -> pa.Schema:
    return pa.schema([FULL.field(name) for name in selection])


WELL_FORMED = [
    ["ann", "30", "1.5"],
    ["smith, john", "41", "-2.25"],
    ['say "hi"', "", "0"],
    ["", "7", ""],
    ["zoë", "-3", "1e3"],
    ["line\\n", "2147483647", "-0.5"],
] + [[f"person{i}", str(i), f"{i / 4}"] for i in range(40)]

# Wrong field counts only: every selection sees the same malformed rows.
WIDTH_MALFORMED = [
    ["ann", "30", "1.5"],
    ["bob", "31"],
    ["cyd", "32", "2.5", "extra"],
    ["dan"],
    [],  # a blank line: skipped, not a row
    ["eve", "", ""],
    ["fay", "33", "3.5"],
]

# Wrong field counts and unparseable values in each column.
MALFORMED = [
    *WIDTH_MALFORMED,
    ["gus", "x", "4.5"],
    ["hal", "34", "y"],
    ["ian", "99999999999", "5.5"],  # out of int32 range
    ["jo", "abc", "def"],
    ["kim", "35", "6.5"],
    ["lee", "36"],
]


def _int32(raw: str) -> int:
    number = int(raw)
    if not -(1 << 31) <= number < 1 << 31:
        raise ValueError("out of range")
    return number


CONVERT: dict[str, Callable[[str], Any]] = {"name": str, "age": _int32, "score": float}


def expected_rows(rows: list[list[str]], selection: list[str], mode: str) -> list[dict[str, Any]]:
    """The rule, from its statement: PERMISSIVE pads, truncates and nulls bad selected values;
    DROPMALFORMED drops a row with a wrong field count or a bad value in a selected column."""
    out = []
    for fields in rows:
        if not fields:
            continue
        malformed = len(fields) != len(FILE_COLUMNS)
        values: dict[str, Any] = {}
        for name in selection:
            position = FILE_COLUMNS.index(name)
            raw = fields[position] if position < len(fields) else ""
            try:
                values[name] = None if raw == "" else CONVERT[name](raw)
            except ValueError:
                malformed = True
                values[name] = None
        if not (malformed and mode == "DROPMALFORMED"):
            out.append(values)
    return out


# -- parse_csv -------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["PERMISSIVE", "DROPMALFORMED", "FAILFAST"])
@pytest.mark.parametrize("selection", SELECTIONS, ids="-".join)
def test_projection_of_well_formed_csv(selection: list[str], mode: str) -> None:
    text = to_csv(WELL_FORMED)
    full = parse_csv(text, FULL, mode)
    got = parse_csv(text, sub_schema(selection), mode, FILE_COLUMNS)
    assert got.schema == sub_schema(selection)
    assert got.column_names == selection
    assert got.equals(full.select(selection))
    assert got.to_pylist() == expected_rows(WELL_FORMED, selection, mode)


@pytest.mark.parametrize("selection", PARTIAL, ids="-".join)
def test_projection_of_malformed_csv_permissive(selection: list[str]) -> None:
    text = to_csv(MALFORMED)
    full = parse_csv(text, FULL, "PERMISSIVE")
    got = parse_csv(text, sub_schema(selection), "PERMISSIVE", FILE_COLUMNS)
    assert got.schema == sub_schema(selection)
    assert got.num_rows == len([r for r in MALFORMED if r])
    assert got.equals(full.select(selection))
    assert got.to_pylist() == expected_rows(MALFORMED, selection, "PERMISSIVE")


@pytest.mark.parametrize("selection", PARTIAL, ids="-".join)
def test_projection_of_wrong_width_rows_dropmalformed(selection: list[str]) -> None:
    text = to_csv(WIDTH_MALFORMED)
    full = parse_csv(text, FULL, "DROPMALFORMED")
    got = parse_csv(text, sub_schema(selection), "DROPMALFORMED", FILE_COLUMNS)
    assert got.schema == sub_schema(selection)
    assert got.num_rows == 3  # ann, eve, fay
    assert got.equals(full.select(selection))


@pytest.mark.parametrize("selection", PARTIAL, ids="-".join)
def test_projection_of_bad_values_dropmalformed(selection: list[str]) -> None:
    """As in Spark (2.4+), only the selected columns' values can make a row malformed: a
    projection keeps every row that parsing all columns keeps, and maybe more."""
    text = to_csv(MALFORMED)
    full = parse_csv(text, FULL, "DROPMALFORMED")
    got = parse_csv(text, sub_schema(selection), "DROPMALFORMED", FILE_COLUMNS)
    assert got.schema == sub_schema(selection)
    assert got.to_pylist() == expected_rows(MALFORMED, selection, "DROPMALFORMED")
    kept = Counter(tuple(r.values()) for r in got.to_pylist())
    kept_by_full = Counter(tuple(r.values()) for r in full.select(selection).to_pylist())
    assert not kept_by_full - kept
    if selection == ["name"]:
        # gus, hal, ian, jo have bad numbers only: kept by the projection, not by the full read.
        assert {"gus", "hal", "ian", "jo"} <= {r["name"] for r in got.to_pylist()}
        assert not {"gus", "hal", "ian", "jo"} & {r["name"] for r in full.to_pylist()}


def test_unselected_columns_are_not_converted() -> None:
    text = to_csv([["ann", "not a number", "1.5"], ["bob", "31", "2.5"]])
    with pytest.raises(InputError, match="FAILFAST"):
        parse_csv(text, FULL, "FAILFAST")
    with pytest.raises(InputError, match="FAILFAST"):
        parse_csv(text, sub_schema(["age"]), "FAILFAST", FILE_COLUMNS)
    got = parse_csv(text, sub_schema(["score", "name"]), "FAILFAST", FILE_COLUMNS)
    assert got.to_pylist() == [{"score": 1.5, "name": "ann"}, {"score": 2.5, "name": "bob"}]


def test_projection_keeps_failfast_on_wrong_width() -> None:
    text = to_csv([["ann", "30", "1.5"], ["bob", "31"]])
    with pytest.raises(InputError, match="FAILFAST"):
        parse_csv(text, sub_schema(["name"]), "FAILFAST", FILE_COLUMNS)


def test_projection_of_empty_text() -> None:
    for text in (b"", b"\n", b"  \n"):
        got = parse_csv(text, sub_schema(["score", "name"]), "PERMISSIVE", FILE_COLUMNS)
        assert got.schema == sub_schema(["score", "name"])
        assert got.num_rows == 0


# -- read_encrypted_csv(columns=) ------------------------------------------------------------------

SEGMENT = 128
SMALL_PARTITIONS = 512


def translated(action: Callable[[], object]) -> object:
    """Run a Spark action, turning a failure into the cipherspark error it carries."""
    with cipherspark_errors():
        return action()


def encrypted(tmp_path: Path, kms: LocalKms, rows: list[list[str]]) -> str:
    plain = tmp_path / "people.csv"
    plain.write_bytes(to_csv([FILE_COLUMNS, *rows]))
    target = tmp_path / "people.csv.cspk"
    encrypt_path(plain, target, kms, TEST_KEY, segment_size=SEGMENT)
    return str(target)


def rows_of(df: Any) -> Counter[tuple[Any, ...]]:
    return Counter(tuple(row) for row in df.collect())


@pytest.mark.spark
def test_read_selected_columns(tmp_path: Path, kms: LocalKms, spark: SparkSession) -> None:
    path = encrypted(tmp_path, kms, WELL_FORMED)
    full = read_encrypted_csv(spark, path, kms_url=kms.url, schema=SPARK_FULL,
                              partition_bytes=SMALL_PARTITIONS)
    full_rows = [row.asDict() for row in full.collect()]
    assert len(full_rows) == len(WELL_FORMED)
    for selection in (["name"], ["score", "name"], ["age", "score", "name"]):
        df = read_encrypted_csv(spark, path, kms_url=kms.url, schema=SPARK_FULL,
                                columns=selection, partition_bytes=SMALL_PARTITIONS)
        assert df.rdd.getNumPartitions() > 1  # splits past the first skip no header line
        assert df.columns == selection
        assert df.schema == StructType([SPARK_FULL[name] for name in selection])
        assert rows_of(df) == Counter(tuple(r[c] for c in selection) for r in full_rows)
    count = read_encrypted_csv(spark, path, kms_url=kms.url, schema=SPARK_FULL,
                               columns=["name"]).count()
    assert count == len(WELL_FORMED)


@pytest.mark.spark
@pytest.mark.parametrize("mode", ["PERMISSIVE", "DROPMALFORMED"])
def test_read_selected_columns_of_malformed_csv(mode: str, tmp_path: Path, kms: LocalKms,
                                                spark: SparkSession) -> None:
    path = encrypted(tmp_path, kms, MALFORMED)
    selection = ["score", "name"]
    df = read_encrypted_csv(spark, path, kms_url=kms.url, schema=SPARK_FULL, mode=mode,
                            columns=selection, partition_bytes=SMALL_PARTITIONS)
    assert df.columns == selection
    expected = Counter(tuple(r.values()) for r in expected_rows(MALFORMED, selection, mode))
    assert rows_of(df) == expected
    if mode == "PERMISSIVE":
        full = read_encrypted_csv(spark, path, kms_url=kms.url, schema=SPARK_FULL, mode=mode,
                                  partition_bytes=SMALL_PARTITIONS)
        assert rows_of(full.select(*selection)) == expected


@pytest.mark.spark
def test_unknown_column_is_a_usage_error(tmp_path: Path, kms: LocalKms,
                                         spark: SparkSession) -> None:
    path = encrypted(tmp_path, kms, WELL_FORMED[:3])
    with pytest.raises(UsageError):
        translated(lambda: read_encrypted_csv(spark, path, kms_url=kms.url, schema=SPARK_FULL,
                                              columns=["name", "salary"]).count())


@pytest.mark.spark
def test_no_column_is_a_usage_error(tmp_path: Path, kms: LocalKms, spark: SparkSession) -> None:
    """Without a column, rows could not be counted (a well-formed file gave a schema mismatch,
    a malformed one silently no rows)."""
    path = encrypted(tmp_path, kms, MALFORMED)
    with pytest.raises(UsageError, match="at least one column"):
        translated(lambda: read_encrypted_csv(spark, path, kms_url=kms.url, schema=SPARK_FULL,
                                              columns=[]).count())


@pytest.mark.spark
@pytest.mark.parametrize("schema", [None, "name STRING, age INT, score DOUBLE"])
def test_columns_need_the_full_struct_type(schema: str | None, tmp_path: Path, kms: LocalKms,
                                           spark: SparkSession) -> None:
    path = encrypted(tmp_path, kms, WELL_FORMED[:3])
    with pytest.raises(UsageError, match="StructType"):
        read_encrypted_csv(spark, path, kms_url=kms.url, schema=schema, columns=["name"])


@pytest.mark.spark
def test_file_columns_option_is_checked(tmp_path: Path, kms: LocalKms,
                                        spark: SparkSession) -> None:
    path = encrypted(tmp_path, kms, WELL_FORMED[:3])

    def read(file_columns: str, schema: StructType) -> Callable[[], object]:
        reader = (spark.read.format(FORMAT_NAME).option("kms", kms.url)
                  .option("fileColumns", file_columns).schema(schema))
        return lambda: reader.load(path).count()

    only_name = StructType([SPARK_FULL["name"]])
    assert translated(read(json.dumps(FILE_COLUMNS), only_name)) == 3
    with pytest.raises(UsageError, match="'score' is not in fileColumns"):
        translated(read(json.dumps(["name", "age"]), StructType([SPARK_FULL["score"]])))
    for bad in ("name,age,score", '{"name": 1}', '["name", 2]'):
        with pytest.raises(UsageError, match="JSON list"):
            translated(read(bad, only_name))
