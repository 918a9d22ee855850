"""Refuse the RDD API's file writes in a session with the plaintext-write guard.

The guard (``org.cipherspark.spark.PlaintextWriteGuard``, java/) checks analysed plans, and
``rdd.saveAsTextFile`` and its siblings never reach Spark's analyser: they write plaintext
files straight through Hadoop's output formats. PySpark's RDD save methods are therefore
wrapped here, in the driver's Python process (where an application calls them), and refused
before any Spark job starts, under the same named opt-out as the guard's
(``spark.cipherspark.unsafePlaintextWrites``). The wrappers read the session's setting at
each call, so a later ``secure_session(unsafe_plaintext_writes=True)`` applies at once.

Not covered: an application that calls the JVM's RDD API itself through Py4J (``rdd._jrdd``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from cipherspark.errors import UsageError

__all__ = ["refuse_rdd_writes"]

#: Every PySpark RDD method that writes files (pyspark/core/rdd.py).
_METHODS = (
    "saveAsTextFile",
    "saveAsPickleFile",
    "saveAsSequenceFile",
    "saveAsHadoopFile",
    "saveAsNewAPIHadoopFile",
    "saveAsHadoopDataset",
    "saveAsNewAPIHadoopDataset",
)
_MARK = "_cipherspark_refused_in_guarded_sessions"


def _refused(context: Any, guard: str, opt_out: str) -> bool:
    """Whether ``context``'s session has the guard and not its opt-out."""
    from pyspark.sql import SparkSession

    session = SparkSession._instantiatedSession
    if session is not None and session.sparkContext is context:
        get: Callable[[str, str], str | None] = session.conf.get
    else:  # no SQL session over this context: only its static settings say
        get = context.getConf().get
    extensions = (get("spark.sql.extensions", "") or "").split(",")
    return guard in extensions and (get(opt_out, "false") or "").lower() != "true"


def _wrap(name: str, method: Callable[..., Any], guard: str, opt_out: str) -> Callable[..., Any]:
    @functools.wraps(method)
    def refusing(self: Any, *args: Any, **kwargs: Any) -> Any:
        if _refused(self.ctx, guard, opt_out):
            raise UsageError(
                f"rdd.{name}() writes plaintext files, refused in a cipherspark session: write "
                "a DataFrame as Parquet (encrypted), or opt out explicitly "
                "(--unsafe-plaintext-output, secure_session(unsafe_plaintext_writes=True))"
            )
        return method(self, *args, **kwargs)

    setattr(refusing, _MARK, True)
    return refusing


def refuse_rdd_writes(guard: str, opt_out: str) -> None:
    """Wrap PySpark's RDD save methods (once per process) to refuse writes in sessions with
    the ``guard`` extension, unless their SQL setting ``opt_out`` is ``true``."""
    from pyspark import RDD

    for name in _METHODS:
        method = getattr(RDD, name)
        if not getattr(method, _MARK, False):
            setattr(RDD, name, _wrap(name, method, guard, opt_out))
