"""Encrypted text and JSON Lines (``cipherspark_text``, :func:`read_encrypted_json`): every read
answers exactly as Spark's own text and JSON readers answer on the plaintext, in the same
session; writes decrypt to what Spark's own writers produce; storage's changes are refused.

The plaintext oracle is ``spark.read.text`` / ``spark.read.json`` on the very bytes that were
encrypted, so nothing here states an expected answer by hand.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StringType, StructField, StructType

from cipherspark.crypto import CONTENT_TYPE_JSON_LINES, CONTENT_TYPE_TEXT, ContainerHeader
from cipherspark.crypto.container import read_header
from cipherspark.crypto.manifest import list_parts
from cipherspark.errors import IntegrityError, UsageError
from cipherspark.files import encrypt_path
from cipherspark.kms import LocalKms
from cipherspark.spark import (
    TEXT_FORMAT_NAME,
    read_encrypted_json,
    read_encrypted_text,
    write_encrypted_json,
    write_encrypted_text,
)
from cipherspark.spark._errors import cipherspark_errors
from tests.conftest import TEST_KEY

pytestmark = pytest.mark.spark

SEGMENT = 64  # the smallest sizes put segment boundaries inside lines, CRLFs and characters

TEXTS = {
    "plain": b"alpha\nbeta\ngamma\n",
    "no-final-newline": b"alpha\nbeta",
    "empty-lines": b"\n\nalpha\n\n\nbeta\n\n",
    "crlf": b"alpha\r\nbeta\r\n\r\ngamma\r\n",
    "lone-cr": b"alpha\rbeta\r\rgamma\n",
    "mixed": b"a\r\nb\rc\nd\r",
    "unicode": "caf\u00e9 \u2028 na\u00efve\n\u65e5\u672c\u8a9e\x0c\x85 fin\n".encode(),
    "invalid-utf8": b"ok\n\xff\xfe bad\n\xc3\n",
    "long-lines": b"".join(bytes([65 + i % 26]) * (37 * i + 1) + b"\n" for i in range(40)),
    "only-newline": b"\n",
}


def _encrypt(kms: LocalKms, tmp_path: Path, name: str, data: bytes) -> tuple[Path, Path]:
    plain = tmp_path / f"{name}.txt"
    plain.write_bytes(data)
    target = tmp_path / f"{name}.txt.cspk"
    encrypt_path(plain, target, kms, TEST_KEY, segment_size=SEGMENT)
    return plain, target


def _rows(df: DataFrame) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in df.collect()]


@pytest.mark.parametrize("name", sorted(TEXTS))
def test_text_lines_are_spark_s(
    spark: SparkSession, kms: LocalKms, tmp_path: Path, name: str
) -> None:
    plain, target = _encrypt(kms, tmp_path, name, TEXTS[name])
    # Tiny partitions: every split boundary falls somewhere inside the file.
    encrypted = read_encrypted_text(spark, str(target), kms_url=kms.url, partition_bytes=SEGMENT)
    assert encrypted.rdd.getNumPartitions() > 1 or len(TEXTS[name]) <= SEGMENT
    expected = _rows(spark.read.text(str(plain)))
    assert _rows(encrypted) == expected
    assert encrypted.schema == spark.read.text(str(plain)).schema
    assert encrypted.count() == len(expected)  # the same DataFrame, used again


def test_wholetext_is_spark_s(spark: SparkSession, kms: LocalKms, tmp_path: Path) -> None:
    folder = tmp_path / "plain"
    folder.mkdir()
    for name, data in TEXTS.items():
        (folder / f"{name}.txt").write_bytes(data)
    (folder / "empty.txt").write_bytes(b"")
    target = tmp_path / "docs"
    encrypt_path(folder, target, kms, TEST_KEY, segment_size=SEGMENT)
    encrypted = read_encrypted_text(spark, str(target), kms_url=kms.url, wholetext=True)
    expected = spark.read.text(str(folder), wholetext=True)
    assert Counter(_rows(encrypted)) == Counter(_rows(expected))
    assert encrypted.rdd.getNumPartitions() == len(TEXTS) + 1  # a file is one partition


def test_the_text_source_takes_only_its_schema(
    spark: SparkSession, kms: LocalKms, tmp_path: Path
) -> None:
    _, target = _encrypt(kms, tmp_path, "plain", TEXTS["plain"])
    reader = spark.read.format(TEXT_FORMAT_NAME).option("kms", kms.url)
    wrong = StructType([StructField("line", StringType())])
    with pytest.raises(Exception, match="schema is 'value string'"):
        reader.schema(wrong).load(str(target)).collect()


# -- JSON Lines ---------------------------------------------------------------------------------

JSON_LINES = [
    '{"id": 1, "name": "ann", "tags": ["a", "b"], "address": {"city": "Oslo", "zip": 150}}',
    "",
    '{"id": 2, "name": null, "price": 12.50, "when": "2024-02-29", "ts": "2024-02-29T10:11:12Z"}',
    '{"id": "3", "name": "bob", "extra": true}',
    "not json at all",
    '[{"id": 4, "name": "arr-1"}, {"id": 5, "name": "arr-2"}]',
    '{"id": 6, "name": "caf\\u00e9 \u65e5", "address": {"city": "Bergen"}}\r',
    '{"id": 7.5, "price": 2.5e-3, "tags": []}',
    '{"id": 8, "nested": {"deep": {"deeper": [1, 2, {"x": null}]}}}',
    '{"id": 9',
    '{"id": 10, "name": "the \\"quoted\\" one", "price": -0.001}',
    # Read as a string, a number keeps its text: Spark's file reader slices the raw bytes.
    '{"id": 11, "address": 1234567890123456789012345678901234567890.50, "nested": 1.0e-7}',
]
JSON_TEXT = ("\n".join(JSON_LINES * 7) + "\n").encode()

SCHEMAS = {
    "inferred": None,
    "ddl": (
        "id bigint, name string, tags array<string>, address struct<city: string, zip: int>, "
        "price decimal(10,3), `when` date, ts timestamp, _corrupt_record string"
    ),
    "ddl-no-corrupt-column": "id int, name string, price double",
    "strings": "id string, address string, nested string",
}
OPTIONS: dict[str, dict[str, Any]] = {
    "default": {},
    "dropmalformed": {"mode": "DROPMALFORMED"},
    "primitives-as-string": {"primitivesAsString": True},
    "corrupt-column-renamed": {"columnNameOfCorruptRecord": "broken"},
    "no-null-fields-dropped": {"dropFieldIfAllNull": True, "prefersDecimal": True},
}


@pytest.fixture
def json_table(kms: LocalKms, tmp_path: Path) -> tuple[Path, Path]:
    plain = tmp_path / "people.json"
    plain.write_bytes(JSON_TEXT)
    target = tmp_path / "people.json.cspk"
    encrypt_path(plain, target, kms, TEST_KEY, segment_size=SEGMENT)
    return plain, target


def _plain_json(
    spark: SparkSession, path: Path, schema: str | None, options: dict[str, Any]
) -> DataFrame:
    reader = spark.read.options(
        **{k: str(v).lower() if isinstance(v, bool) else v for k, v in options.items()}
    )
    if schema is not None:
        reader = reader.schema(schema)
    return reader.json(str(path))


@pytest.mark.parametrize("schema", sorted(SCHEMAS))
@pytest.mark.parametrize("options", sorted(OPTIONS))
def test_json_reads_are_spark_s(
    spark: SparkSession,
    kms: LocalKms,
    json_table: tuple[Path, Path],
    schema: str,
    options: str,
) -> None:
    plain, target = json_table
    expected = _plain_json(spark, plain, SCHEMAS[schema], OPTIONS[options])
    encrypted = read_encrypted_json(
        spark,
        str(target),
        kms_url=kms.url,
        schema=SCHEMAS[schema],
        options=OPTIONS[options],
        partition_bytes=4 * SEGMENT,
    )
    assert encrypted.rdd.getNumPartitions() > 1
    assert encrypted.schema == expected.schema
    assert _rows(encrypted) == _rows(expected)
    if OPTIONS[options].get("mode") == "DROPMALFORMED":
        # Spark's file reader parses only the columns a query uses, so in DROPMALFORMED a row
        # whose bad value sits in another column survives some queries and not others (line
        # 11's address here). The encrypted reader parses every column for every query, as
        # Spark does for a cached DataFrame: that answer is the one to compare with
        # (docs/architecture.md, "JSON Lines and text").
        expected = expected.cache()
    # The same DataFrame, reused by differently shaped queries.
    for query in (
        lambda df: df.groupBy("id").count(),
        lambda df: df.filter("id is not null").select("id"),
        lambda df: df.selectExpr("count(*)", "count(id)"),
    ):
        assert Counter(_rows(query(encrypted))) == Counter(_rows(query(expected)))


def test_json_with_a_struct_type_schema(
    spark: SparkSession, kms: LocalKms, json_table: tuple[Path, Path]
) -> None:
    plain, target = json_table
    expected = spark.read.json(str(plain))
    encrypted = read_encrypted_json(spark, str(target), kms_url=kms.url, schema=expected.schema)
    assert _rows(encrypted) == _rows(expected)


def test_json_failfast_fails_as_spark_does(
    spark: SparkSession, kms: LocalKms, json_table: tuple[Path, Path]
) -> None:
    plain, target = json_table
    schema = SCHEMAS["ddl-no-corrupt-column"]
    with pytest.raises(Exception, match=r"FAILFAST|Malformed"):
        _plain_json(spark, plain, schema, {"mode": "FAILFAST"}).collect()
    encrypted = read_encrypted_json(
        spark, str(target), kms_url=kms.url, schema=schema, options={"mode": "FAILFAST"}
    )
    with pytest.raises(Exception, match=r"FAILFAST|Malformed") as caught:
        encrypted.collect()
    # The record that failed is the owner's data: not in the message.
    assert "not json at all" not in str(caught.value)


def test_json_multiline_reads_whole_documents(
    spark: SparkSession, kms: LocalKms, tmp_path: Path
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    documents = [
        {"id": 1, "items": [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 1}]},
        [{"id": 2}, {"id": 3, "items": []}],
        {"id": 4, "note": "spans\nlines"},
    ]
    for i, document in enumerate(documents):
        (folder / f"doc-{i}.json").write_text(json.dumps(document, indent=2))
    (folder / "broken.json").write_text('{\n  "id": 5,\n')
    target = tmp_path / "docs.cspk"
    encrypt_path(folder, target, kms, TEST_KEY, segment_size=SEGMENT)
    expected = spark.read.option("multiLine", "true").json(str(folder))
    encrypted = read_encrypted_json(
        spark, str(target), kms_url=kms.url, options={"multiLine": True}
    )
    assert encrypted.schema == expected.schema
    assert Counter(map(str, _rows(encrypted))) == Counter(map(str, _rows(expected)))


@pytest.mark.parametrize("option", ["encoding", "lineSep", "charset"])
def test_json_layout_options_are_refused(
    spark: SparkSession, kms: LocalKms, json_table: tuple[Path, Path], option: str
) -> None:
    with pytest.raises(UsageError, match=option):
        read_encrypted_json(spark, str(json_table[1]), kms_url=kms.url, options={option: "x"})


# -- writes ---------------------------------------------------------------------------------------


def _content_types(folder: Path) -> set[str]:
    types = set()
    for part in list_parts(folder):
        with part.open("rb") as stream:
            header, _ = read_header(stream)
        assert isinstance(header, ContainerHeader)
        types.add(header.content_type)
    return types


def test_json_writes_are_spark_s(
    spark: SparkSession, kms: LocalKms, json_table: tuple[Path, Path], tmp_path: Path
) -> None:
    plain, _ = json_table
    # Without _corrupt_record: read back, a column of that name is the reader's, not data.
    ddl = SCHEMAS["ddl"]
    assert ddl is not None
    df = spark.read.schema(ddl).json(str(plain)).drop("_corrupt_record").repartition(3)
    out = tmp_path / "out"
    write_encrypted_json(df, str(out), kms_url=kms.url, key=TEST_KEY)
    assert _content_types(out) == {CONTENT_TYPE_JSON_LINES}
    assert all(p.name.endswith(".json.cspk") for p in list_parts(out))
    # The lines are Spark's own JSON for those rows, and read back as the rows.
    lines = read_encrypted_text(spark, str(out), kms_url=kms.url)
    with warnings.catch_warnings():  # toJSON's notice that it will return a DataFrame
        warnings.simplefilter("ignore", UserWarning)
        expected = df.toJSON().collect()
    assert Counter(r.value for r in lines.collect()) == Counter(expected)
    back = read_encrypted_json(spark, str(out), kms_url=kms.url, schema=df.schema)
    assert sorted(map(repr, _rows(back))) == sorted(map(repr, _rows(df)))


def test_text_writes_are_spark_s(spark: SparkSession, kms: LocalKms, tmp_path: Path) -> None:
    values = ["one", None, "", "tab\there", "caf\u00e9", "last"]
    df = spark.createDataFrame([(v,) for v in values], "value string").coalesce(1)
    out = tmp_path / "out"
    write_encrypted_text(df, str(out), kms_url=kms.url, key=TEST_KEY)
    assert _content_types(out) == {CONTENT_TYPE_TEXT}
    back = read_encrypted_text(spark, str(out), kms_url=kms.url)
    # Spark's text writer writes a null as an empty line, which reads back as "".
    assert [r.value for r in back.collect()] == ["" if v is None else v for v in values]


def test_text_writes_take_one_string_column(
    spark: SparkSession, kms: LocalKms, tmp_path: Path
) -> None:
    df = spark.createDataFrame([("a", 1)], "name string, n int")
    with pytest.raises(UsageError, match="one string column"):
        write_encrypted_text(df, str(tmp_path / "out"), kms_url=kms.url, key=TEST_KEY)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out*"))  # no staging left behind


# -- storage attacks ------------------------------------------------------------------------------


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("read", ["text", "json"])
def test_a_changed_byte_is_refused(
    spark: SparkSession, kms: LocalKms, json_table: tuple[Path, Path], read: str
) -> None:
    _, target = json_table
    _flip(target, target.stat().st_size - 40)
    with pytest.raises(IntegrityError) as caught, cipherspark_errors():
        if read == "text":
            read_encrypted_text(spark, str(target), kms_url=kms.url).collect()
        else:
            read_encrypted_json(spark, str(target), kms_url=kms.url, schema="id int").collect()
    assert "ann" not in str(caught.value)


def test_a_part_of_another_dataset_is_refused(
    spark: SparkSession, kms: LocalKms, tmp_path: Path
) -> None:
    df = spark.createDataFrame([(f"row {i}",) for i in range(40)], "value string")
    first, second = tmp_path / "first", tmp_path / "second"
    write_encrypted_text(df.coalesce(1), str(first), kms_url=kms.url, key=TEST_KEY)
    write_encrypted_text(df.coalesce(1), str(second), kms_url=kms.url, key=TEST_KEY)
    (part,) = list_parts(first)
    (other,) = list_parts(second)
    part.write_bytes(other.read_bytes())  # same key, same size: a valid container
    with pytest.raises(IntegrityError), cipherspark_errors():
        read_encrypted_json(spark, str(first), kms_url=kms.url, schema="value string").collect()


def test_a_dropped_part_is_refused(spark: SparkSession, kms: LocalKms, tmp_path: Path) -> None:
    df = spark.createDataFrame([(f"row {i}",) for i in range(40)], "value string")
    out = tmp_path / "out"
    write_encrypted_text(df.repartition(2), str(out), kms_url=kms.url, key=TEST_KEY)
    parts = list_parts(out)
    assert len(parts) == 2
    parts[1].unlink()
    with pytest.raises(IntegrityError), cipherspark_errors():
        read_encrypted_text(spark, str(out), kms_url=kms.url).collect()
