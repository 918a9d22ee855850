"""Spark integration: the secure session and the encrypted CSV data source.

Typical use::

    spark = secure_session(credentials=creds)
    people = read_encrypted_csv(spark, "people.csv.cspk", kms_url=url, schema=PEOPLE_SCHEMA)
    write_encrypted_csv(people.filter("age > 30"), "out", kms_url=url, key="simple")
    result = encrypted_sql(spark, "SELECT job, count(*) FROM people GROUP BY job",
                           {"people": people})   # reads only the column the query uses

The names are imported on first use (PEP 562): importing a submodule that needs no PySpark
(:mod:`cipherspark.spark.pme`, the Parquet key helper the JVM starts,
:mod:`cipherspark.spark._executor`) does not import PySpark and the data source, about a
second of every helper's start on a loaded machine.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cipherspark.spark._errors import cipherspark_errors, spark_error
    from cipherspark.spark._frames import (
        count_encrypted_csv,
        read_encrypted_csv,
        read_encrypted_json,
        read_encrypted_parquet,
        read_encrypted_text,
        write_encrypted_csv,
        write_encrypted_json,
        write_encrypted_text,
        written_rows,
    )
    from cipherspark.spark._pruning import encrypted_sql
    from cipherspark.spark.datasource import (
        FORMAT_NAME,
        TEXT_FORMAT_NAME,
        EncryptedCsvDataSource,
        EncryptedTextDataSource,
    )
    from cipherspark.spark.session import SECURE_CONF, secure_conf, secure_session

__all__ = [
    "FORMAT_NAME",
    "SECURE_CONF",
    "TEXT_FORMAT_NAME",
    "EncryptedCsvDataSource",
    "EncryptedTextDataSource",
    "cipherspark_errors",
    "count_encrypted_csv",
    "encrypted_sql",
    "read_encrypted_csv",
    "read_encrypted_json",
    "read_encrypted_parquet",
    "read_encrypted_text",
    "secure_conf",
    "secure_session",
    "spark_error",
    "write_encrypted_csv",
    "write_encrypted_json",
    "write_encrypted_text",
    "written_rows",
]

# Where each public name lives (modules of this package).
_WHERE = {
    "FORMAT_NAME": "datasource",
    "EncryptedCsvDataSource": "datasource",
    "TEXT_FORMAT_NAME": "datasource",
    "EncryptedTextDataSource": "datasource",
    "SECURE_CONF": "session",
    "secure_conf": "session",
    "secure_session": "session",
    "cipherspark_errors": "_errors",
    "spark_error": "_errors",
    "encrypted_sql": "_pruning",
    "count_encrypted_csv": "_frames",
    "read_encrypted_csv": "_frames",
    "read_encrypted_parquet": "_frames",
    "write_encrypted_csv": "_frames",
    "read_encrypted_json": "_frames",
    "read_encrypted_text": "_frames",
    "write_encrypted_json": "_frames",
    "write_encrypted_text": "_frames",
    "written_rows": "_frames",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f"cipherspark.spark.{_WHERE[name]}"), name)
        globals()[name] = value  # looked up once
        return value
    raise AttributeError(f"module 'cipherspark.spark' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
