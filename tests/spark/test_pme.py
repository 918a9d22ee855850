"""Parquet Modular Encryption in the secure session, with the embedded keystore: every write
encrypted (encrypted footer, AES_GCM_V1, double wrapping), reads need nothing, the KMS is
asked once per master key whatever the number of files and row groups, per-column keys,
tampering and missing keys as one error each, and pyarrow's PME reading the same files."""

from __future__ import annotations

import random
import string
import struct
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest
from pyspark.sql import DataFrame, SparkSession

from cipherspark.errors import IntegrityError, KeyNotFoundError, UsageError
from cipherspark.kms import LocalKms
from cipherspark.spark import read_encrypted_parquet, secure_session
from cipherspark.spark._errors import cipherspark_errors as parquet_errors
from cipherspark.spark._pme_keys import unwrap_key, wrap_key
from cipherspark.spark.pme import (
    ParquetEncryption,
    column_key_options,
    find_pme_jar,
    unsafe_plaintext_parquet_options,
    unsafe_plaintext_parquet_read_options,
)
from tests.conftest import TEST_CREDENTIALS, TEST_KEY

pytestmark = [
    pytest.mark.spark,
    pytest.mark.skipif(find_pme_jar() is None, reason="scripts/build-java has not been run"),
]


def canary() -> str:
    """14 random letters: cannot occur in the files by chance."""
    return "".join(random.choices(string.ascii_lowercase, k=14))


def parts(folder: Path) -> list[Path]:
    found = sorted(folder.glob("*.parquet"))
    assert found, f"no Parquet part in {folder}"
    return found


def footer_magic(path: Path) -> tuple[bytes, bytes]:
    data = path.read_bytes()
    return data[:4], data[-4:]


def crypto_metadata(path: Path) -> bytes:
    """FileCryptoMetaData (plaintext at the start of an encrypted footer's region) and the
    plaintext key metadata in it."""
    data = path.read_bytes()
    (length,) = struct.unpack("<I", data[-8:-4])
    return data[len(data) - 8 - length : len(data) - 8]


def client_calls(spark: SparkSession) -> tuple[int, int]:
    client = spark._jvm.org.cipherspark.pme.CipherSparkKmsClient  # type: ignore[union-attr]
    return int(client.wrapCalls()), int(client.unwrapCalls())


def forget_keks(spark: SparkSession) -> None:
    """Empty Parquet's KMS-client and key-encryption-key caches (a fresh JVM, as it were)."""
    keytools = spark._jvm.org.apache.parquet.crypto.keytools  # type: ignore[union-attr]
    keytools.KeyToolkit.removeCacheEntriesForAllTokens()


@pytest.fixture
def pme(spark: SparkSession, kms: LocalKms) -> Iterator[ParquetEncryption]:
    """The shared session, now encrypting Parquet under ``TEST_KEY`` of a fresh keystore; back
    to refusing Parquet writes afterwards."""
    encryption = ParquetEncryption(kms.url, TEST_KEY)
    secure_session(master="local[2]", credentials=TEST_CREDENTIALS, parquet=encryption)
    yield encryption
    secure_session(master="local[2]", credentials=TEST_CREDENTIALS)


def people(spark: SparkSession, names: list[str], rows: int = 200) -> DataFrame:
    data = [(i, names[i % len(names)], f"{i:09d}-{names[i % len(names)]}") for i in range(rows)]
    return spark.createDataFrame(data, "id long, name string, ssn string")


def test_every_parquet_write_is_encrypted(
    spark: SparkSession, pme: ParquetEncryption, tmp_path: Path
) -> None:
    names = [canary() for _ in range(5)]
    df = people(spark, names)
    out = tmp_path / "out"
    df.write.parquet(str(out))  # an ordinary write: no option of ours
    for part in parts(out):
        # PARE at both ends: an encrypted footer (plaintext footers end in PAR1).
        assert footer_magic(part) == (b"PARE", b"PARE")
        data = part.read_bytes()
        assert not any(name.encode() in data for name in names)
        meta = crypto_metadata(part)
        # EncryptionAlgorithm union, field 1 (AES_GCM_V1), not 2 (AES_GCM_CTR_V1).
        assert meta[:2] == b"\x1c\x1c"
        # Key material: double wrapping, the KEK wrapped through cipherspark's KMS.
        assert b'"doubleWrapping":true' in meta
        assert f'"masterKeyID":"{TEST_KEY}"'.encode() in meta
        assert b'"wrappedKEK":"cspk1:' in meta
    # Reading needs nothing.
    back = spark.read.parquet(str(out))
    assert sorted(back.collect()) == sorted(df.collect())


def test_a_session_without_a_key_refuses_parquet_writes(
    spark: SparkSession, tmp_path: Path
) -> None:
    out = tmp_path / "refused"
    with pytest.raises(UsageError, match="no KMS for Parquet encryption"), parquet_errors():
        spark.range(10).write.parquet(str(out))
    assert not list(out.rglob("*.parquet"))


def test_plaintext_parquet_only_through_the_named_opt_out(
    spark: SparkSession, pme: ParquetEncryption, tmp_path: Path
) -> None:
    name = canary()
    df = people(spark, [name], rows=10)
    one = tmp_path / "one-write"
    df.write.options(**unsafe_plaintext_parquet_options()).parquet(str(one))
    assert all(footer_magic(p) == (b"PAR1", b"PAR1") for p in parts(one))
    assert any(name.encode() in p.read_bytes() for p in parts(one))
    # The session-wide opt-out.
    secure_session(master="local[2]", credentials=TEST_CREDENTIALS, unsafe_plaintext_parquet=True)
    whole = tmp_path / "session"
    df.write.parquet(str(whole))
    assert all(footer_magic(p) == (b"PAR1", b"PAR1") for p in parts(whole))
    # That session (no Parquet encryption at all) reads plaintext Parquet too.
    assert sorted(spark.read.parquet(str(whole)).collect()) == sorted(df.collect())
    # An encrypting session reads plaintext Parquet only through a named opt-out: per read,
    secure_session(master="local[2]", credentials=TEST_CREDENTIALS, parquet=pme)
    reader = spark.read.options(**unsafe_plaintext_parquet_read_options())
    assert sorted(reader.parquet(str(whole)).collect()) == sorted(df.collect())
    # or for the session.
    secure_session(
        master="local[2]",
        credentials=TEST_CREDENTIALS,
        parquet=pme,
        unsafe_plaintext_parquet_reads=True,
    )
    assert sorted(spark.read.parquet(str(whole)).collect()) == sorted(df.collect())
    with pytest.raises(UsageError, match="not both"):
        secure_session(master="local[2]", parquet=pme, unsafe_plaintext_parquet=True)


def plant_plaintext_part(table: Path, rows: list[tuple[int, str, str]]) -> Path:
    """What storage can do without any key: write a plaintext Parquet file of its own rows into
    an encrypted table (here by pyarrow, as an attacker would, in the table's schema)."""
    planted = table / "part-99999-planted.snappy.parquet"
    columns = list(zip(*rows, strict=True))
    pq.write_table(
        pa.table(
            {
                "id": pa.array(columns[0], pa.int64()),
                "name": pa.array(columns[1], pa.string()),
                "ssn": pa.array(columns[2], pa.string()),
            }
        ),
        str(planted),
    )
    assert footer_magic(planted) == (b"PAR1", b"PAR1")
    return planted


def test_a_plaintext_file_planted_in_an_encrypted_table_is_refused_where_it_is_read(
    spark: SparkSession, pme: ParquetEncryption, tmp_path: Path
) -> None:
    out = tmp_path / "table"
    people(spark, [canary()], rows=50).write.parquet(str(out))
    planted = plant_plaintext_part(out, [(1_000_000, "mallory", "forged")])
    # No check of ours before the read (an unmodified application's plain spark.read), and a
    # given schema: the driver reads no footer, so the refusal is the reading task's.
    frame = spark.read.schema("id long, name string, ssn string").parquet(str(out))
    with (
        pytest.raises(IntegrityError, match=rf"{planted.name} is not encrypted"),
        parquet_errors(),
    ):
        frame.collect()


def test_read_encrypted_parquet_is_still_refused_after_its_check_is_raced(
    spark: SparkSession,
    pme: ParquetEncryption,
    kms: LocalKms,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The early check of read_encrypted_parquet runs once, on the driver: storage can swap a
    file after it. What holds is the check each reading JVM makes: a planted plaintext file,
    and a file under another key the caller may read too (another table's), are refused."""
    import cipherspark.spark.pme as pme_module

    kms.create_key("other-table")
    table = tmp_path / "table"
    people(spark, [canary()], rows=50).coalesce(1).write.parquet(str(table))
    other = tmp_path / "other"
    people(spark, [canary()], rows=5).coalesce(1).write.options(
        **column_key_options("other-table", {"other-table": ["ssn"]})
    ).parquet(str(other))
    # The check passed, then the files changed: as if they changed between the two.
    real_check = pme_module.check_encrypted_parquet
    monkeypatch.setattr(pme_module, "check_encrypted_parquet", lambda *a, **k: TEST_KEY)

    swapped = table / parts(other)[0].name
    swapped.write_bytes(parts(other)[0].read_bytes())
    with (
        pytest.raises(IntegrityError, match=rf"{swapped.name} is under key 'other-table'"),
        parquet_errors(),
    ):
        read_encrypted_parquet(spark, str(table), key=TEST_KEY).collect()
    swapped.unlink()

    planted = plant_plaintext_part(table, [(1_000_000, "mallory", "forged")])
    with (
        pytest.raises(IntegrityError, match=rf"{planted.name} is not encrypted"),
        parquet_errors(),
    ):
        read_encrypted_parquet(spark, str(table), key=TEST_KEY).collect()
    planted.unlink()
    # Unraced, the table reads, under its pinned key.
    monkeypatch.setattr(pme_module, "check_encrypted_parquet", real_check)
    assert read_encrypted_parquet(spark, str(table), key=TEST_KEY).count() == 50


def test_kms_calls_do_not_grow_with_files_and_row_groups(
    spark: SparkSession, pme: ParquetEncryption, tmp_path: Path
) -> None:
    df = people(spark, [canary() for _ in range(50)], rows=20_000)
    shapes = {"small": (1, None), "large": (12, "4096")}
    wraps: dict[str, int] = {}
    unwraps: dict[str, int] = {}
    groups: dict[str, int] = {}
    for name, (files, block) in shapes.items():
        forget_keks(spark)
        before = client_calls(spark)
        writer = df.repartition(files).write
        if block is not None:
            # Tiny row groups: a few hundred rows each.
            writer = writer.option("parquet.block.size", block)
        writer.parquet(str(tmp_path / name))
        wraps[name] = client_calls(spark)[0] - before[0]
        forget_keks(spark)
        before = client_calls(spark)
        assert spark.read.parquet(str(tmp_path / name)).count() == 20_000
        assert spark.read.parquet(str(tmp_path / name)).selectExpr("max(ssn)").first()
        unwraps[name] = client_calls(spark)[1] - before[1]
        groups[name] = sum(
            arrow_file(p, pme).metadata.num_row_groups for p in parts(tmp_path / name)
        )
    assert len(parts(tmp_path / "large")) == 12
    assert groups["small"] == 1 and groups["large"] >= 100, groups
    # One KEK per master key and JVM: one wrap to write, one unwrap to read, whatever the shape.
    assert wraps == {"small": 1, "large": 1}
    assert unwraps == {"small": 1, "large": 1}


def test_column_keys_a_reader_without_one_reads_the_other_columns(
    spark: SparkSession, pme: ParquetEncryption, kms: LocalKms, tmp_path: Path
) -> None:
    kms.create_key("pii")
    ssn = canary()
    df = spark.createDataFrame(
        [(1, "ann", ssn), (2, "bob", ssn + "x")], "id long, name string, ssn string"
    )
    out = tmp_path / "columns"
    df.write.options(**column_key_options(TEST_KEY, {"pii": ["ssn"]})).parquet(str(out))
    for part in parts(out):
        assert footer_magic(part) == (b"PARE", b"PARE")
        assert ssn.encode() not in part.read_bytes()
        assert b'"masterKeyID":"pii"' not in crypto_metadata(part)  # column keys: in the footer
    # Take the column key away from this caller before anything here unwrapped it (the key
    # helper keeps what it unwrapped in memory, as executors do).
    key_file = Path(kms.url.removeprefix("file://")) / "keys" / "pii.json"
    hidden = key_file.with_suffix(".hidden")
    key_file.rename(hidden)
    try:
        forget_keks(spark)
        frame = spark.read.parquet(str(out))
        assert sorted(frame.select("id", "name").collect()) == [(1, "ann"), (2, "bob")]
        with pytest.raises(KeyNotFoundError, match="pii"), parquet_errors():
            frame.select("ssn").collect()
    finally:
        hidden.rename(key_file)
    forget_keks(spark)
    assert sorted(spark.read.parquet(str(out)).collect()) == sorted(df.collect())


@pytest.mark.parametrize("where", [0.1, 0.5, 0.97])
def test_a_tampered_file_is_one_integrity_error(
    spark: SparkSession, pme: ParquetEncryption, tmp_path: Path, where: float
) -> None:
    out = tmp_path / "tampered"
    people(spark, [canary()], rows=500).coalesce(1).write.parquet(str(out))
    # Storage is the attacker's: it rewrites the file and Hadoop's checksum files alike.
    for crc in out.glob(".*.crc"):
        crc.unlink()
    (part,) = parts(out)
    data = bytearray(part.read_bytes())
    data[int(len(data) * where)] ^= 0x01
    part.write_bytes(bytes(data))
    forget_keks(spark)
    with (
        pytest.raises(IntegrityError, match=rf"{part.name} does not authenticate"),
        parquet_errors(),
    ):
        spark.read.parquet(str(out)).collect()


def test_a_file_under_a_key_the_caller_lacks(
    spark: SparkSession, pme: ParquetEncryption, tmp_path: Path, credentials
) -> None:
    out = tmp_path / "other"
    people(spark, [canary()], rows=10).write.parquet(str(out))
    # The same key name in another keystore is another key.
    other = LocalKms(tmp_path / "other-kms", credentials, create=True)
    other.create_key(TEST_KEY)
    secure_session(
        master="local[2]",
        credentials=TEST_CREDENTIALS,
        parquet=ParquetEncryption(other.url, TEST_KEY),
    )
    with pytest.raises(IntegrityError, match=TEST_KEY), parquet_errors():
        spark.read.parquet(str(out)).collect()
    other.close()


# -- pyarrow's PME, with a KmsClient over cipherspark's key code ----------------------------------


class CipherSparkArrowKms(pe.KmsClient):
    """A pyarrow KmsClient doing what the JVM's does, in this process."""

    def __init__(self, config: pe.KmsConnectionConfig) -> None:
        super().__init__()
        self.url = config.kms_instance_url

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        return wrap_key(self.url, master_key_identifier, key_bytes)

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        return unwrap_key(self.url, master_key_identifier, wrapped_key)


def arrow_factory() -> pe.CryptoFactory:
    return pe.CryptoFactory(CipherSparkArrowKms)


def arrow_file(path: Path, encryption: ParquetEncryption) -> pq.ParquetFile:
    config = pe.KmsConnectionConfig(kms_instance_url=encryption.kms_url)
    props = arrow_factory().file_decryption_properties(config, pe.DecryptionConfiguration())
    return pq.ParquetFile(str(path), decryption_properties=props)


def test_pyarrow_reads_cipherspark_files_and_spark_reads_pyarrows(
    spark: SparkSession, pme: ParquetEncryption, tmp_path: Path
) -> None:
    names = [canary() for _ in range(3)]
    df = people(spark, names, rows=30)
    out = tmp_path / "spark"
    df.write.parquet(str(out))
    got = pa.concat_tables([arrow_file(p, pme).read() for p in parts(out)])
    assert sorted(got.to_pylist(), key=lambda r: r["id"]) == [
        r.asDict() for r in sorted(df.collect())
    ]

    table = pa.table({"id": [1, 2, 3], "name": names, "ssn": [n + "!" for n in names]})
    config = pe.KmsConnectionConfig(kms_instance_url=pme.kms_url)
    props = arrow_factory().file_encryption_properties(
        config,
        pe.EncryptionConfiguration(
            footer_key=TEST_KEY, uniform_encryption=True, encryption_algorithm="AES_GCM_V1"
        ),
    )
    folder = tmp_path / "arrow"
    folder.mkdir()
    pq.write_table(table, str(folder / "part-0.parquet"), encryption_properties=props)
    data = (folder / "part-0.parquet").read_bytes()
    assert data[-4:] == b"PARE" and not any(n.encode() in data for n in names)
    forget_keks(spark)
    back = spark.read.parquet(str(folder)).orderBy("id").collect()
    assert [tuple(r) for r in back] == list(
        zip([1, 2, 3], names, [n + "!" for n in names], strict=True)
    )


def test_a_session_configured_for_parquet_needs_the_built_client(monkeypatch) -> None:
    import cipherspark.spark.pme as pme_module
    from cipherspark.errors import InputError

    monkeypatch.setattr(pme_module, "find_pme_jar", lambda: None)
    with pytest.raises(InputError, match="scripts/build-java"):
        secure_session(master="local[2]", parquet=ParquetEncryption("file:///x", TEST_KEY))


def test_the_parquet_settings() -> None:
    from cipherspark.spark.pme import NO_KMS, parquet_properties, session_conf

    uniform = parquet_properties(ParquetEncryption("file:///k", "main"))
    assert uniform["parquet.encryption.uniform.key"] == "main"
    assert uniform["parquet.encryption.footer.key"] == ""
    assert uniform["parquet.encryption.column.keys"] == ""
    assert uniform["parquet.encryption.algorithm"] == "AES_GCM_V1"
    assert uniform["parquet.encryption.plaintext.footer"] == "false"
    assert uniform["parquet.encryption.double.wrapping"] == "true"
    assert uniform["parquet.encryption.data.key.length.bits"] == "256"
    columns = parquet_properties(ParquetEncryption("file:///k", "main", {"pii": ["ssn", "a.b"]}))
    assert columns["parquet.encryption.uniform.key"] == ""
    assert columns["parquet.encryption.footer.key"] == "main"
    assert columns["parquet.encryption.column.keys"] == "pii:ssn,a.b"
    assert columns["parquet.encryption.complete.columns"] == "true"  # nothing left plaintext
    refusing = parquet_properties(None)
    assert refusing["parquet.encryption.kms.instance.url"] == NO_KMS
    assert refusing["parquet.encryption.uniform.key"]
    plain = parquet_properties(None, unsafe_plaintext_parquet=True)
    assert not plain["parquet.encryption.uniform.key"]
    assert not plain["parquet.encryption.footer.key"]
    # One access token per KMS: Parquet's KEK caches must not mix two keystores' "main".
    other = parquet_properties(ParquetEncryption("file:///other", "main"))
    assert (
        other["parquet.encryption.key.access.token"]
        != uniform["parquet.encryption.key.access.token"]
    )
    conf = session_conf(None, jar=Path("/x/c.jar"), existing_jars="/y/a.jar")
    assert conf["spark.jars"] == "/y/a.jar,/x/c.jar"
    assert conf["spark.hadoop.parquet.encryption.kms.instance.url"] == NO_KMS
    assert session_conf(None, existing_jars="/y/a.jar")["spark.jars"] == "/y/a.jar"


@pytest.mark.parametrize(
    "bad",
    [
        {"footer_key": "bad key"},
        {"column_keys": {"pii": []}},
        {"column_keys": {"pii": "ssn"}},
        {"column_keys": {"pii": ["ssn"], "other": ["ssn"]}},
        {"column_keys": {"pii": ["a,b"]}},
        {"cache_lifetime_seconds": 0},
    ],
)
def test_invalid_parquet_encryption_is_refused(bad: dict) -> None:
    with pytest.raises(UsageError):
        ParquetEncryption(**{"kms_url": "file:///k", "footer_key": "main", **bad})
    with pytest.raises(UsageError):
        column_key_options("main", {})
