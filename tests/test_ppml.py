"""cipherspark.ppml: BigDL's PPMLContext API. BigDL's own Python Simple Query (tests/data,
only its imports changed) runs on BigDL v2-encrypted input from the independent vector
generator and writes cipherspark's format; round trips in every mode; refusals."""

from __future__ import annotations

import base64
import csv
import io
import os
import random
import runpy
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from cipherspark.crypto.container import MAGIC
from cipherspark.crypto.manifest import read_manifest
from cipherspark.errors import CipherSparkError, IntegrityError, UsageError
from cipherspark.files import decrypt_path
from cipherspark.kms import LocalKms
from cipherspark.kms.registry import dataset_location
from cipherspark.ppml import CryptoMode, PPMLContext, PPMLSettings, PPMLWarning
from cipherspark.ppml._context import _Input
from cipherspark.settings import ExecutorConfig
from cipherspark.spark import read_encrypted_csv, secure_session
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


def test_settings_from_the_environment_come_through_cipherspark_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    props = tmp_path / "spark.properties"
    monkeypatch.setenv("CIPHERSPARK_KMS", "https://kms.example:8443")
    monkeypatch.setenv("CIPHERSPARK_KEY", "k1")
    monkeypatch.setenv("CIPHERSPARK_MASTER", "local[3]")
    monkeypatch.setenv("CIPHERSPARK_SPARK_PROPERTIES", str(props))
    monkeypatch.setenv("CIPHERSPARK_KMS_CA", "/ca.pem")
    found = PPMLSettings.from_environment()
    assert found.executor.kms_ca == Path("/ca.pem")
    assert found == PPMLSettings(
        kms_url="https://kms.example:8443",
        key="k1",
        credentials=TEST_CREDENTIALS,  # conftest's CIPHERSPARK_APP_ID / _API_KEY
        executor=ExecutorConfig.from_environ(os.environ),
        master="local[3]",
        spark_properties=props,
    )
    for name in ("CIPHERSPARK_KMS", "CIPHERSPARK_KEY", "CIPHERSPARK_MASTER"):
        monkeypatch.setenv(name, "")
    monkeypatch.delenv("CIPHERSPARK_SPARK_PROPERTIES")
    empty = PPMLSettings.from_environment()
    assert (empty.kms_url, empty.key, empty.master, empty.spark_properties) == (None,) * 4


def test_docs_write_then_read_back_in_one_mode(
    ctx: PPMLContext, world: tuple[Path, LocalKms, bigdl_vectors.Vectors], tmp_path: Path
) -> None:
    _, _, vectors = world
    expected = developers(vectors.csv)
    sc, people, out = ctx, str(vectors.v2_folder), str(tmp_path / "developers")
    # docs/ppml.md, "5. Write, then read back", as it is written there:
    df = sc.read(CryptoMode.AES_CBC_PKCS5PADDING).option("header", "true").csv(people)
    selected = df.filter((df["job"] == "Developer") & df["age"].between(20, 40))
    sc.write(selected, CryptoMode.AES_CBC_PKCS5PADDING).mode("overwrite").option(
        "header", "true"
    ).csv(out)
    back = sc.read(CryptoMode.AES_CBC_PKCS5PADDING).option("header", "true").csv(out)
    assert back.collect() and sorted(back.collect()) == sorted(selected.collect())
    assert sorted(tuple(r) for r in back.collect()) == expected
    # What was written is cipherspark's format, never CBC.
    parts = [p for p in Path(out).iterdir() if p.name.startswith("part-")]
    assert parts and all(p.read_bytes()[: len(MAGIC)] == MAGIC for p in parts)


WRITE_FORMATS = ["csv", "json", "text", "parquet"]


def write(
    ctx: PPMLContext, rows: list[tuple[str, str]], fmt: str, path: Path, mode: str | None
) -> None:
    df = ctx.spark.createDataFrame(rows, "name string, age string")
    if fmt == "text":
        df = df.selectExpr("concat_ws(',', name, age) AS value")
    writer = ctx.write(df, CryptoMode.AES_GCM_V1)
    if mode is not None:
        writer = writer.mode(mode)
    getattr(writer, fmt)(str(path))


def read_back(ctx: PPMLContext, fmt: str, path: Path) -> list[tuple[str, ...]]:
    df = getattr(ctx.read(CryptoMode.AES_GCM_V1), fmt)(str(path))
    if fmt == "text":
        return sorted(tuple(r[0].split(",")) for r in df.collect())
    return sorted((r["name"], r["age"]) for r in df.collect())


FIRST = [("ann", "31"), ("bob", "45")]
SECOND = [("cy", "22")]


@pytest.mark.parametrize("fmt", WRITE_FORMATS)
def test_save_mode_ignore_leaves_existing_output_untouched(
    ctx: PPMLContext, tmp_path: Path, fmt: str
) -> None:
    path = tmp_path / fmt
    write(ctx, FIRST, fmt, path, "ignore")  # nothing there yet: written
    before = snapshot(path)
    write(ctx, SECOND, fmt, path, "ignore")
    assert snapshot(path) == before
    assert read_back(ctx, fmt, path) == sorted(FIRST)


@pytest.mark.parametrize("mode", ["error", "errorifexists", None])
@pytest.mark.parametrize("fmt", WRITE_FORMATS)
def test_save_mode_error_refuses_and_leaves_existing_output_intact(
    ctx: PPMLContext, tmp_path: Path, fmt: str, mode: str | None
) -> None:
    path = tmp_path / fmt
    write(ctx, FIRST, fmt, path, "overwrite")
    before = snapshot(path)
    with pytest.raises(CipherSparkError, match="exists"):
        write(ctx, SECOND, fmt, path, mode)  # None: the default, errorifexists
    assert snapshot(path) == before
    assert read_back(ctx, fmt, path) == sorted(FIRST)


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def plaintext_key_folder(root: Path, primary_key_b64: str, plain: bytes, parts: int) -> Path:
    """A BigDL output folder under a plaintext primary key, by the independent generator: one
    data key per write (AES/ECB-wrapped under the primary key), one IV per part."""
    rng = random.Random(5)
    wrapped, data_key = bigdl_vectors.plaintext_wrap(primary_key_b64, rng)
    root.mkdir(parents=True)
    for i, chunk in enumerate(bigdl_vectors.split_csv(plain, parts)):
        part = root / f"part-{i:05d}-plain-c000.csv.cbc"
        part.write_bytes(bigdl_vectors.v2_file(chunk, wrapped, data_key, rng.randbytes(16)))
    (root / "_SUCCESS").write_bytes(b"")
    return root


def csv_rows(plain: bytes) -> list[tuple[str, ...]]:
    return sorted(tuple(r) for r in list(csv.reader(io.StringIO(plain.decode())))[1:])


def test_plaintext_primary_key_in_ppml_args(
    ctx: PPMLContext, world: tuple[Path, LocalKms, bigdl_vectors.Vectors], tmp_path: Path
) -> None:
    _, kms, vectors = world
    settings = PPMLSettings(kms_url=kms.url, key=TEST_KEY, credentials=TEST_CREDENTIALS)
    # BigDL's Python PPMLContext: kms_type "" (here absent) and primary_key_plaintext.
    args = {"primary_key_plaintext": bigdl_vectors.PRIMARY_KEY_PLAINTEXT}
    other_key = base64.b64encode(bytes(range(16, 32))).decode()
    folder = plaintext_key_folder(tmp_path / "plain-folder", other_key, vectors.csv, 3)
    plain = PPMLContext("ppml-plaintext-key", args, settings=settings, staging_dir=tmp_path)
    try:
        one = plain.read(CBC).option("header", "true").csv(str(vectors.v2_plaintext_key_file))
        assert sorted(tuple(r) for r in one.collect()) == csv_rows(vectors.csv)
        # Another plaintext primary key's data keys do not unwrap: refused, not garbage.
        with pytest.raises(IntegrityError, match="does not unwrap"):
            plain.read(CBC).csv(str(folder))
    finally:
        plain.close()
    other = PPMLContext(
        "ppml-plaintext-key",
        {"kms_type": "", "primary_key_plaintext": other_key},
        settings=settings,
        staging_dir=tmp_path,
    )
    try:
        df = other.read(CBC).option("header", "true").csv(str(folder))
        assert sorted(tuple(r) for r in df.collect()) == csv_rows(vectors.csv)
    finally:
        other.close()


def test_named_primary_keys_in_spark_conf(
    ctx: PPMLContext, world: tuple[Path, LocalKms, bigdl_vectors.Vectors], tmp_path: Path
) -> None:
    _, kms, vectors = world
    settings = PPMLSettings(kms_url=kms.url, key=TEST_KEY, credentials=TEST_CREDENTIALS)
    amy_key = base64.b64encode(bytes(range(32, 48))).decode()
    amy_folder = plaintext_key_folder(tmp_path / "amy", amy_key, vectors.csv, 2)
    prefix = "spark.bigdl.primaryKey."
    # BigDL's Scala multi-key configuration: one spark.bigdl.primaryKey.NAME.* group per key.
    conf = {
        "spark.master": "local[2]",
        f"{prefix}amy.plainText": amy_key,
        f"{prefix}bob.kms.type": "SimpleKeyManagementService",
        f"{prefix}bob.kms.appId": bigdl_vectors.APP_ID,
        f"{prefix}bob.kms.apiKey": bigdl_vectors.API_KEY,
        f"{prefix}bob.material": str(vectors.simple_primary_key),
    }
    named = PPMLContext("ppml-named-keys", None, conf, settings=settings, staging_dir=tmp_path)
    try:
        for name in conf:
            if name.startswith(prefix):  # never in Spark's conf: they are secrets
                assert named.spark.conf.get(name, None) is None
        amy = named.read(CBC, primary_key_name="amy").option("header", "true")
        bob = named.read(CBC, primary_key_name="bob").option("header", "true")
        assert sorted(tuple(r) for r in amy.csv(str(amy_folder)).collect()) == csv_rows(vectors.csv)
        assert sorted(tuple(r) for r in bob.csv(str(vectors.v2_folder)).collect()) == csv_rows(
            vectors.csv
        )
        with pytest.raises(IntegrityError):  # bob's files under amy's key
            named.read(CBC, primary_key_name="amy").csv(str(vectors.v2_folder))
        with pytest.raises(UsageError, match="several BigDL primary keys"):
            named.read(CBC).csv(str(amy_folder))
        with pytest.raises(UsageError, match=r"no BigDL primary key named .carl..*amy, bob"):
            named.read(CBC, primary_key_name="carl")
    finally:
        named.close()


def test_staged_bigdl_input_leaves_no_registry_record(
    ctx: PPMLContext, world: tuple[Path, LocalKms, bigdl_vectors.Vectors], tmp_path: Path
) -> None:
    _, kms, vectors = world
    settings = PPMLSettings(kms_url=kms.url, key=TEST_KEY, credentials=TEST_CREDENTIALS)
    context = PPMLContext(
        "ppml-registry", simple_args(vectors), settings=settings, staging_dir=tmp_path / "stage"
    )
    try:
        folder = context.read(CBC).option("header", "true").csv(str(vectors.v2_folder))
        assert folder.count() == len(csv_rows(vectors.csv))
        assert context._staging is not None
        staged = sorted(context._staging.iterdir())
        assert [p.name for p in staged] == ["bigdl-00001"]
        manifest = read_manifest(staged[0], lambda h: kms.unwrap_data_key(h.key_id, h.wrapped_key))
        assert manifest is not None and manifest.identity is not None
        staged_id = manifest.identity.dataset_id
        assert kms.dataset_at(dataset_location(staged[0])) is None
        # The registry is queried right: the context's own writes are registered.
        out = tmp_path / "out"
        context.write(folder, CBC).option("header", True).csv(str(out))
        assert kms.dataset_at(dataset_location(out)) is not None
        # Unregistered is not unchecked: another authentic dataset under the same key put in
        # the staged one's place is refused, by the planned read (bound to the commit it
        # planned) and by a new read with the staged input's pins (its dataset id).
        shutil.rmtree(staged[0])
        shutil.copytree(out, staged[0])
        with pytest.raises(Exception, match="changed after it was verified"):
            folder.collect()
        pins = _Input(staged[0], staged=True, key=TEST_KEY, dataset_id=staged_id).pins()
        with pytest.raises(IntegrityError, match=staged_id):
            read_encrypted_csv(context.spark, str(staged[0]), kms_url=context.kms_url, **pins)
    finally:
        # stop() is spark.stop() and then close(): close() is what removes the staging (the
        # suite's shared session must keep running).
        context.close()
    assert not staged[0].exists()
    assert kms.dataset_at(dataset_location(staged[0])) is None
    assert kms.find_dataset(staged_id) == []


def test_bigdl_parquet_reads_in_gcm_mode(
    ctx: PPMLContext, world: tuple[Path, LocalKms, bigdl_vectors.Vectors], tmp_path: Path
) -> None:
    """BigDL's PME Parquet (InMemoryKMS keys from its data-key string) read in AES_GCM_V1 mode:
    verified and re-encrypted on the driver, its rows exactly the ones BigDL wrote; no BigDL
    key in Spark's configuration; a flipped byte refused naming the file."""
    from tests.crypto import bigdl_parquet_vectors as pv

    _, kms, _ = world
    parquet = pv.write_vectors(tmp_path / "bigdl-parquet", rows=120, parts=2)
    settings = PPMLSettings(kms_url=kms.url, key=TEST_KEY, credentials=TEST_CREDENTIALS)
    args = {
        "kms_type": "SimpleKeyManagementService",
        "app_id": pv.APP_ID,
        "api_key": pv.API_KEY,
        "primary_key_material": str(parquet.simple_primary_key),
    }
    context = PPMLContext(
        "ppml-bigdl-parquet", args, {"spark.master": "local[2]"}, settings=settings,
        staging_dir=tmp_path / "staging",
    )  # fmt: skip
    try:
        df = context.read(CryptoMode.AES_GCM_V1).parquet(str(parquet.gcm_folder))
        expected = sorted(tuple(r.values()) for r in parquet.table.to_pylist())
        assert sorted(tuple(r) for r in df.collect()) == expected
        assert df.columns == parquet.table.column_names
        conf = dict(context.spark.sparkContext.getConf().getAll())
        assert not [v for v in conf.values() if parquet.data_key[:16] in v]
        part = sorted(parquet.gcm_folder.glob("part-*.parquet"))[1]
        data = bytearray(part.read_bytes())
        data[len(data) // 2] ^= 0x01
        part.write_bytes(bytes(data))
        with pytest.raises(IntegrityError, match=part.name):
            context.read(CryptoMode.AES_GCM_V1).parquet(str(parquet.gcm_folder))
    finally:
        context.close()
