"""An ordinary PySpark application: no cipherspark import, nothing about encryption.

    python examples/report.py people.parquet out/                  # plain Spark, plaintext files
    cipherspark run --key simple examples/report.py people.parquet out/   # encrypted in and out

It reads a Parquet table of people (name, age, job), counts each job's people and their mean age,
ranks the jobs, and writes the report as Parquet. Under ``cipherspark run`` the same code reads
encrypted Parquet and every file it writes is encrypted (docs/parquet.md).
"""

import sys

from pyspark.sql import SparkSession, Window
from pyspark.sql import functions as F


def main(source: str, target: str) -> None:
    spark = SparkSession.builder.appName("people-report").getOrCreate()
    people = spark.read.parquet(source)
    report = (
        people.groupBy("job")
        .agg(F.count("*").alias("people"), F.round(F.avg("age"), 2).alias("mean_age"))
        .withColumn("rank", F.row_number().over(Window.orderBy(F.desc("people"), "job")))
    )
    report.write.mode("overwrite").parquet(target)
    spark.stop()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: report.py PEOPLE_PARQUET OUTPUT_FOLDER")
    main(sys.argv[1], sys.argv[2])
