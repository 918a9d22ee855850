"""Turn Spark's exceptions back into cipherspark errors.

An error raised inside a Python worker reaches the driver as a Py4J / PySpark exception whose text
carries the original ``cipherspark.errors.X: message`` line. Recovering it gives users the same
one-line message (and exit code) as a local failure instead of a page of JVM stack.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

from cipherspark import errors
from cipherspark.errors import CipherSparkError, JobError

__all__ = ["cipherspark_errors", "spark_error"]

_OURS = re.compile(r"cipherspark\.errors\.(\w+): ([^\n]+)")
_PYTHON_ERROR = re.compile(r"^(\w*(?:Error|Exception)): (.*)$", re.MULTILINE)
_OS_ERRORS = {
    "FileNotFoundError",
    "PermissionError",
    "IsADirectoryError",
    "NotADirectoryError",
    "OSError",
}
_SPARK_CLASS = re.compile(r"\[([A-Z_]+(?:\.[A-Z_]+)?)\]\s*([^\n]+)")


def spark_error(exc: BaseException) -> CipherSparkError:
    """The cipherspark error inside ``exc`` if there is one, else a :class:`JobError`.

    For other Python failures in a worker only the exception type is reported (and the message
    of OS errors, which name a file): messages of arbitrary exceptions may quote data rows,
    and this text ends up in logs outside the TEE.
    """
    if isinstance(exc, CipherSparkError):
        return exc
    text = str(exc)
    found = _OURS.findall(text)
    if found:
        name, message = found[-1]
        kind = getattr(errors, name, None)
        if isinstance(kind, type) and issubclass(kind, errors.AttestationError):
            # Worker failures reach the driver as text: the reason comes back from its note.
            reason = errors.AttestationError.reason_in(text) or errors.DenialReason.SIGNATURE
            return kind(message.strip(), reason)
        if isinstance(kind, type) and issubclass(kind, CipherSparkError):
            return kind(message.strip())
    python = _PYTHON_ERROR.findall(text)
    if python:
        name, message = python[-1]
        detail = f"{name}: {message.strip()}" if name in _OS_ERRORS else name
        return JobError(f"the Spark job failed in a Python worker ({detail[:300]})")
    spark = _SPARK_CLASS.search(text)
    if spark:
        summary = f"[{spark.group(1)}] {spark.group(2)}"
    else:
        lines = text.strip().splitlines()
        summary = lines[0] if lines else type(exc).__name__
    return JobError(f"the Spark job failed: {summary[:500]}")


@contextlib.contextmanager
def cipherspark_errors() -> Iterator[None]:
    """Run Spark actions in this block; a failure surfaces as the cipherspark error it carries.

    ::

        with cipherspark_errors():
            df.count()  # a tampered input raises IntegrityError, not a Py4J error
    """
    try:
        yield
    except CipherSparkError:
        raise
    except Exception as exc:
        raise spark_error(exc) from exc
