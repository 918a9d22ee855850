"""cipherspark._ddl: the canonical DDL a manifest records, parsed and spelled without a JVM.

Spark itself is the oracle for what the spellings mean (tests/spark/test_recorded_schema.py);
here, the canonical form is checked to be one spelling per schema and the refusals to say where.
"""

from __future__ import annotations

import pytest

from cipherspark._ddl import MAX_DDL_CHARS, canonical_ddl, ddl_columns
from cipherspark.errors import UsageError

SPELLINGS = [
    ("name string, age int", "`name` STRING, `age` INT"),
    ("NAME String,AGE integer", "`NAME` STRING, `AGE` INT"),
    ("a byte, b short, c long, d real", "`a` TINYINT, `b` SMALLINT, `c` BIGINT, `d` FLOAT"),
    (
        "a dec, b numeric(7), c decimal( 5 , 1 )",
        "`a` DECIMAL(10,0), `b` DECIMAL(7,0), `c` DECIMAL(5,1)",
    ),
    ("t timestamp_ltz, u timestamp_ntz, d date", "`t` TIMESTAMP, `u` TIMESTAMP_NTZ, `d` DATE"),
    ("c char(3), v varchar(10), k character(0)", "`c` CHAR(3), `v` VARCHAR(10), `k` CHAR(0)"),
    ("a int not null comment 'the \\'id\\''", "`a` INT"),
    ('a int comment "x, y"', "`a` INT"),
    ("`odd ``name`` here` string", "`odd ``name`` here` STRING"),
    (
        "s struct<a:int,b : array<map<string, struct<>>>>",
        "`s` STRUCT<`a`: INT, `b`: ARRAY<MAP<STRING, STRUCT<>>>>",
    ),
    (
        "i interval year to month, j interval second, k interval day to minute",
        "`i` INTERVAL YEAR TO MONTH, `j` INTERVAL SECOND, `k` INTERVAL DAY TO MINUTE",
    ),
    ("v variant, n void, b binary, x boolean", "`v` VARIANT, `n` VOID, `b` BINARY, `x` BOOLEAN"),
    ("1st int", "`1st` INT"),
]


@pytest.mark.parametrize(("text", "canonical"), SPELLINGS)
def test_canonical_spelling(text: str, canonical: str) -> None:
    assert canonical_ddl(text) == canonical
    assert canonical_ddl(canonical) == canonical  # a fixed point: one spelling per schema


REFUSED = [
    ("", "no columns"),
    ("   ", "no columns"),
    ("a", "a type expected, the text ended"),
    ("a int,", "a column name expected, the text ended"),
    ("a frob", "an unknown type at character 3"),
    ("a int, A string", "a column name appears twice at character 8"),
    ("s struct<x: int, X: int>", "a column name appears twice"),
    ("a decimal(39,2)", "precision 1 to 38"),
    ("a decimal(5,6)", "precision 1 to 38"),
    ("a varchar", "'(' expected"),
    ("a string collate unicode_ci", "collations are not supported"),
    ("a int b", "',' or the end expected at character 7"),
    ("a int; drop table", "an unexpected character at character 6"),
    ("a array<int", "'>' expected, the text ended"),
    ("a map<string>", "',' expected"),
    ("a interval second to day", "does not follow"),
    ("a interval year to day", "does not follow"),
    ("a interval week", "an interval unit"),
    ("a int not nul", "NULL expected"),
    ("a int comment x", "a quoted comment expected"),
    ("`unterminated int", "an unexpected character at character 1"),
    ("a " + "array<" * 70 + "int" + ">" * 70, "nested too deeply"),
]


@pytest.mark.parametrize(("text", "reason"), REFUSED)
def test_refusals_say_where(text: str, reason: str) -> None:
    with pytest.raises(UsageError, match=r"^not a Spark DDL schema: ") as raised:
        canonical_ddl(text)
    assert reason in str(raised.value)


def test_size_is_bounded() -> None:
    with pytest.raises(UsageError, match="at most"):
        canonical_ddl("a int, " * (MAX_DDL_CHARS // 7 + 1))


def test_columns() -> None:
    assert ddl_columns("a int, b struct<c: int, d: string>") == [
        ("a", "INT"),
        ("b", "STRUCT<`c`: INT, `d`: STRING>"),
    ]
