"""SQL over encrypted tables: column pruning and filter pushdown that cannot change an answer.

Spark's own CSV reader parses only the columns a query uses and filters rows inside its parser. A
Python data source gets neither: PySpark 4.1 to 4.3 have no ``pruneColumns``, and 4.1's
``pushFilters`` state is kept on the relation and leaks into later queries (see ``_filters``).
So :func:`encrypted_sql` plans the query once over the full tables, and from that plan derives,
for each encrypted table,

* the columns to read: every column the *analyzed* plan references, anywhere (subqueries
  included). The query text is analysed again over the narrowed table, so a column that only the
  optimizer folds away (``WHERE 1 = 1 OR job = 'x'``, ``typeof(job)``) must still be there;
* the filters to apply while reading: those that sit directly above *every* scan of the table in
  the *optimized* plan (a table scanned twice, as in a self-join, gets only the filters both
  scans have). Spark evaluates each of them again above the scan, so reading only the rows that
  pass them gives the same answer (the optimized plan is equivalent to the query for any input).

It then registers each table again as a new relation that carries the columns and filters as
options (nothing is shared with other queries or DataFrames) and plans the query for real. Each
new relation is pinned to the commit of the dataset that the table's own relation reads (option
``manifestDigest``, from the table's first split, or as given at load), so one DataFrame
never answers from two datasets: a dataset replaced on disk after it was loaded (another
generation of it, another dataset under the same key) is refused, not read. If
that fails, or its output schema differs from the first plan's, the query runs unpruned:
pruning is an optimisation and never turns a valid query into an error.

The plans are read through Py4J (classic PySpark; Spark Connect sessions get the unpruned query).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pickle
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from py4j.protocol import Py4JError
from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.datasource import (
    Filter,
    In,
    IsNotNull,
    IsNull,
    Not,
)
from pyspark.sql.functions import broadcast
from pyspark.sql.types import DataType, DecimalType, StructType

from cipherspark.spark._conf import conf_bytes
from cipherspark.spark._filters import COMPARISONS, And, Or, filters_from_json, filters_to_json
from cipherspark.spark._options import FORMAT_NAME, LoadPin, ReadOptions

__all__ = ["ScanPlan", "encrypted_sql", "plan_scans", "scans"]

_log = logging.getLogger(__name__)


def _seq(scala_seq: Any) -> list[Any]:
    return [scala_seq.apply(i) for i in range(scala_seq.length())]


def _simple_name(node: Any) -> str:
    return str(node.getClass().getSimpleName())


def _our_scan(node: Any) -> dict[str, str] | None:
    """The options of a cipherspark_csv scan leaf, else None."""
    kind = _simple_name(node)
    if kind not in ("DataSourceV2Relation", "DataSourceV2ScanRelation"):
        return None
    relation = node.relation() if kind == "DataSourceV2ScanRelation" else node
    try:
        if str(relation.table().name()) != FORMAT_NAME:
            return None
        options = relation.options().asCaseSensitiveMap()
        return {str(k): str(options.get(k)) for k in options.keySet()}
    except Py4JError:  # another relation shape: not ours
        return None


def _scan_key(options: Mapping[str, str]) -> str:
    """One key per encrypted table (its reader options), to match plan scans to tables."""
    return json.dumps(sorted(options.items()))


def _nodes(root: Any) -> Iterator[Any]:
    """Every node of a plan, subquery plans included (at any depth)."""
    pending = [root]
    while pending:
        node = pending.pop()
        yield node
        pending.extend(_seq(node.children()))
        pending.extend(_seq(node.subqueries()))


def _ids(attributes: Any) -> list[int]:
    return [int(a.exprId().id()) for a in _seq(attributes)]


def _referenced_columns(analyzed: Any) -> dict[str, set[str]]:
    """For each encrypted scan of ``analyzed`` (keyed by :func:`_scan_key`), the names of its
    columns that some node of the plan references."""
    referenced: set[int] = set()
    scans: list[tuple[str, list[tuple[str, int]]]] = []
    for node in _nodes(analyzed):
        options = _our_scan(node)
        if options is not None:
            output = [(str(a.name()), int(a.exprId().id())) for a in _seq(node.output())]
            scans.append((_scan_key(options), output))
            continue
        referenced.update(_ids(node.references().toSeq()))
    needed: dict[str, set[str]] = {}
    for key, output in scans:
        needed.setdefault(key, set()).update(n for n, i in output if i in referenced)
    return needed


# -- filters from Catalyst ------------------------------------------------------------------------


def _value(java: Any) -> Any:
    """A filter value from Py4J: numbers, strings, booleans and decimals arrive as Python
    values; dates as Java objects. Anything else (timestamps, binary, ...) is not pushed."""
    if isinstance(java, bool | int | float | str | Decimal):
        return java
    if java is not None and str(java.getClass().getName()) in (
        "java.sql.Date",
        "java.time.LocalDate",
    ):
        return date.fromisoformat(str(java.toString()))
    raise ValueError("not a pushable value")


def _from_source_filter(java: Any, columns: set[str]) -> Filter | None:
    """A ``pyspark.sql.datasource`` filter for a ``org.apache.spark.sql.sources.Filter``."""
    kind = _simple_name(java)
    try:
        if kind == "Not":
            child = _from_source_filter(java.child(), columns)
            return None if child is None else Not(child)
        if kind in ("And", "Or"):
            left = _from_source_filter(java.left(), columns)
            right = _from_source_filter(java.right(), columns)
            if left is None or right is None:
                return None
            return And(left, right) if kind == "And" else Or(left, right)
        name = str(java.attribute())
        if name not in columns:  # nested fields and quoted names are left to Spark
            return None
        if kind == "IsNull":
            return IsNull((name,))
        if kind == "IsNotNull":
            return IsNotNull((name,))
        if kind == "In":
            return In((name,), tuple(_value(v) for v in java.values()))
        if kind in COMPARISONS:
            return COMPARISONS[kind]((name,), _value(java.value()))  # type: ignore[call-arg]
    except (ValueError, Py4JError):
        return None
    return None


def _conjuncts(expression: Any) -> Iterator[Any]:
    pending = [expression]
    while pending:
        item = pending.pop()
        if _simple_name(item) == "And":
            pending.extend((item.left(), item.right()))
        else:
            yield item


def _filter_above(parent: Any, columns: set[str], translate: Any) -> set[str]:
    """The wire forms of the translatable conjuncts of Filter node ``parent``."""
    found = set()
    for conjunct in _conjuncts(parent.condition()):
        translated = translate(conjunct, True)
        if not translated.isDefined():
            continue
        spark_filter = _from_source_filter(translated.get(), columns)
        if spark_filter is not None:
            found.add(filters_to_json([spark_filter]))
    return found


def _pushable_filters(spark: SparkSession, optimized: Any) -> dict[str, set[str]]:
    """For each encrypted table (keyed by :func:`_scan_key`), the filters found directly above
    every one of its scans in ``optimized`` (as one-filter wire forms)."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    strategy = getattr(
        getattr(jvm.org.apache.spark.sql.execution.datasources, "DataSourceStrategy$"), "MODULE$"
    )
    common: dict[str, set[str]] = {}
    for node in _nodes(optimized):
        is_filter = _simple_name(node) == "Filter"
        for child in _seq(node.children()):
            options = _our_scan(child)
            if options is None:
                continue
            columns = {str(a.name()) for a in _seq(child.output())}
            found = _filter_above(node, columns, strategy.translateFilter) if is_filter else set()
            key = _scan_key(options)
            common[key] = common[key] & found if key in common else found
    # A scan that is the plan's root, or a subquery's, has no parent and so no filter.
    for node in [optimized, *(sub for n in _nodes(optimized) for sub in _seq(n.subqueries()))]:
        options = _our_scan(node)
        if options is not None:
            common[_scan_key(options)] = set()
    return common


# -- the rewrite ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScanPlan:
    """How :func:`encrypted_sql` reads one encrypted table: the columns, in the table's order,
    and the filters (wire forms, see ``_filters``) every row it yields passes."""

    columns: tuple[str, ...]
    filters: tuple[str, ...]


def plan_scans(spark: SparkSession, planned: DataFrame) -> dict[str, ScanPlan]:
    """For each encrypted table scanned in ``planned`` (keyed by its reader options, see
    :func:`_scan_key`): the columns the query references and the filters it applies to every
    scan of the table."""
    execution = planned._jdf.queryExecution()
    needed = _referenced_columns(execution.analyzed())
    filters = _pushable_filters(spark, execution.optimizedPlan())
    return {
        key: ScanPlan(tuple(sorted(columns)), tuple(sorted(filters.get(key, set()))))
        for key, columns in needed.items()
    }


def scans(df: DataFrame) -> list[tuple[str, list[str], dict[str, str]]]:
    """(path, the columns it reads, its reader options) of each encrypted scan that ``df``'s
    optimized plan runs: what a query actually decrypts and parses."""
    found = []
    for node in _nodes(df._jdf.queryExecution().optimizedPlan()):
        options = _our_scan(node)
        if options is not None and "path" in options:
            found.append((options["path"], [str(a.name()) for a in _seq(node.output())], options))
    return found


def _scan_options(df: DataFrame) -> dict[str, str] | None:
    """The reader options if ``df`` is exactly one encrypted scan (no projection or filter)."""
    plan = df._jdf.queryExecution().analyzed()
    return _our_scan(plan) if plan.children().length() == 0 else None


def _loaded_pin(df: DataFrame) -> LoadPin | None:
    """The commit ``df``'s relation reads, from its first split (``None`` if it has none).

    Asking for the physical plan's partitions plans them if no query did yet; Spark then keeps
    them on the relation, so ``df`` itself reads this same commit for as long as it lives.
    """
    for node in _nodes(df._jdf.queryExecution().executedPlan()):
        if _simple_name(node) != "BatchScanExec":
            continue
        partitions = node.inputPartitions()
        if partitions.length() == 0:
            return None
        # Pickled by our reader's partitions() in Spark's planner worker: a process of this
        # application, trusted as this one is (the bytes never left the driver's JVM).
        pin = getattr(pickle.loads(bytes(partitions.apply(0).pickedPartition())), "pin", None)
        return pin if isinstance(pin, LoadPin) else None
    return None


def _pinned_options(df: DataFrame, options: Mapping[str, str]) -> ReadOptions | None:
    """``df``'s reader options, pinned to the commit ``df`` reads (``manifestDigest``), or
    ``None`` if that is not known: a re-planned read must not read a dataset put in its place."""
    parsed = ReadOptions.parse(options)
    if parsed.manifest_digest is not None:
        return parsed  # pinned when it was loaded: checked by df's own planning too
    try:
        pin = _loaded_pin(df)
    except PySparkException:
        # df's own read cannot be planned (a part swapped, say): it is used as it is, and the
        # query fails as df would, with the reader's error, when it runs.
        return None
    return None if pin is None else parsed.pinned_to(pin)


def _reread(
    spark: SparkSession,
    parsed: ReadOptions,
    schema: StructType,
    columns: list[str],
    filters: tuple[str, ...],
) -> DataFrame:
    """A new relation over the same files, reading ``columns`` of ``schema`` (the schema the
    table was loaded with, never inferred again) and only rows that pass ``filters`` (wire
    forms) besides those the table already had."""
    extra = tuple(f for wire in filters for f in filters_from_json(wire))
    narrowed = dataclasses.replace(
        parsed,
        file_columns=parsed.file_columns or tuple(schema.fieldNames()),
        filters=parsed.filters + extra,
    )
    reader = spark.read.format(FORMAT_NAME).options(**narrowed.to_options())
    return reader.schema(StructType([schema[c] for c in columns])).load(parsed.path)


def _default_size(kind: DataType) -> int:
    """Spark's ``DataType.defaultSize``, which its size estimates use (bytes per value)."""
    if isinstance(kind, DecimalType):
        return 8 if kind.precision <= 18 else 16
    sizes = {
        "byte": 1,
        "boolean": 1,
        "short": 2,
        "integer": 4,
        "float": 4,
        "date": 4,
        "long": 8,
        "double": 8,
        "timestamp": 8,
        "timestamp_ntz": 8,
        "binary": 100,
    }
    return sizes.get(kind.typeName(), 20)


def _estimated_bytes(path: str, full: StructType, kept: list[str]) -> int:
    """Spark's estimate for a pruned file scan: the files' size scaled by the kept columns'
    share of the row width (``SizeInBytesOnlyStatsPlanVisitor.visitProject``, without CBO)."""
    root = Path(path)
    files = (
        [root]
        if root.is_file()
        else [p for p in root.rglob("*") if p.is_file() and not p.name.startswith(("_", "."))]
    )
    size = sum(p.stat().st_size for p in files)
    width = 8 + sum(_default_size(f.dataType) for f in full.fields)
    kept_width = 8 + sum(_default_size(full[c].dataType) for c in kept)
    return size * kept_width // width


@contextmanager
def _quiet_analysis_errors() -> Iterator[None]:
    """PySpark logs every AnalysisException it converts at ERROR (with the query text); a
    failed pruned attempt is expected and handled, so it must not reach the user's console."""
    logger = logging.getLogger("SQLQueryContextLogger")
    disabled = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = disabled


def encrypted_sql(spark: SparkSession, query: str, tables: Mapping[str, DataFrame]) -> DataFrame:
    """``spark.sql(query)`` with ``tables`` (name -> DataFrame) as temporary views, where each
    DataFrame that is a plain :func:`~cipherspark.spark.read_encrypted_csv` scan is read with
    only the columns the query uses, dropping rows the query's filters reject while decrypting.
    Other DataFrames are used as they are. The answer is always that of ``spark.sql(query)``.

    Spark knows a file's size but not a Python source's, so it would never broadcast a small
    encrypted table into a join (every join became a sort-merge join with two shuffles). Each
    scan whose estimated size, computed the way Spark estimates a pruned CSV scan, is under
    ``spark.sql.autoBroadcastJoinThreshold`` gets a broadcast hint: the join strategies Spark
    picks for the plaintext.

    The views are left registered with the full DataFrames; the returned DataFrame keeps the
    pruned reads (Spark analyses a query when it is created).
    """
    for name, df in tables.items():
        df.createOrReplaceTempView(name)
    planned = spark.sql(query)
    try:
        plans = plan_scans(spark, planned)
        threshold = conf_bytes(spark, "spark.sql.autoBroadcastJoinThreshold", 10 << 20)
        replaced: dict[str, DataFrame] = {}
        for name, df in tables.items():
            options = _scan_options(df)
            if options is None or _scan_key(options) not in plans:
                continue
            plan = plans[_scan_key(options)]
            names = df.schema.fieldNames()
            # count(*) needs no column, but a scan must yield at least one.
            keep = [c for c in names if c in plan.columns] or names[:1]
            scan = df
            if len(keep) < len(names) or plan.filters:
                pinned = _pinned_options(df, options)
                if pinned is not None:  # else df as it is: it reads one commit by itself
                    scan = _reread(spark, pinned, df.schema, keep, plan.filters)
            if 0 <= _estimated_bytes(options["path"], df.schema, keep) <= threshold:
                scan = broadcast(scan)
            if scan is not df:
                replaced[name] = scan
    except (Py4JError, AttributeError, OSError) as exc:  # no JVM plan (Spark Connect): as given
        _log.debug("encrypted_sql: no pruning (%s)", type(exc).__name__)
        return planned
    if not replaced:
        return planned
    try:
        for name, df in replaced.items():
            df.createOrReplaceTempView(name)
        with _quiet_analysis_errors():
            pruned = spark.sql(query)
        if pruned.schema != planned.schema:
            _log.debug("encrypted_sql: the pruned query's schema differs; running it unpruned")
            return planned
        return pruned
    except (PySparkException, Py4JError) as exc:
        # Pruning is an optimisation: a query it cannot re-plan runs as written.
        _log.debug(
            "encrypted_sql: the pruned query failed to plan (%s); running it unpruned",
            type(exc).__name__,
        )
        return planned
    finally:
        for name in replaced:
            tables[name].createOrReplaceTempView(name)
