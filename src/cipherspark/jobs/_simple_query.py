"""The reference "Simple Query" (BigDL PPML quickstart) over encrypted ``people.csv``.

It counts the names, optionally shows ``name, age + 1``, selects the Developers aged 20 to 40
inclusive, writes them (name, age, job) encrypted, and counts them. Unlike the reference, showing
rows is opt-in: plaintext printed by the driver ends up in logs, which leave the TEE. The input
may be encrypted CSV or encrypted Parquet (with columns name, age, job); the selection is
written as encrypted CSV either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql.functions import col
from pyspark.sql.types import IntegerType, StringType, StructField, StructType

from cipherspark.spark import (
    cipherspark_errors,
    count_encrypted_csv,
    encrypted_sql,
    read_encrypted_csv,
    read_encrypted_parquet,
    write_encrypted_csv,
    written_rows,
)
from cipherspark.spark.pme import is_parquet

__all__ = ["PEOPLE_SCHEMA", "SimpleQueryResult", "simple_query"]

PEOPLE_SCHEMA = StructType(
    [
        StructField("name", StringType(), True),
        StructField("age", IntegerType(), True),
        StructField("job", StringType(), True),
    ]
)


@dataclass(frozen=True)
class SimpleQueryResult:
    """What the Simple Query found. ``shown`` holds plaintext rows only if asked for."""

    names: int
    developers_20_40: int
    shown: tuple[tuple[str | None, int | None], ...] = ()


def simple_query(
    spark: SparkSession,
    input_path: str,
    output_path: str,
    *,
    kms_url: str,
    key: str,
    show: int = 0,
    overwrite: bool = False,
    input_key: str | None = None,
    unsafe_skip_registry: bool = False,
) -> SimpleQueryResult:
    """Run the Simple Query on encrypted ``input_path``; write the selection to ``output_path``.

    ``show`` > 0 returns that many ``(name, age + 1)`` rows for display. ``input_key`` refuses
    an input under another primary key (checked by the readers, where they decrypt).
    """
    parquet = is_parquet(Path(input_path))
    if parquet:
        people = read_encrypted_parquet(spark, input_path, key=input_key)
    else:
        people = read_encrypted_csv(
            spark,
            input_path,
            kms_url=kms_url,
            schema=PEOPLE_SCHEMA,
            key=input_key,
            unsafe_skip_registry=unsafe_skip_registry,
        )
    # Through encrypted_sql, the filter is applied while decrypting (fewer rows into the JVM).
    selected = encrypted_sql(
        spark,
        "SELECT * FROM people WHERE job = 'Developer' AND age BETWEEN 20 AND 40",
        {"people": people},
    )
    with cipherspark_errors():
        if parquet:
            # From the row counts of the footers, as Spark counts Parquet.
            names = people.select("name").count()
        else:
            # select("name").count() counts rows: the records are counted without parsing them.
            names = count_encrypted_csv(
                spark,
                input_path,
                kms_url=kms_url,
                key=input_key,
                unsafe_skip_registry=unsafe_skip_registry,
            )
        shown: tuple[tuple[str | None, int | None], ...] = ()
        if show > 0:
            rows = people.select("name", (col("age") + 1).alias("age_plus_1")).limit(show)
            shown = tuple((r["name"], r["age_plus_1"]) for r in rows.collect())
    write_encrypted_csv(selected, output_path, kms_url=kms_url, key=key, overwrite=overwrite)
    # The number printed is the number written: the rows the tasks committed, as recorded in
    # the output's authenticated manifest (no second pass over the data).
    developers = written_rows(output_path, kms_url=kms_url)
    return SimpleQueryResult(names=names, developers_20_40=developers, shown=shown)
