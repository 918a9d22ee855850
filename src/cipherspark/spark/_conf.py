"""Reading Spark size settings ("10MB", "128m", "1048576") as the JVM would."""

from __future__ import annotations

from pyspark.sql import SparkSession

__all__ = ["conf_bytes", "parse_bytes"]

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kb": 1 << 10,
    "m": 1 << 20,
    "mb": 1 << 20,
    "g": 1 << 30,
    "gb": 1 << 30,
    "t": 1 << 40,
    "tb": 1 << 40,
}


def parse_bytes(value: str) -> int:
    """Bytes in a Spark size string (binary units, as ``JavaUtils.byteStringAsBytes``);
    a negative number stays negative (e.g. ``-1``: "disabled"). Raises ``ValueError``."""
    text = value.strip().lower()
    number = text.rstrip("bkmgt")
    unit = text[len(number) :]
    if unit not in _UNITS:
        raise ValueError(f"not a size: {value!r}")
    return int(number) * _UNITS[unit]


def conf_bytes(spark: SparkSession, key: str, default: int) -> int:
    """The size setting ``key`` of ``spark`` in bytes, or ``default`` when unset or unreadable."""
    value = spark.conf.get(key, None)
    if value is None:
        return default
    try:
        return parse_bytes(str(value))
    except ValueError:
        return default
