"""Column pruning for SQL over encrypted tables, which Spark cannot push into Python sources.

Spark's own CSV reader parses only the columns a query uses; a Python data source is always
asked for every column of its schema (PySpark 4.1 to 4.3 have no ``pruneColumns``), so a query
touching 4 of lineitem's 16 columns pays to parse and transfer all 16. :func:`encrypted_sql`
plans the query once with full tables, works out from Spark's *optimized* plan which columns of
each encrypted scan the query needs, then registers each table again reading only those columns
(the reader's ``fileColumns`` projection) and plans the query for real. The answer is the same
query over the same rows; only unused columns are never parsed.

The optimized plan is read through Py4J (classic PySpark; Spark Connect sessions are not
supported and get the unpruned query).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from py4j.protocol import Py4JError
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.functions import broadcast
from pyspark.sql.types import DataType, DecimalType, StructType

from cipherspark.spark._conf import conf_bytes
from cipherspark.spark.datasource import FORMAT_NAME

__all__ = ["encrypted_sql", "scan_columns"]


def _seq(scala_seq: Any) -> list[Any]:
    return [scala_seq.apply(i) for i in range(scala_seq.length())]


def _our_scan(node: Any) -> dict[str, str] | None:
    """The options of a cipherspark_csv scan leaf, else None."""
    if node.getClass().getSimpleName() not in ("DataSourceV2Relation", "DataSourceV2ScanRelation"):
        return None
    relation = node.relation() if node.getClass().getSimpleName() == "DataSourceV2ScanRelation" \
        else node
    try:
        if str(relation.table().name()) != FORMAT_NAME:
            return None
        options = relation.options().asCaseSensitiveMap()
        return {str(k): str(options.get(k)) for k in options.keySet()}
    except Py4JError:  # another relation shape: not ours
        return None


def scan_columns(df: DataFrame) -> dict[str, set[str]]:
    """For each encrypted scan in ``df``'s optimized plan (keyed by its ``path`` option), the
    names of its columns that the rest of the plan references."""
    needed: dict[str, set[str]] = {}
    for path, _, used in _scans(df):
        needed.setdefault(path, set()).update(used)
    return needed


# Nodes whose output is (a subset of) their children's output, attribute for attribute: a child
# must provide what is required above plus what the node itself references.
_PASS_THROUGH = frozenset({
    "Filter", "Sort", "GlobalLimit", "LocalLimit", "Offset", "Join", "SubqueryAlias", "Window",
    "Sample", "Repartition", "RepartitionByExpression", "RebalancePartitions", "Tail",
})
# Nodes that compute their whole output from what they reference.
_REFERENCES_ONLY = frozenset({"Project", "Aggregate"})


def _ids(attributes: Any) -> list[int]:
    return [int(a.exprId().id()) for a in _seq(attributes)]


def _scans(df: DataFrame) -> list[tuple[str, list[str], set[str]]]:
    """(path, the columns it reads, those the plan needs) of each encrypted scan in ``df``'s
    optimized plan.

    Required columns flow top-down from the root's output (Spark's own column-pruning logic,
    simplified): a node of unknown kind makes its children provide everything they output, so an
    unfamiliar plan shape prunes less, never too much. Subquery plans are analysed on their own.
    """
    found: list[tuple[str, list[str], set[str]]] = []
    root = df._jdf.queryExecution().optimizedPlan()
    pending = [(root, set(_ids(root.output())))]
    while pending:
        node, required = pending.pop()
        for sub in _seq(node.subqueries()):
            pending.append((sub, set(_ids(sub.output()))))
        options = _our_scan(node)
        if options is not None and "path" in options:
            output = [(str(a.name()), int(a.exprId().id())) for a in _seq(node.output())]
            found.append((options["path"], [n for n, _ in output],
                          {n for n, i in output if i in required}))
            continue
        kind = str(node.getClass().getSimpleName())
        children = _seq(node.children())
        if kind in _REFERENCES_ONLY:
            need = set(_ids(node.references().toSeq()))
        elif kind in _PASS_THROUGH:
            need = required | set(_ids(node.references().toSeq()))
        elif kind == "Union":
            # By position: column j of every child feeds column j of the union's output.
            positions = [j for j, i in enumerate(_ids(node.output())) if i in required]
            for child in children:
                ids = _ids(child.output())
                pending.append((child, {ids[j] for j in positions if j < len(ids)}))
            continue
        else:
            for child in children:
                pending.append((child, set(_ids(child.output()))))
            continue
        for child in children:
            pending.append((child, need & set(_ids(child.output()))))
    return found


def _scan_options(df: DataFrame) -> dict[str, str] | None:
    """The reader options if ``df`` is exactly one encrypted scan (no projection or filter)."""
    plan = df._jdf.queryExecution().analyzed()
    return _our_scan(plan) if plan.children().length() == 0 else None


def _reread(spark: SparkSession, options: dict[str, str], schema: StructType,
            columns: list[str]) -> DataFrame:
    file_columns = options.get("fileColumns")
    all_columns = json.loads(file_columns) if file_columns else schema.fieldNames()
    reader = spark.read.format(FORMAT_NAME)
    for name, value in options.items():
        if name not in ("path", "fileColumns"):
            reader = reader.option(name, value)
    reader = reader.option("fileColumns", json.dumps(all_columns))
    return reader.schema(StructType([schema[c] for c in columns])).load(options["path"])


def _default_size(kind: DataType) -> int:
    """Spark's ``DataType.defaultSize``, which its size estimates use (bytes per value)."""
    if isinstance(kind, DecimalType):
        return 8 if kind.precision <= 18 else 16
    sizes = {"byte": 1, "boolean": 1, "short": 2, "integer": 4, "float": 4, "date": 4,
             "long": 8, "double": 8, "timestamp": 8, "timestamp_ntz": 8, "binary": 100}
    return sizes.get(kind.typeName(), 20)


def _estimated_bytes(path: str, full: StructType, kept: list[str]) -> int:
    """Spark's estimate for a pruned file scan: the files' size scaled by the kept columns'
    share of the row width (``SizeInBytesOnlyStatsPlanVisitor.visitProject``, without CBO)."""
    root = Path(path)
    files = [root] if root.is_file() else [p for p in root.rglob("*")
                                           if p.is_file() and not p.name.startswith(("_", "."))]
    size = sum(p.stat().st_size for p in files)
    width = 8 + sum(_default_size(f.dataType) for f in full.fields)
    kept_width = 8 + sum(_default_size(full[c].dataType) for c in kept)
    return size * kept_width // width


def encrypted_sql(spark: SparkSession, query: str, tables: Mapping[str, DataFrame]) -> DataFrame:
    """``spark.sql(query)`` with ``tables`` (name -> DataFrame) as temporary views, where each
    DataFrame that is a plain :func:`~cipherspark.spark.read_encrypted_csv` scan is read with
    only the columns the query uses. Other DataFrames are used as they are.

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
        needed = scan_columns(planned)
        threshold = conf_bytes(spark, "spark.sql.autoBroadcastJoinThreshold", 10 << 20)
        replaced: dict[str, DataFrame] = {}
        for name, df in tables.items():
            options = _scan_options(df)
            if options is None or options.get("path") not in needed:
                continue
            names = df.schema.fieldNames()
            # count(*) needs no column, but a scan must yield at least one.
            keep = [c for c in names if c in needed[options["path"]]] or names[:1]
            scan = _reread(spark, options, df.schema, keep) if len(keep) < len(names) else df
            if 0 <= _estimated_bytes(options["path"], df.schema, keep) <= threshold:
                scan = broadcast(scan)
            if scan is not df:
                replaced[name] = scan
    except (Py4JError, AttributeError, OSError):  # no JVM plan (e.g. Spark Connect): as given
        return planned
    if not replaced:
        return planned
    try:
        for name, df in replaced.items():
            df.createOrReplaceTempView(name)
        return spark.sql(query)
    finally:
        for name in replaced:
            tables[name].createOrReplaceTempView(name)
