"""Filters evaluated on Arrow tables before rows reach Spark, and their wire form.

Spark's own CSV source filters inside its parser (``spark.sql.csv.filterPushdown.enabled``), so
far fewer rows cross into the JVM. cipherspark does the same, but not through PySpark's
``DataSourceReader.pushFilters``: in PySpark 4.1 the reader state that pushdown produces is
stored on the relation, shared by every later scan of the same DataFrame, so a filter pushed for
one query silently dropped rows from the next (issue 11). PySpark 4.3.0 is the same (its
``PythonScanBuilder`` still calls ``ds.setReadInfo``, checked with javap); Spark's main branch
has since moved the read info into the scan builder. Instead
:func:`~cipherspark.spark.encrypted_sql` reads Spark's optimized plan, and each re-read scan
carries its filters as a reader *option* (:func:`filters_to_json`): part of that relation's
identity, never state shared between queries.

Filters are the ``pyspark.sql.datasource`` classes; each becomes a pyarrow compute expression with
SQL's three-valued logic (a comparison with null drops the row, as in Spark). The rule that keeps
answers right: Arrow may keep a row Spark would drop (Spark evaluates every filter again), never
drop a row Spark would keep. The tests compare results with Spark's own.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql.datasource import (
    EqualNullSafe,
    EqualTo,
    Filter,
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

__all__ = [
    "COMPARISONS",
    "And",
    "Or",
    "apply_filters",
    "combine",
    "filters_from_json",
    "filters_to_json",
    "to_expression",
]


# PySpark's filter classes stop at Not; Spark's own translation (sources.Filter) also has And and
# Or, which TPC-H-style predicates need (``a = 1 OR b = 2`` is one conjunct).
@dataclass(frozen=True)
class And(Filter):
    """Both ``left`` and ``right`` hold."""

    left: Filter
    right: Filter


@dataclass(frozen=True)
class Or(Filter):
    """``left`` or ``right`` holds (SQL's three-valued OR)."""

    left: Filter
    right: Filter


_SIMPLE = (bool, int, float, str)


def _value_ok(value: object) -> bool:
    if isinstance(value, float) and math.isnan(value):
        return False  # NaN ordering differs between Spark (NaN is largest) and Arrow
    if isinstance(value, datetime):
        # Timestamps: Spark hands them over in the session time zone; not worth the risk.
        return False
    if isinstance(value, Decimal):
        return value.is_finite()
    return isinstance(value, (*_SIMPLE, date))


def _literal(value: Any) -> Any:
    """A comparison operand: Decimals and dates as Arrow scalars, which compare exactly with
    decimal128 / date32 columns (Arrow promotes precision and scale; no float rounding)."""
    if isinstance(value, Decimal | date):
        return pa.scalar(value)
    return value


def _column(filter_: Filter, schema: pa.Schema) -> pc.Expression | None:
    path: tuple[str, ...] = tuple(getattr(filter_, "attribute", ()))
    if len(path) != 1 or path[0] not in schema.names:
        return None  # nested fields are left to Spark
    return pc.field(path[0])


def to_expression(filter_: Filter, schema: pa.Schema) -> pc.Expression | None:
    """The Arrow expression for one Spark filter on a table of ``schema``, or None if it is not
    translated."""
    if isinstance(filter_, Not):
        inner = to_expression(filter_.child, schema)
        return None if inner is None else ~inner
    if isinstance(filter_, And | Or):
        # Both sides or nothing: dropping one side of an OR would drop rows Spark keeps.
        left, right = to_expression(filter_.left, schema), to_expression(filter_.right, schema)
        if left is None or right is None:
            return None
        return left & right if isinstance(filter_, And) else left | right
    column = _column(filter_, schema)
    if column is None:
        return None
    floating = pa.types.is_floating(schema.field(filter_.attribute[0]).type)  # type: ignore[attr-defined]
    if isinstance(filter_, IsNull):
        return column.is_null()
    if isinstance(filter_, IsNotNull):
        return column.is_valid()
    if isinstance(filter_, In):
        values = list(filter_.value)
        if not values or not all(_value_ok(v) for v in values):
            return None
        try:
            return column.isin(pa.array(values))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            return None  # mixed or too-wide values: left to Spark
    value = getattr(filter_, "value", None)
    if not _value_ok(value):
        return None
    try:
        operand = _literal(value)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None  # e.g. a Decimal wider than 38 digits
    if isinstance(filter_, EqualTo | EqualNullSafe):
        return column == operand
    # Spark orders NaN above every number (NaN > 1.0 is true), Arrow's comparisons with NaN are
    # false: without the is_nan term a NaN row would be dropped that Spark keeps.
    if isinstance(filter_, GreaterThan):
        return (column > operand) | pc.is_nan(column) if floating else column > operand
    if isinstance(filter_, GreaterThanOrEqual):
        return (column >= operand) | pc.is_nan(column) if floating else column >= operand
    if isinstance(filter_, LessThan):
        return column < operand
    if isinstance(filter_, LessThanOrEqual):
        return column <= operand
    if isinstance(value, str):
        if isinstance(filter_, StringStartsWith):
            return pc.starts_with(column, pattern=value)
        if isinstance(filter_, StringEndsWith):
            return pc.ends_with(column, pattern=value)
        if isinstance(filter_, StringContains):
            return pc.match_substring(column, pattern=value)
    return None


def combine(filters: Iterable[Filter], schema: pa.Schema) -> pc.Expression | None:
    """The AND of every translatable filter (None if there is none)."""
    combined: pc.Expression | None = None
    for filter_ in filters:
        expression = to_expression(filter_, schema)
        if expression is not None:
            combined = expression if combined is None else combined & expression
    return combined


def apply_filters(table: pa.Table, expression: pc.Expression | None) -> pa.Table:
    """``table`` without the rows ``expression`` rejects (or is null for).

    If Arrow cannot evaluate the expression on these column types, the table is returned whole:
    Spark evaluates every filter again anyway.
    """
    if expression is None:
        return table
    try:
        return table.filter(expression)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return table


# -- wire form: the reader option ``pushedFilters`` ----------------------------------------------

#: The comparison filters by class name (Spark's sources.Filter names them the same way).
COMPARISONS: dict[str, type[Filter]] = {
    cls.__name__: cls
    for cls in (
        EqualTo,
        EqualNullSafe,
        GreaterThan,
        GreaterThanOrEqual,
        LessThan,
        LessThanOrEqual,
        StringStartsWith,
        StringEndsWith,
        StringContains,
    )
}
_UNARY: dict[str, type[Filter]] = {cls.__name__: cls for cls in (IsNull, IsNotNull)}


def _value_to_json(value: Any) -> dict[str, Any]:
    # bool before int: bool is an int in Python.
    if isinstance(value, bool):
        return {"bool": value}
    if isinstance(value, int):
        return {"int": value}
    if isinstance(value, float):
        return {"float": value}
    if isinstance(value, str):
        return {"str": value}
    if isinstance(value, Decimal):
        return {"decimal": str(value)}
    if isinstance(value, date) and not isinstance(value, datetime):
        return {"date": value.isoformat()}
    raise ValueError(f"no wire form for a filter value of type {type(value).__name__}")


def _value_from_json(data: Any) -> Any:
    if not isinstance(data, dict) or len(data) != 1:
        raise ValueError("a filter value is an object with one member")
    ((kind, value),) = data.items()
    value = value if isinstance(value, bool | int | float | str) else None
    checks: dict[str, type | tuple[type, ...]] = {
        "bool": bool,
        "int": int,
        "float": (int, float),
        "str": str,
        "decimal": str,
        "date": str,
    }
    if kind not in checks or not isinstance(value, checks[kind]):
        raise ValueError(f"bad filter value {kind!r}")
    if kind in ("int", "float") and isinstance(value, bool):
        raise ValueError("bad filter value")
    if kind == "float":
        return float(value)  # type: ignore[arg-type]  # checked: int or float
    if kind == "decimal":
        return Decimal(str(value))
    if kind == "date":
        return date.fromisoformat(str(value))
    return value


def _filter_to_json(filter_: Filter) -> dict[str, Any]:
    name = type(filter_).__name__
    if isinstance(filter_, Not):
        return {"Not": _filter_to_json(filter_.child)}
    if isinstance(filter_, And | Or):
        return {name: [_filter_to_json(filter_.left), _filter_to_json(filter_.right)]}
    column = list(filter_.attribute)  # type: ignore[attr-defined]
    if name in _UNARY:
        return {name: {"column": column}}
    if isinstance(filter_, In):
        return {"In": {"column": column, "values": [_value_to_json(v) for v in filter_.value]}}
    if name in COMPARISONS:
        return {name: {"column": column, "value": _value_to_json(filter_.value)}}  # type: ignore[attr-defined]
    raise ValueError(f"no wire form for filter {name}")


def _filter_from_json(data: Any) -> Filter:
    if not isinstance(data, dict) or len(data) != 1:
        raise ValueError("a filter is an object with one member")
    ((name, body),) = data.items()
    if name == "Not":
        return Not(_filter_from_json(body))
    if name in ("And", "Or"):
        if not isinstance(body, list) or len(body) != 2:
            raise ValueError(f"{name} needs a list of two filters")
        cls = And if name == "And" else Or
        return cls(_filter_from_json(body[0]), _filter_from_json(body[1]))
    if not isinstance(body, dict):
        raise ValueError("bad filter")
    column = body.get("column")
    if (
        not isinstance(column, list)
        or not column
        or not all(isinstance(part, str) for part in column)
    ):
        raise ValueError("a filter names its column as a non-empty list of strings")
    path = tuple(column)
    if name in _UNARY:
        return _UNARY[name](path)  # type: ignore[call-arg]
    if name == "In":
        values = body.get("values")
        if not isinstance(values, list):
            raise ValueError("In needs a list of values")
        return In(path, tuple(_value_from_json(v) for v in values))
    if name in COMPARISONS:
        return COMPARISONS[name](path, _value_from_json(body.get("value")))  # type: ignore[call-arg]
    raise ValueError(f"unknown filter {name!r}")


def filters_to_json(filters: Iterable[Filter]) -> str:
    """The reader option that carries ``filters`` (see :func:`filters_from_json`)."""
    return json.dumps([_filter_to_json(f) for f in filters], separators=(",", ":"), sort_keys=True)


def filters_from_json(text: str) -> tuple[Filter, ...]:
    """The filters of a ``pushedFilters`` option; :class:`ValueError` if it is malformed."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError("pushedFilters is not JSON") from exc
    if not isinstance(data, list):
        raise ValueError("pushedFilters is a JSON list")
    try:
        return tuple(_filter_from_json(item) for item in data)
    except (InvalidOperation, TypeError) as exc:
        raise ValueError("pushedFilters holds a malformed value") from exc
