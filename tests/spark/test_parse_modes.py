"""Malformed input is read exactly as Spark's own CSV source reads it, in each mode.

Ragged rows, extra fields, values that do not parse (or that pyarrow would parse more leniently
than Spark: spaces around numbers, a sign, a decimal with more digits than its scale), invalid
UTF-8, Spark's lenient dates: each line below is read by the encrypted source and by Spark's CSV
reader on the same plaintext, in PERMISSIVE, DROPMALFORMED and FAILFAST, and the answers must be
the same. A FAILFAST error names the file and the line, never the record's values.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession

from cipherspark.errors import InputError
from cipherspark.files import encrypt_path
from cipherspark.kms import LocalKms
from cipherspark.spark import cipherspark_errors, read_encrypted_csv
from tests.conftest import TEST_KEY

pytestmark = pytest.mark.spark

SCHEMA = ("name string, age int, job string, pay decimal(6,2), day date, ok boolean, "
          "score double")
HEADER = b"name,age,job,pay,day,ok,score\n"
GOOD = b"ann,30,Dev,1.50,2020-01-01,true,1.5\n"

LINES = {
    "short": b"bob,31",
    "extra": b"cid,32,Eng,2.00,2020-01-02,false,2.5,EXTRA",
    "non_number": b"dan,old,Eng,3.00,2020-01-03,true,3.5",
    "invalid_utf8": b"e\xffe,33,R\xc3\x28s,4.00,2020-01-04,true,4.5",
    "int_out_of_range": b"fay,99999999999,Eng,5.00,2020-01-05,true,5.5",
    "spaces_around_values": b"gus, 34 ,Eng, 6.00 ,2020-01-06, true , 6.5 ",
    "decimal_rounded": b"hal,35,Eng,7.125,2020-01-07,true,7.5",
    "decimal_too_wide": b"kim,38,Eng,12345.00,2020-01-09,true,10.5",
    "invalid_date": b"ivy,36,Eng,8.00,2020-13-07,true,8.5",
    "date_with_time": b"ned,41,Eng,1.00,2020-01-12 10:00:00,true,1",
    "short_date": b"pat,41,Eng,1.00,2020-1-5,true,1",
    "bad_boolean": b"jo,37,Eng,9.00,2020-01-08,yes,9.5",
    "odd_case_boolean": b"jo,37,Eng,9.00,2020-01-08,tRuE,9.5",
    "nan_and_inf": b"lou,39,Eng,1.00,2020-01-10,true,NaN",
    "signs": b"oz,+42,Eng,+1.00,2020-01-13,TRUE,+1.5",
    "exponents": b"ru,43,Eng,1e2,2020-01-14,false,2.5e1",
    "quoted_comma": b'"sm, ith",44,"a ""b""",1.00,2020-01-15,false,0',
    "empty_line_between": b"\n\nval,45,Eng,1.00,2020-01-16,true,1",
}


def _key(value: Any) -> Any:
    return "NaN" if isinstance(value, float) and math.isnan(value) else value


def _rows(rows: list[Any]) -> list[tuple[Any, ...]]:
    return sorted((tuple(_key(v) for v in row) for row in rows), key=repr)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("modes")
    out = {}
    for name, line in LINES.items():
        out[name] = folder / f"{name}.csv"
        # The malformed line between two good ones, so that every split shape is exercised.
        out[name].write_bytes(HEADER + GOOD + line + b"\n" + GOOD)
    return out


@pytest.mark.parametrize("mode", ["PERMISSIVE", "DROPMALFORMED", "FAILFAST"])
@pytest.mark.parametrize("case", list(LINES))
def test_malformed_input_reads_as_spark_reads_it(
        case: str, mode: str, files: dict[str, Path], tmp_path: Path, kms: LocalKms,
        spark: SparkSession) -> None:
    plain = files[case]
    encrypted = tmp_path / "data.cspk"
    encrypt_path(plain, encrypted, kms, TEST_KEY, segment_size=64)
    try:
        native: list[tuple[Any, ...]] | None = _rows(
            spark.read.option("header", "true").option("escape", '"').option("mode", mode)
            .schema(SCHEMA).csv(str(plain)).collect())
    except Exception:  # FAILFAST: Spark refuses the file
        native = None
    df = read_encrypted_csv(spark, str(encrypted), kms_url=kms.url, schema=SCHEMA, mode=mode,
                            partition_bytes=64)
    if native is not None:
        with cipherspark_errors():
            assert _rows(df.collect()) == native
        return
    assert mode == "FAILFAST"
    with pytest.raises(InputError) as caught, cipherspark_errors():
        df.collect()
    message = str(caught.value)
    # Which file and which line (the malformed line is line 3: header, a good line, it).
    assert str(encrypted) in message and "line 3" in message, message
    for value in (b"bob", b"cid", b"EXTRA", b"dan", b"old", b"fay", b"99999999999"):
        assert value.decode() not in message.replace(str(encrypted), "")
