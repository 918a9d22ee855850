"""Spark integration: the secure session and the encrypted CSV data source.

Typical use::

    spark = secure_session(credentials=creds)
    people = read_encrypted_csv(spark, "people.csv.cspk", kms_url=url, schema=PEOPLE_SCHEMA)
    write_encrypted_csv(people.filter("age > 30"), "out", kms_url=url, key="simple")
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType

from cipherspark.spark._errors import spark_error
from cipherspark.spark.datasource import FORMAT_NAME, EncryptedCsvDataSource
from cipherspark.spark.session import SECURE_CONF, secure_conf, secure_session

__all__ = [
    "FORMAT_NAME",
    "SECURE_CONF",
    "EncryptedCsvDataSource",
    "read_encrypted_csv",
    "secure_conf",
    "secure_session",
    "write_encrypted_csv",
]


def read_encrypted_csv(
    spark: SparkSession,
    path: str,
    *,
    kms_url: str,
    schema: StructType | str | None = None,
    header: bool | None = None,
    infer_schema: bool = False,
    mode: str = "PERMISSIVE",
    partition_bytes: int | None = None,
) -> DataFrame:
    """A DataFrame over encrypted CSV at ``path`` (one container or a folder of parts).

    Partitions are at most ``partition_bytes`` (default 32 MiB), and small inputs are split so
    that every core of the session gets work.
    """
    reader = (
        spark.read.format(FORMAT_NAME)
        .option("kms", kms_url)
        .option("mode", mode)
        .option("inferSchema", str(infer_schema).lower())
        .option("minPartitions", str(spark.sparkContext.defaultParallelism))
    )
    if header is not None:
        reader = reader.option("header", str(header).lower())
    if partition_bytes is not None:
        reader = reader.option("partitionBytes", str(partition_bytes))
    if schema is not None:
        reader = reader.schema(schema)
    try:
        return reader.load(path)
    except Exception as exc:
        raise spark_error(exc) from exc


def write_encrypted_csv(
    df: DataFrame,
    path: str,
    *,
    kms_url: str,
    key: str,
    header: bool = True,
    overwrite: bool = False,
) -> None:
    """Write ``df`` as encrypted CSV parts in folder ``path`` under a fresh data key."""
    writer = (
        df.write.format(FORMAT_NAME)
        .option("kms", kms_url)
        .option("key", key)
        .option("header", str(header).lower())
        .mode("overwrite" if overwrite else "append")
    )
    try:
        writer.save(path)
    except Exception as exc:
        raise spark_error(exc) from exc
