"""Turn Spark's exceptions back into cipherspark errors.

An error raised inside a Python worker reaches the driver as a Py4J / PySpark exception whose text
carries the original ``cipherspark.errors.X: message`` line. Recovering it gives users the same
one-line message (and exit code) as a local failure instead of a page of JVM stack.
"""

from __future__ import annotations

import re

from cipherspark import errors
from cipherspark.errors import CipherSparkError, JobError

__all__ = ["spark_error"]

_OURS = re.compile(r"cipherspark\.errors\.(\w+): ([^\n]+)")
_SPARK_CLASS = re.compile(r"\[([A-Z_]+(?:\.[A-Z_]+)?)\]\s*([^\n]+)")


def spark_error(exc: BaseException) -> CipherSparkError:
    """The cipherspark error inside ``exc`` if there is one, else a :class:`JobError`."""
    if isinstance(exc, CipherSparkError):
        return exc
    text = str(exc)
    found = _OURS.findall(text)
    if found:
        name, message = found[-1]
        kind = getattr(errors, name, None)
        if isinstance(kind, type) and issubclass(kind, CipherSparkError):
            return kind(message.strip())
    spark = _SPARK_CLASS.search(text)
    summary = f"[{spark.group(1)}] {spark.group(2)}" if spark else text.strip().splitlines()[0:1]
    if isinstance(summary, list):
        summary = summary[0] if summary else type(exc).__name__
    return JobError(f"the Spark job failed: {summary[:500]}")
