"""Filters Spark pushes to the data source, evaluated on Arrow tables before rows reach Spark.

Spark's own CSV source filters inside its parser (``spark.sql.csv.filterPushdown.enabled``); the
Python data source API offers the same through ``DataSourceReader.pushFilters`` (Spark 4.1, with
``spark.sql.python.filterPushdown.enabled``). Translatable filters become a pyarrow compute
expression with SQL's three-valued logic (a comparison with null drops the row, as in Spark), so
far fewer rows cross from Python to the JVM. Every filter is also handed back to Spark, which
evaluates it again on the rows that remain; the tests compare results with Spark's own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
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

__all__ = ["apply_filters", "combine", "to_expression"]

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


def _column(filter_: Filter, names: Sequence[str]) -> pc.Expression | None:
    path: tuple[str, ...] = tuple(getattr(filter_, "attribute", ()))
    if len(path) != 1 or path[0] not in names:
        return None  # nested fields are left to Spark
    return pc.field(path[0])


def to_expression(filter_: Filter, names: Sequence[str]) -> pc.Expression | None:
    """The Arrow expression for one Spark filter, or None if it is not translated."""
    if isinstance(filter_, Not):
        inner = to_expression(filter_.child, names)
        return None if inner is None else ~inner
    column = _column(filter_, names)
    if column is None:
        return None
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
    if isinstance(filter_, GreaterThan):
        return column > operand
    if isinstance(filter_, GreaterThanOrEqual):
        return column >= operand
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


def combine(filters: Iterable[Filter], names: Sequence[str]) -> pc.Expression | None:
    """The AND of every translatable filter (None if there is none)."""
    combined: pc.Expression | None = None
    for filter_ in filters:
        expression = to_expression(filter_, names)
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
