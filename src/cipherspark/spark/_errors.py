"""Turn Spark's exceptions back into cipherspark errors.

An error raised inside a Python worker reaches the driver as a Py4J / PySpark exception whose text
carries the original ``cipherspark.errors.X: message`` line. Recovering it gives users the same
one-line message (and exit code) as a local failure instead of a page of JVM stack.

Spark's own messages may quote row values (``[CAST_INVALID_INPUT] The value 'Carol-US' of the type
"STRING" cannot be cast ...``), and this text reaches terminals and logs outside the TEE. So a
Spark failure is reported by its error class, its SQLSTATE and a hint of ours, never by its
message text; the exception is the one class whose text describes the query rather than the data:
SQLSTATE class 42 (syntax error or access rule violation: unknown tables, columns, functions,
type mismatches), raised while Spark analyses the query, before it reads a row. Its text names
what the user typed, and the user needs it to fix the query.

Parquet Modular Encryption's key failures carry the cipherspark error too (written by the KMS
client, see java/). What parquet-java detects itself is a ``TagVerificationException`` ("GCM
tag check failed"): a module of the file (footer, page, column index) failed AES-GCM
authentication, i.e. the file was altered or truncated, or its keys were swapped. That becomes
:class:`~cipherspark.errors.IntegrityError` naming the file (a path, not data), as does its
refusal of a plaintext file ("Applying decryptor on plaintext file").
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

from cipherspark import errors
from cipherspark.errors import CipherSparkError, IntegrityError, JobError

__all__ = ["cipherspark_errors", "spark_error"]

_OURS = re.compile(r"cipherspark\.errors\.(\w+): ([^\n]+)")
_PARQUET_TAG = re.compile(r"TagVerificationException|GCM tag check failed")
# parquet-java's refusal of a plaintext file by a reader that does not allow them (see
# java/src/org/cipherspark/pme/CipherSparkCryptoFactory.java).
_PARQUET_PLAINTEXT = re.compile(r"Applying decryptor on plaintext file")
_PARQUET_FILE = re.compile(r"while reading file (\S+?)\.?(?:\s|$)")
_PYTHON_ERROR = re.compile(r"^(\w*(?:Error|Exception)): (.*)$", re.MULTILINE)
_OS_ERRORS = {
    "FileNotFoundError",
    "PermissionError",
    "IsADirectoryError",
    "NotADirectoryError",
    "OSError",
}
_SPARK_CLASS = re.compile(r"\[([A-Z][A-Z0-9_]*(?:\.[A-Z0-9_]+)*)\]\s*([^\n]*)")
_SQLSTATE = re.compile(r"SQLSTATE: ([0-9A-Z]{5})")
# SQLSTATE classes whose messages describe the query, not the data (see the module docstring).
_QUERY_CLASSES = ("42",)
# Hints for the error classes users meet most over data; they say what to do, not what was read.
# Names: https://spark.apache.org/docs/latest/sql-error-conditions.html
_WITHHELD = "the message is withheld: it may quote row values"
_HINTS = {
    "CAST_INVALID_INPUT": "a value cannot be cast to the target type; try_cast() gives NULL "
    "instead",
    "CAST_OVERFLOW": "a value does not fit the target type; try_cast() gives NULL instead",
    "DIVIDE_BY_ZERO": "a division by zero; try_divide() gives NULL instead",
    "ARITHMETIC_OVERFLOW": "an arithmetic result does not fit its type; use a wider type or "
    "the try_ functions",
    "NUMERIC_VALUE_OUT_OF_RANGE": "a decimal result does not fit its precision; use a wider "
    "DECIMAL or try_cast()",
    "INVALID_ARRAY_INDEX": "an array index is out of bounds; try_element_at() gives NULL instead",
    "MALFORMED_RECORD_IN_PARSING": "a record does not match the schema",
}


def _spark_summary(exc: BaseException, text: str) -> str:
    """``[CLASS] (SQLSTATE xxxxx)`` and a hint; the message text only for query errors."""
    condition = state = None
    get_condition = getattr(exc, "getCondition", None)
    if callable(get_condition):
        try:
            condition = get_condition()
            state = exc.getSqlState()  # type: ignore[attr-defined]
        except Exception:  # a PySpark exception without a JVM side: fall back to its text
            condition = state = None
    found = _SPARK_CLASS.search(text)
    if condition is None and found:
        condition = found.group(1)
    if state is None:
        match = _SQLSTATE.search(text)
        state = match.group(1) if match else None
    if condition is None:
        return f"{type(exc).__name__}: {_WITHHELD}"
    summary = f"[{condition}]" + (f" (SQLSTATE {state})" if state else "")
    if state is not None and state.startswith(_QUERY_CLASSES) and found:
        message = _SQLSTATE.sub("", found.group(2)).strip().rstrip(".")
        return f"{summary} {message}"[:500]
    hint = _HINTS.get(condition.partition(".")[0], _WITHHELD)
    return f"{summary}: {hint}"


def _parquet_file(text: str) -> str:
    """The file a Parquet read failure names, as "Parquet file PATH" (a path, never data)."""
    file = _PARQUET_FILE.search(text)
    return f"Parquet file {file.group(1)}" if file else "a Parquet file"


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
    if _PARQUET_PLAINTEXT.search(text):
        return IntegrityError(
            f"{_parquet_file(text)} is not encrypted (no encryption metadata): refused, a "
            "plaintext file in an encrypted table may have been put there by anyone who can "
            "write to the storage"
        )
    if _PARQUET_TAG.search(text):
        return IntegrityError(
            f"{_parquet_file(text)} does not authenticate: it was altered or truncated, or its "
            "keys were swapped (Parquet's AES-GCM tag check failed)"
        )
    python = _PYTHON_ERROR.findall(text)
    if python:
        name, message = python[-1]
        detail = f"{name}: {message.strip()}" if name in _OS_ERRORS else name
        return JobError(f"the Spark job failed in a Python worker ({detail[:300]})")
    return JobError(f"the Spark job failed: {_spark_summary(exc, text)}")


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
