"""cipherspark.ppml: BigDL's PPMLContext API. BigDL's own Python Simple Query (tests/data,
only its imports changed) runs on BigDL v2-encrypted input from the independent vector
generator and writes cipherspark's format; round trips in every mode; refusals."""

from __future__ import annotations

import csv
import io
import runpy
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from cipherspark.crypto.container import MAGIC
from cipherspark.errors import IntegrityError, UsageError
from cipherspark.files import decrypt_path
from cipherspark.kms import LocalKms
from cipherspark.ppml import CryptoMode, PPMLContext, PPMLSettings, PPMLWarning
from cipherspark.spark import secure_session
from tests.conftest import TEST_CREDENTIALS, TEST_KEY
from tests.crypto import bigdl_vectors

pytestmark = pytest.mark.spark

SCRIPT = Path(__file__).parent / "data" / "bigdl_simple_query.py"
CBC = "AES/CBC/PKCS5Padding"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, LocalKms, bigdl_vectors.Vectors]:
    root = tmp_path_factory.mktemp("ppml")
    kms = LocalKms(root / "kms", TEST_CREDENTIALS, create=True)
    kms.create_key(TEST_KEY)
    vectors = bigdl_vectors.write_vectors(root / "bigdl", rows=400, parts=3)
    return root, kms, vectors


def simple_args(vectors: bigdl_vectors.Vectors) -> dict[str, str]:
    return {
        "kms_type": "SimpleKeyManagementService",
        "app_id": bigdl_vectors.APP_ID,
        "api_key": bigdl_vectors.API_KEY,
        "primary_key_material": str(vectors.simple_primary_key),
    }


@pytest.fixture(scope="module")
def ctx(
    spark: SparkSession, world: tuple[Path, LocalKms, bigdl_vectors.Vectors]
) -> Iterator[PPMLContext]:
    """One PPMLContext on the suite's shared session; Parquet encryption reset afterwards."""
    _, kms, vectors = world
    settings = PPMLSettings(kms_url=kms.url, key=TEST_KEY, credentials=TEST_CREDENTIALS)
    context = PPMLContext(
        "ppml-tests", simple_args(vectors), {"spark.master": "local[2]"}, settings=settings
    )
    yield context
    context.close()
    secure_session(master="local[2]", credentials=TEST_CREDENTIALS)


def developers(plain: bytes) -> list[tuple[str, str, str]]:
    """The Simple Query's answer, by the csv module on the generator's plaintext."""
    rows = list(csv.reader(io.StringIO(plain.decode())))[1:]
    return sorted((n, a, j) for n, a, j in rows if j == "Developer" and 20 <= int(a) <= 40)


def decrypted_rows(path: Path, kms: LocalKms, tmp: Path) -> list[tuple[str, ...]]:
    out = tmp / f"{path.name}.plain"
    decrypt_path(path, out, kms)
    return sorted(tuple(r) for r in list(csv.reader(io.StringIO(out.read_text())))[1:])


def test_bigdl_simple_query_runs_with_its_imports_changed(
    ctx: PPMLContext,
    world: tuple[Path, LocalKms, bigdl_vectors.Vectors],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, kms, vectors = world
    monkeypatch.setenv("CIPHERSPARK_KMS", kms.url)
    monkeypatch.setenv("CIPHERSPARK_KEY", TEST_KEY)
    out = tmp_path / "developers"
    monkeypatch.setattr(
        sys,
        "argv",
        [
            str(SCRIPT),
            "--app_id",
            bigdl_vectors.APP_ID,
            "--api_key",
            bigdl_vectors.API_KEY,
            "--primary_key_material",
            str(vectors.simple_primary_key),
            "--input_path",
            str(vectors.v2_folder),
            "--output_path",
            str(out),
            "--input_encrypt_mode",
            CBC,
            "--output_encrypt_mode",
            CBC,
        ],
    )
    runpy.run_path(str(SCRIPT), run_name="__main__")
    parts = sorted(out.glob("part-*"))
    assert parts and all(p.read_bytes()[: len(MAGIC)] == MAGIC for p in parts)
    assert decrypted_rows(out, kms, tmp_path) == developers(vectors.csv)


@pytest.mark.parametrize("mode", list(CryptoMode))
@pytest.mark.parametrize("fmt", ["csv", "json", "text", "parquet"])
def test_round_trips_write_cipherspark_format_in_every_mode(
    ctx: PPMLContext, tmp_path: Path, mode: CryptoMode, fmt: str
) -> None:
    rows = [("ann", "31", "Developer"), ("bob", "45", "Engineer")]
    df = ctx.spark.createDataFrame(rows, "name string, age string, job string")
    if fmt == "text":
        df = df.selectExpr("concat_ws(',', name, age, job) AS value")
    path = tmp_path / fmt
    writer = ctx.write(df, mode).mode("overwrite")
    if fmt == "csv":
        writer = writer.option("header", True)
    if mode is CryptoMode.PLAIN_TEXT:
        with pytest.warns(PPMLWarning, match="written encrypted"):
            getattr(writer, fmt)(str(path))
    else:
        getattr(writer, fmt)(str(path))
    data = [p for p in path.iterdir() if p.name.startswith("part-")]
    magic = b"PARE" if fmt == "parquet" else MAGIC
    assert data and all(p.read_bytes()[: len(magic)] == magic for p in data)  # never CBC
    reader = ctx.read(mode)
    if fmt == "csv":
        reader = reader.option("header", "true")
    back = getattr(reader, fmt)(str(path))
    got = sorted(tuple(r) for r in back.collect())
    want = sorted((",".join(r),) for r in rows) if fmt == "text" else sorted(rows)
    if fmt == "json":
        got = sorted(tuple(r[n] for n in ("name", "age", "job")) for r in back.collect())
    assert got == want


def test_bigdl_input_folder_reads_as_the_plaintext(
    ctx: PPMLContext, world: tuple[Path, LocalKms, bigdl_vectors.Vectors]
) -> None:
    _, _, vectors = world
    df = (
        ctx.read(CryptoMode.AES_CBC_PKCS5PADDING)
        .option("header", "true")
        .csv(str(vectors.v2_folder))
    )
    assert df.count() == len(vectors.csv.splitlines()) - 1
    lines = ctx.textfile(str(vectors.v2_folder), 4, crypto_mode=CBC)
    assert lines.getNumPartitions() >= 4
    assert sorted(lines.collect()) == sorted(
        line for part in vectors.parts for line in part.decode().splitlines()
    )


def test_tampered_bigdl_file_is_refused_naming_it(
    ctx: PPMLContext, world: tuple[Path, LocalKms, bigdl_vectors.Vectors], tmp_path: Path
) -> None:
    _, _, vectors = world
    folder = tmp_path / "tampered"
    folder.mkdir()
    for part in sorted(vectors.v2_folder.glob("part-*")):
        (folder / part.name).write_bytes(part.read_bytes())
    victim = sorted(folder.glob("part-*"))[1]
    data = bytearray(victim.read_bytes())
    data[450] ^= 1
    victim.write_bytes(bytes(data))
    staging = ctx._staging
    names = {p.name for p in staging.iterdir()} if staging is not None else set()
    names = {f"bigdl-{i:05d}" for i in range(ctx._staged + 1, ctx._staged + 3)} - names
    with pytest.raises(IntegrityError, match=victim.name):
        ctx.read(CBC).option("header", "true").csv(str(folder))
    # migrate_bigdl publishes atomically: the refused input left nothing in staging.
    staging = ctx._staging
    assert staging is None or not any(p.name in names for p in staging.iterdir())


def test_gcm_mode_does_not_read_bigdl_cbc(
    ctx: PPMLContext, world: tuple[Path, LocalKms, bigdl_vectors.Vectors]
) -> None:
    _, _, vectors = world
    with pytest.raises(Exception, match="not cipherspark-encrypted"):
        ctx.read(CryptoMode.AES_GCM_V1).csv(str(vectors.v2_folder))


@pytest.mark.parametrize(
    "args",
    [
        {"kms_type": "NoSuchKms"},
        {"kms_type": "EHSMKeyManagementService", "app_id": "a", "api_key": "b"},
        {"kms_type": "SimpleKeyManagementService", "app_id": "a"},
    ],
)
def test_bad_ppml_args_are_refused_before_spark(args: dict[str, str]) -> None:
    from cipherspark.ppml._keys import keys_from_ppml_args

    with pytest.raises(UsageError) as info:
        keys_from_ppml_args(args)
    assert "b" not in str(info.value).split("'")[1:2]  # names arguments, never values


def test_unknown_crypto_mode_refused() -> None:
    with pytest.raises(UsageError, match="unknown crypto mode"):
        CryptoMode.of("AES/ECB")
