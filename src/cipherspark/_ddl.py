"""Spark DDL schemas in one canonical text, without a JVM: the schema a dataset records.

A self-describing dataset records its columns as Spark DDL in its authenticated manifest
(docs/format.md, "Recorded schema"). It is written in one canonical form, so the manifest keeps
its one encoding: every name in backquotes, types upper case as Spark's ``DataType.sql`` spells
them, fields separated by ``", "``, struct members by ``": "``, no ``NOT NULL`` (file sources
read every column as nullable, as Spark's own do) and no comments. :func:`canonical_ddl` parses
what a user writes (``cipherspark encrypt --schema``) into that form; :func:`struct_ddl` spells
a PySpark ``StructType`` (what a Spark writer is given) in it. Both run where no JVM is: the
``encrypt`` command starts no Spark, and a Python data source's writer has no SparkContext
(``StructType.toDDL`` needs one).

The grammar is the part of Spark's DDL a stored table's columns use (the types of
``pyspark.sql.types`` that have a DDL spelling); collations, defaults and user-defined types
are refused rather than recorded half-understood.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from cipherspark.errors import UsageError

if TYPE_CHECKING:
    from pyspark.sql.types import DataType, StructType

__all__ = ["MAX_DDL_CHARS", "canonical_ddl", "ddl_columns", "struct_ddl"]

#: The longest recorded schema: 10,000 columns of 100 characters fit.
MAX_DDL_CHARS = 1 << 20
# Deeper nesting than any real table's; a bound so that parsing cannot exhaust the stack.
_MAX_DEPTH = 64

_PRIMITIVES = {
    "BOOLEAN": "BOOLEAN",
    "TINYINT": "TINYINT",
    "BYTE": "TINYINT",
    "SMALLINT": "SMALLINT",
    "SHORT": "SMALLINT",
    "INT": "INT",
    "INTEGER": "INT",
    "BIGINT": "BIGINT",
    "LONG": "BIGINT",
    "FLOAT": "FLOAT",
    "REAL": "FLOAT",
    "DOUBLE": "DOUBLE",
    "DATE": "DATE",
    "TIMESTAMP": "TIMESTAMP",
    "TIMESTAMP_LTZ": "TIMESTAMP",
    "TIMESTAMP_NTZ": "TIMESTAMP_NTZ",
    "STRING": "STRING",
    "BINARY": "BINARY",
    "VOID": "VOID",
    "VARIANT": "VARIANT",
}
_YEAR_MONTH = ("YEAR", "MONTH")
_DAY_TIME = ("DAY", "HOUR", "MINUTE", "SECOND")
_TOKEN = re.compile(
    r"\s*(?:(?P<quoted>`(?:[^`]|``)*`)|(?P<word>[A-Za-z0-9_]+)|(?P<string>'(?:[^'\\]|\\.)*'"
    r"|\"(?:[^\"\\]|\\.)*\")|(?P<punct>[<>(),:]))",
    re.DOTALL,
)


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


class _Parser:
    """Recursive descent over the tokens of one DDL text."""

    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str, int]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            match = _TOKEN.match(text, pos)
            if match is None or match.lastgroup is None:
                raise self._error("an unexpected character", pos + _lead(text, pos))
            kind = match.lastgroup
            self.tokens.append((kind, match.group(kind), match.start(kind)))
            pos = match.end()
        self.index = 0
        self.length = len(text)

    @staticmethod
    def _error(what: str, at: int) -> UsageError:
        return UsageError(f"not a Spark DDL schema: {what} at character {at + 1}")

    def _peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def _here(self) -> int:
        """Where the next token starts (the text's end if there is none)."""
        token = self._peek()
        return self.length if token is None else token[2]

    def _next(self, what: str) -> tuple[str, str, int]:
        token = self._peek()
        if token is None:
            raise self._error(f"{what} expected, the text ended", self.length)
        self.index += 1
        return token

    def _punct(self, symbol: str) -> None:
        kind, value, at = self._next(f"'{symbol}'")
        if kind != "punct" or value != symbol:
            raise self._error(f"'{symbol}' expected", at)

    def _at_punct(self, symbol: str) -> bool:
        token = self._peek()
        return token is not None and token[0] == "punct" and token[1] == symbol

    def _at_word(self, *words: str) -> bool:
        token = self._peek()
        return token is not None and token[0] == "word" and token[1].upper() in words

    def _int(self) -> int:
        kind, value, at = self._next("a number")
        if kind != "word" or not value.isdigit() or len(value) > 9:
            raise self._error("a number expected", at)
        return int(value)

    def _name(self) -> str:
        kind, value, at = self._next("a column name")
        if kind == "quoted":
            return value[1:-1].replace("``", "`")
        if kind == "word":
            return value
        raise self._error("a column name expected", at)

    def fields(self, depth: int) -> list[tuple[str, str]]:
        """``name type [NOT NULL] [COMMENT '...']``, separated by commas: names and canonical
        types."""
        out = []
        names: set[str] = set()
        while True:
            at = self._here()
            name = self._name()
            if name.lower() in names:
                # Spark refuses duplicate columns (case-insensitively, by default) when it reads.
                raise self._error("a column name appears twice", at)
            names.add(name.lower())
            if self._at_punct(":"):
                self._punct(":")
            spelled = self.type(depth)
            if self._at_word("NOT"):
                self._next("NOT")
                kind, value, at = self._next("NULL")
                if value.upper() != "NULL":
                    raise self._error("NULL expected after NOT", at)
            if self._at_word("COMMENT"):
                self._next("COMMENT")
                kind, _, at = self._next("a quoted comment")
                if kind != "string":
                    raise self._error("a quoted comment expected", at)
            out.append((name, spelled))
            if not self._at_punct(","):
                return out
            self._punct(",")

    def type(self, depth: int) -> str:
        if depth > _MAX_DEPTH:
            raise self._error("types nested too deeply", self._here())
        kind, value, at = self._next("a type")
        word = value.upper()
        if kind != "word":
            raise self._error("a type expected", at)
        if word in _PRIMITIVES:
            if word == "STRING" and self._at_word("COLLATE"):
                raise self._error("collations are not supported", self._here())
            return _PRIMITIVES[word]
        if word in ("DECIMAL", "DEC", "NUMERIC"):
            precision, scale = 10, 0
            if self._at_punct("("):
                self._punct("(")
                precision = self._int()
                if self._at_punct(","):
                    self._punct(",")
                    scale = self._int()
                self._punct(")")
            if not 1 <= precision <= 38 or scale > precision:
                raise self._error("a decimal has precision 1 to 38 and scale 0 to precision", at)
            return f"DECIMAL({precision},{scale})"
        if word in ("CHAR", "CHARACTER", "VARCHAR"):
            self._punct("(")
            length = self._int()
            self._punct(")")
            return f"{'VARCHAR' if word == 'VARCHAR' else 'CHAR'}({length})"
        if word == "ARRAY":
            self._punct("<")
            element = self.type(depth + 1)
            self._punct(">")
            return f"ARRAY<{element}>"
        if word == "MAP":
            self._punct("<")
            key = self.type(depth + 1)
            self._punct(",")
            value_type = self.type(depth + 1)
            self._punct(">")
            return f"MAP<{key}, {value_type}>"
        if word == "STRUCT":
            self._punct("<")
            if self._at_punct(">"):
                self._punct(">")
                return "STRUCT<>"
            members = self.fields(depth + 1)
            self._punct(">")
            return "STRUCT<" + ", ".join(f"{_quote(n)}: {t}" for n, t in members) + ">"
        if word == "INTERVAL":
            return self._interval()
        raise self._error("an unknown type", at)

    def _interval(self) -> str:
        _, start, at = self._next("an interval unit")
        start = start.upper()
        units = _YEAR_MONTH if start in _YEAR_MONTH else _DAY_TIME
        if start not in units:
            raise self._error("an interval unit (YEAR, MONTH, DAY, HOUR, MINUTE, SECOND)", at)
        end = start
        if self._at_word("TO"):
            self._next("TO")
            _, end, at = self._next("an interval unit")
            end = end.upper()
            if end not in units or units.index(end) < units.index(start):
                raise self._error("an interval's last unit does not follow its first", at)
        return f"INTERVAL {start}" if end == start else f"INTERVAL {start} TO {end}"

    def schema(self) -> list[tuple[str, str]]:
        if not self.tokens:
            raise self._error("no columns", 0)
        columns = self.fields(0)
        token = self._peek()
        if token is not None:
            raise self._error("',' or the end expected", token[2])
        return columns


def _lead(text: str, pos: int) -> int:
    """How many blanks precede the first non-blank character at or after ``pos``."""
    return len(text[pos:]) - len(text[pos:].lstrip())


def canonical_ddl(text: str) -> str:
    """``text`` (a Spark DDL column list, e.g. ``"name string, age decimal(5,1)"``) in the
    canonical form a manifest records (``"`name` STRING, `age` DECIMAL(5,1)"``);
    :class:`UsageError` saying where it is not one."""
    return ", ".join(f"{_quote(name)} {spelled}" for name, spelled in ddl_columns(text))


def ddl_columns(text: str) -> list[tuple[str, str]]:
    """The columns of the DDL ``text``: each name and its type in canonical spelling;
    :class:`UsageError` as :func:`canonical_ddl`."""
    if len(text) > MAX_DDL_CHARS:
        raise UsageError(f"a schema is at most {MAX_DDL_CHARS} characters")
    return _Parser(text).schema()


def _type_ddl(data_type: DataType) -> str | None:
    from pyspark.sql import types as t

    if isinstance(data_type, t.StructType):
        members = [(f.name, _type_ddl(f.dataType)) for f in data_type.fields]
        if any(spelled is None for _, spelled in members):
            return None
        return "STRUCT<" + ", ".join(f"{_quote(n)}: {s}" for n, s in members) + ">"
    if isinstance(data_type, t.ArrayType):
        element = _type_ddl(data_type.elementType)
        return None if element is None else f"ARRAY<{element}>"
    if isinstance(data_type, t.MapType):
        key, value = _type_ddl(data_type.keyType), _type_ddl(data_type.valueType)
        return None if key is None or value is None else f"MAP<{key}, {value}>"
    if isinstance(data_type, t.DecimalType):
        return f"DECIMAL({data_type.precision},{data_type.scale})"
    if isinstance(data_type, t.VarcharType):
        return f"VARCHAR({data_type.length})"
    if isinstance(data_type, t.CharType):
        return f"CHAR({data_type.length})"
    if isinstance(data_type, t.StringType):
        # A collated string compares differently: recorded as STRING it would change answers.
        return "STRING" if getattr(data_type, "collation", "UTF8_BINARY") == "UTF8_BINARY" else None
    if isinstance(data_type, t.YearMonthIntervalType):
        start, end = _YEAR_MONTH[data_type.startField], _YEAR_MONTH[data_type.endField]
        return f"INTERVAL {start}" if start == end else f"INTERVAL {start} TO {end}"
    if isinstance(data_type, t.DayTimeIntervalType):
        start, end = _DAY_TIME[data_type.startField], _DAY_TIME[data_type.endField]
        return f"INTERVAL {start}" if start == end else f"INTERVAL {start} TO {end}"
    simple = {
        t.BooleanType: "BOOLEAN",
        t.ByteType: "TINYINT",
        t.ShortType: "SMALLINT",
        t.IntegerType: "INT",
        t.LongType: "BIGINT",
        t.FloatType: "FLOAT",
        t.DoubleType: "DOUBLE",
        t.DateType: "DATE",
        t.TimestampType: "TIMESTAMP",
        t.TimestampNTZType: "TIMESTAMP_NTZ",
        t.BinaryType: "BINARY",
        t.NullType: "VOID",
        t.VariantType: "VARIANT",
    }
    return simple.get(type(data_type))  # a UDT (ML vectors), calendar intervals: not recorded


def struct_ddl(schema: StructType) -> str | None:
    """``schema``'s columns in the canonical DDL form, or ``None`` if a column's type has no
    DDL spelling (a user-defined type such as an ML vector, a collated string): such a dataset
    records no schema, and readers infer as before."""
    if not schema.fields:
        return None
    fields = [(f.name, _type_ddl(f.dataType)) for f in schema.fields]
    if any(spelled is None for _, spelled in fields):
        return None
    text = ", ".join(f"{_quote(name)} {spelled}" for name, spelled in fields)
    # What is recorded must be what readers accept: checked by the readers' own parser (so a
    # name Spark would refuse, e.g. the same nested field twice, records nothing).
    try:
        return text if canonical_ddl(text) == text else None
    except UsageError:
        return None
