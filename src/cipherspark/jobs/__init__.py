"""Example jobs over encrypted data: the reference Simple Query, ad-hoc SQL, the demo, and the
``people.csv`` generator (:mod:`cipherspark.jobs.datagen`).

The Spark jobs are imported on first use (PEP 562), so ``cipherspark generate`` and other
commands that need no Spark do not pay for importing PySpark.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cipherspark.jobs._simple_query import PEOPLE_SCHEMA, SimpleQueryResult, simple_query
    from cipherspark.jobs.sql import SqlResult, run_sql

__all__ = ["PEOPLE_SCHEMA", "SimpleQueryResult", "SqlResult", "run_sql", "simple_query"]

# The Simple Query's module is private: a submodule named like the function it holds would
# shadow the function as a package attribute once imported.
_WHERE = {
    "PEOPLE_SCHEMA": "_simple_query",
    "SimpleQueryResult": "_simple_query",
    "simple_query": "_simple_query",
    "SqlResult": "sql",
    "run_sql": "sql",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f"cipherspark.jobs.{_WHERE[name]}"), name)
        globals()[name] = value  # looked up once
        return value
    raise AttributeError(f"module 'cipherspark.jobs' has no attribute {name!r}")
