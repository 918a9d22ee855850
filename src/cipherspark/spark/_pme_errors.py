"""Parquet encryption's failures as cipherspark errors.

Key failures carry the cipherspark error (``cipherspark.errors.NAME: message``, written by the
KMS client, see java/), which :func:`~cipherspark.spark._errors.spark_error` recovers. What
parquet-java detects itself is a ``TagVerificationException`` ("GCM tag check failed"): a
module of the file (footer, page, column index) failed AES-GCM authentication, i.e. the file was
altered or truncated, or its keys were swapped. That becomes :class:`IntegrityError` naming the
file (a path, not data). Everything else is :func:`spark_error`'s.

(:func:`spark_error` is the place for this mapping; it is here until that module, which another
change owns, takes it.)
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

from cipherspark.errors import CipherSparkError, IntegrityError
from cipherspark.spark._errors import spark_error

__all__ = ["parquet_errors", "pme_error"]

_OURS = "cipherspark.errors."
_TAG = re.compile(r"TagVerificationException|GCM tag check failed")
_FILE = re.compile(r"while reading file (\S+?)\.?(?:\s|$)")


def pme_error(exc: BaseException) -> CipherSparkError:
    """The cipherspark error ``exc`` (a Spark or Py4J failure) stands for."""
    if isinstance(exc, CipherSparkError):
        return exc
    text = str(exc)
    if _OURS not in text and _TAG.search(text):
        found = _FILE.search(text)
        where = f"Parquet file {found.group(1)}" if found else "a Parquet file"
        return IntegrityError(
            f"{where} does not authenticate: it was altered or truncated, or its keys were "
            "swapped (Parquet's AES-GCM tag check failed)"
        )
    return spark_error(exc)


@contextlib.contextmanager
def parquet_errors() -> Iterator[None]:
    """Like :func:`~cipherspark.spark.cipherspark_errors`, Parquet's tamper detection included."""
    try:
        yield
    except CipherSparkError:
        raise
    except Exception as exc:
        raise pme_error(exc) from exc
