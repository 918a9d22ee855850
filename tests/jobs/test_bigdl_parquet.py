"""``migrate bigdl`` of BigDL PPML's encrypted Parquet (PME under parquet-java's InMemoryKMS).

The inputs are independent: pyarrow vectors (tests/crypto/bigdl_parquet_vectors.py, no
cipherspark code) and one folder written by real Spark with parquet-java's
``PropertiesDrivenCryptoFactory`` and an ``InMemoryKMS``, configured as BigDL configures them.
The outputs are read back by cipherspark's readers (its Spark reader, and pyarrow through its
Parquet key code) and must equal the plaintext rows exactly. Then the refusals: a flipped byte,
a wrong key, a CTR file without the opt-in, a mixed folder, no ``.meta``: named, nothing written.
"""

from __future__ import annotations

import datetime as dt
import json
import pickle
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from unittest.mock import create_autospec

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest

from cipherspark.cli import main
from cipherspark.crypto._bigdl import ExportedDataKeys, PlaintextPrimaryKey, SimpleKms
from cipherspark.errors import CredentialsError, FormatError, InputError, IntegrityError
from cipherspark.jobs._bigdl_parquet import ParquetLayout, master_keys, wrap_kek
from cipherspark.jobs.migrate import BigDLSource, check_bigdl, migrate_bigdl
from cipherspark.kms import LocalKms, open_kms
from cipherspark.kms.remote import RemoteKms
from cipherspark.spark.pme import check_encrypted_parquet, find_pme_jar
from tests.conftest import TEST_CREDENTIALS, TEST_KEY
from tests.crypto import bigdl_parquet_vectors as pv
from tests.crypto import bigdl_vectors as bv
from tests.spark.test_pme import CipherSparkArrowKms, crypto_metadata


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` and its bytes: "nothing written" compares two of them."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def run(capsys: pytest.CaptureFixture[str], *args: str, secrets: tuple[str, ...] = ()) -> Result:
    """The CLI in this process; no traceback and no BigDL secret in what it prints."""
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    for text in (out, err):
        assert "Traceback" not in text
        for secret in (pv.API_KEY, *secrets):
            assert secret not in text
    return Result(code, out, err)


@pytest.fixture
def vectors(tmp_path: Path) -> pv.ParquetVectors:
    return pv.write_vectors(tmp_path / "bigdl")


def simple(primary_key_file: Path) -> BigDLSource:
    return BigDLSource(
        SimpleKms.from_material(pv.APP_ID, pv.API_KEY, primary_key_file.read_bytes())
    )


def read_back(path: Path, kms_url: str) -> list[dict[str, object]]:
    """The rows of cipherspark's encrypted Parquet at ``path``, through pyarrow with
    cipherspark's Parquet key code (the JVM's KMS client's, in this process)."""
    config = pe.KmsConnectionConfig(kms_instance_url=kms_url)
    props = pe.CryptoFactory(CipherSparkArrowKms).file_decryption_properties(
        config, pe.DecryptionConfiguration()
    )
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    rows: list[dict[str, object]] = []
    for file in files:
        rows += pq.ParquetFile(str(file), decryption_properties=props).read().to_pylist()
    return rows


def assert_cipherspark_parquet(path: Path, secrets: list[str]) -> None:
    """The Spark writer's shape: PARE, AES_GCM_V1, double wrapping, the KEK through the KMS."""
    data = path.read_bytes()
    assert data[:4] == data[-4:] == b"PARE"
    meta = crypto_metadata(path)
    assert meta[:2] == b"\x1c\x1c"  # EncryptionAlgorithm: AES_GCM_V1
    assert f'"masterKeyID":"{TEST_KEY}"'.encode() in meta
    assert b'"doubleWrapping":true' in meta and b'"wrappedKEK":"cspk1:' in meta
    assert b"footerKey" not in data and b"key1" not in data
    for secret in secrets:
        assert secret.encode() not in data


def footer_key_material(path: Path) -> dict[str, object]:
    """The footer key's key material (the JSON in the plaintext FileCryptoMetaData)."""
    meta = crypto_metadata(path)
    # Not the first "{": the binary Thrift before the JSON (a random AAD prefix) may hold one.
    found = re.search(rb'\{"keyMaterialType":.*?\}', meta, re.S)
    assert found is not None
    return dict(json.loads(found.group()))


def test_the_vectors_are_bigdl_parquet(vectors: pv.ParquetVectors) -> None:
    """The generator's own check: BigDL's settings show in the files, and they read back."""
    for part, expected in zip(
        sorted(vectors.gcm_folder.glob("part-*")), vectors.parts, strict=True
    ):
        meta = crypto_metadata(part)
        assert part.read_bytes()[:4] == b"PARE" and meta[:2] == b"\x1c\x1c"
        assert b'"masterKeyID":"footerKey"' in meta and b'"doubleWrapping":true' in meta
        assert pv.read_bigdl_parquet(part, vectors.data_key).equals(expected)
    ctr = next(vectors.ctr_folder.glob("part-*"))
    assert crypto_metadata(ctr)[:2] == b"\x1c\x2c"  # AES_GCM_CTR_V1
    assert json.loads((vectors.gcm_folder / ".meta").read_text())["encryptedDataKey"]


def test_a_folder_migrates_to_cipherspark_parquet(
    vectors: pv.ParquetVectors, kms: LocalKms, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = migrate_bigdl(
        vectors.gcm_folder, out, kms, TEST_KEY, simple(vectors.simple_primary_key)
    )
    assert (result.files, result.dataset, result.unverified) == (3, None, ())
    inputs = sorted(p.name for p in vectors.gcm_folder.glob("part-*"))
    assert sorted(p.name for p in out.iterdir()) == inputs  # no .meta, _SUCCESS or .crc
    names = vectors.table.column("name").to_pylist()
    for part in out.iterdir():
        assert_cipherspark_parquet(part, names[:20])
    # One KEK for the migration, wrapped by the KMS once; fresh data keys per file.
    materials = [footer_key_material(p) for p in out.iterdir()]
    assert len({m["wrappedKEK"] for m in materials}) == 1
    assert len({m["wrappedDEK"] for m in materials}) == 3
    assert result.ciphertext_bytes == sum(p.stat().st_size for p in out.iterdir())
    assert check_encrypted_parquet(out, key_id=TEST_KEY) == TEST_KEY
    assert read_back(out, kms.url) == vectors.table.to_pylist()


def test_a_single_file_migrates_to_one_file(
    vectors: pv.ParquetVectors, kms: LocalKms, tmp_path: Path
) -> None:
    out = tmp_path / "people.parquet"
    result = migrate_bigdl(
        vectors.single_file, out, kms, TEST_KEY, simple(vectors.simple_primary_key)
    )
    assert result.files == 1 and out.is_file()
    assert_cipherspark_parquet(out, [])
    assert read_back(out, kms.url) == vectors.table.to_pylist()


def _flip(path: Path, offset: int) -> None:
    """Flip one bit of ``path`` at ``offset``."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _first_page(path: Path, data_key: str) -> int:
    """Where the first column chunk's pages start (read with the vectors' own keys)."""
    column = pv.bigdl_file(path, data_key).metadata.row_group(0).column(0)
    return int(column.dictionary_page_offset or column.data_page_offset)


@pytest.mark.parametrize("where", ["page-header", "page-data", "footer", "key-material"])
def test_a_flipped_byte_refuses_the_migration_by_name(
    vectors: pv.ParquetVectors, kms: LocalKms, tmp_path: Path, where: str
) -> None:
    victim = sorted(vectors.gcm_folder.glob("part-*"))[1]
    size = victim.stat().st_size
    offset = {
        # Inside the first page header's AES-GCM module (after its length and nonce).
        "page-header": _first_page(victim, vectors.data_key) + 20,
        "page-data": _first_page(victim, vectors.data_key) + 200,
        "footer": size - 8 - 20,  # the encrypted footer's tag
        "key-material": victim.read_bytes().index(b'"wrappedKEK":"') + 20,
    }[where]
    _flip(victim, offset)
    before = snapshot(tmp_path)
    with pytest.raises(IntegrityError) as refused:
        migrate_bigdl(
            vectors.gcm_folder, tmp_path / "out", kms, TEST_KEY, simple(vectors.simple_primary_key)
        )
    message = str(refused.value)
    assert message.startswith("refusing to migrate: ") and message.endswith("nothing written")
    assert victim.name in message and vectors.data_key not in message
    assert snapshot(tmp_path) == before  # no output, no staging folder


@pytest.mark.parametrize(
    "keys",
    [
        # Same APP ID, other random digits: footerKey (from the APP ID's digits) is right, key1
        # is not; the columns' keys then do not unwrap.
        pytest.param(lambda: SimpleKms(pv.APP_ID + "0000"), id="simplekms-other-digits"),
        pytest.param(lambda: SimpleKms("9" * 16), id="simplekms-other-app"),
    ],
)
def test_a_wrong_key_is_refused(
    vectors: pv.ParquetVectors, kms: LocalKms, tmp_path: Path, keys: Callable[[], SimpleKms]
) -> None:
    if vectors.simple_primary_key.read_text().strip() == pv.APP_ID + "0000":
        pytest.skip("the vectors' random digits happen to be 0000")
    with pytest.raises(IntegrityError, match="the BigDL key is wrong") as refused:
        migrate_bigdl(vectors.gcm_folder, tmp_path / "out", kms, TEST_KEY, BigDLSource(keys()))
    assert "part-00000" in str(refused.value) and "nothing written" in str(refused.value)
    assert not (tmp_path / "out").exists()


def test_a_kms_server_wraps_the_kek_with_transit() -> None:
    """As the JVM's KMS client does without a TEE: Transit encrypt, readable by any Vault-Transit
    PME reader with access (the embedded keystore's cspk1: envelope is read back above)."""
    server = create_autospec(RemoteKms, instance=True)
    server.transit_encrypt.return_value = "vault:v1:c2VhbGVk"
    assert wrap_kek(server, TEST_KEY, b"k" * 16) == "vault:v1:c2VhbGVk"
    server.transit_encrypt.assert_called_once_with(TEST_KEY, b"k" * 16)
    server.generate_data_key.assert_not_called()


def test_exported_data_keys_read_the_meta(
    vectors: pv.ParquetVectors, kms: LocalKms, tmp_path: Path
) -> None:
    wrapped = json.loads((vectors.gcm_folder / ".meta").read_text())["encryptedDataKey"]
    source = BigDLSource(ExportedDataKeys({wrapped: vectors.data_key}))
    migrate_bigdl(vectors.gcm_folder, tmp_path / "out", kms, TEST_KEY, source)
    assert read_back(tmp_path / "out", kms.url) == vectors.table.to_pylist()


def test_check_only_reports_parquet_files(vectors: pv.ParquetVectors, tmp_path: Path) -> None:
    source = simple(vectors.simple_primary_key)
    parts = sorted(vectors.gcm_folder.glob("part-*"))
    checks = check_bigdl(vectors.gcm_folder, source)
    assert [(c.path, c.layout, c.verified, c.problem) for c in checks] == [
        (p, ParquetLayout.AES_GCM_V1, True, None) for p in parts
    ]
    _flip(parts[2], parts[2].stat().st_size // 2)
    checks = check_bigdl(vectors.gcm_folder, source)
    assert [c.ok for c in checks] == [True, True, False]
    assert checks[2].problem is not None and parts[2].name in checks[2].problem


def test_ctr_files_need_the_opt_in_and_are_reported_unverified(
    vectors: pv.ParquetVectors, kms: LocalKms, tmp_path: Path
) -> None:
    strict = simple(vectors.simple_primary_key)
    [refused] = check_bigdl(vectors.ctr_folder, strict)
    assert refused.problem is not None and "--unsafe-unauthenticated-input" in refused.problem
    with pytest.raises(IntegrityError, match="AES_GCM_CTR_V1"):
        migrate_bigdl(vectors.ctr_folder, tmp_path / "out", kms, TEST_KEY, strict)
    assert not (tmp_path / "out").exists()

    lenient = BigDLSource(strict.keys, allow_unauthenticated=True)
    [check] = check_bigdl(vectors.ctr_folder, lenient)
    assert (check.layout, check.verified, check.problem) == (
        ParquetLayout.AES_GCM_CTR_V1,
        False,
        None,
    )
    result = migrate_bigdl(vectors.ctr_folder, tmp_path / "out", kms, TEST_KEY, lenient)
    assert result.unverified == (check.path,)
    assert read_back(tmp_path / "out", kms.url) == vectors.table.to_pylist()


def test_a_folder_of_parquet_and_cbc_files_is_refused(
    vectors: pv.ParquetVectors, kms: LocalKms, tmp_path: Path
) -> None:
    wrapped = bv.simple_wrap(vectors.simple_primary_key.read_text().strip(), random.Random(1))
    cbc = bv.v2_file(b"name\nx\n", wrapped, "0" * 32, bytes(16))
    (vectors.gcm_folder / "part-00009-c000.csv.cbc").write_bytes(cbc)
    source = simple(vectors.simple_primary_key)
    for call in (
        lambda: check_bigdl(vectors.gcm_folder, source),
        lambda: migrate_bigdl(vectors.gcm_folder, tmp_path / "out", kms, TEST_KEY, source),
    ):
        with pytest.raises(InputError, match=r"mixes Parquet files .* and other files .*csv\.cbc"):
            call()
    assert not (tmp_path / "out").exists()


def test_what_the_folder_needs(vectors: pv.ParquetVectors, kms: LocalKms, tmp_path: Path) -> None:
    source = simple(vectors.simple_primary_key)
    # A plaintext Parquet file among the encrypted ones is refused by name.
    plain = vectors.gcm_folder / "part-00007-plain-c000.snappy.parquet"
    pq.write_table(pa.table({"name": ["x"]}), str(plain))
    with pytest.raises(IntegrityError, match=f"{plain.name}: plaintext Parquet"):
        migrate_bigdl(vectors.gcm_folder, tmp_path / "out", kms, TEST_KEY, source)
    plain.unlink()
    # No .meta: nothing says which data key (BigDL's reader needs it too).
    (vectors.gcm_folder / ".meta").unlink()
    with pytest.raises(InputError, match=r"\.meta does not exist"):
        check_bigdl(vectors.gcm_folder, source)
    # A plaintext primary key's data keys (24 characters) cannot have written Parquet.
    wrapped, data_key = bv.plaintext_wrap(bv.PRIMARY_KEY_PLAINTEXT, random.Random(2))
    assert len(data_key) == 24
    pv.write_meta(vectors.gcm_folder, wrapped)
    plaintext_key = BigDLSource(PlaintextPrimaryKey.from_base64(bv.PRIMARY_KEY_PLAINTEXT))
    with pytest.raises(CredentialsError, match=r"\.meta: the BigDL data key has 24 characters"):
        check_bigdl(vectors.gcm_folder, plaintext_key)
    with pytest.raises(CredentialsError, match="cannot have written Parquet"):
        master_keys("A" * 24)
    # A .meta that is not BigDL's.
    (vectors.gcm_folder / ".meta").write_text("[1]")
    with pytest.raises(FormatError, match=r"\.meta: not BigDL's \.meta"):
        check_bigdl(vectors.gcm_folder, source)
    assert not (tmp_path / "out").exists()


# -- the CLI -------------------------------------------------------------------------------


def test_the_cli_migrates_and_checks_bigdl_parquet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("CIPHERSPARK_KMS", "CIPHERSPARK_KEY", "CIPHERSPARK_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CIPHERSPARK_APP_ID", TEST_CREDENTIALS.app_id)
    monkeypatch.setenv("CIPHERSPARK_API_KEY", TEST_CREDENTIALS.api_key)
    with open_kms(None, TEST_CREDENTIALS, create=True) as service:
        service.create_key(TEST_KEY)
        url = service.url
    vectors = pv.write_vectors(tmp_path / "bigdl")
    (tmp_path / "apikey").write_text(pv.API_KEY + "\n")
    bigdl = [
        "--bigdl-app-id",
        pv.APP_ID,
        "--bigdl-api-key-file",
        "apikey",
        "--bigdl-primary-key",
        str(vectors.simple_primary_key),
    ]
    secrets = (vectors.data_key, vectors.simple_primary_key.read_text().strip())
    checked = run(
        capsys, "migrate", "bigdl", str(vectors.gcm_folder), "--check-only", *bigdl, secrets=secrets
    )
    assert checked.code == 0, checked.err
    lines = checked.out.splitlines()
    assert len(lines) == 3 and all(
        line.startswith("verified") and "(parquet AES_GCM_V1, " in line for line in lines
    )

    done = run(
        capsys,
        "migrate",
        "bigdl",
        str(vectors.gcm_folder),
        "out",
        "--key",
        TEST_KEY,
        *bigdl,
        secrets=secrets,
    )
    assert done.code == 0, done.err
    assert done.err == "" and "migrated 3 BigDL file(s)" in done.out
    assert read_back(tmp_path / "out", url) == vectors.table.to_pylist()

    _flip(sorted(vectors.gcm_folder.glob("part-*"))[0], 300)
    before = snapshot(tmp_path)
    refused = run(
        capsys,
        "migrate",
        "bigdl",
        str(vectors.gcm_folder),
        "out2",
        "--key",
        TEST_KEY,
        *bigdl,
        secrets=secrets,
    )
    assert refused.code == 1 and refused.out == ""
    [line] = refused.err.splitlines()
    assert line.startswith("cipherspark: error: refusing to migrate: ") and "part-00000" in line
    assert snapshot(tmp_path) == before


# -- real Spark, parquet-java's InMemoryKMS ----------------------------------------------------

# parquet-java's test-only InMemoryKMS (parquet-hadoop's tests jar, which PySpark does not ship),
# restated: BigDL configures this class name. Keys wrapped by KeyToolkit.encryptKeyLocally.
_IN_MEMORY_KMS = """
package org.apache.parquet.crypto.keytools.mocks;

import java.nio.charset.StandardCharsets;
import java.util.Base64;
import java.util.HashMap;
import java.util.Map;
import org.apache.hadoop.conf.Configuration;
import org.apache.parquet.crypto.ParquetCryptoRuntimeException;
import org.apache.parquet.crypto.keytools.KeyToolkit;
import org.apache.parquet.crypto.keytools.KmsClient;

public class InMemoryKMS implements KmsClient {
  private static Map<String, byte[]> masterKeyMap;

  @Override
  public synchronized void initialize(Configuration conf, String id, String url, String token) {
    String[] masterKeys = conf.getTrimmedStrings("parquet.encryption.key.list");
    if (null == masterKeys || masterKeys.length == 0) {
      throw new ParquetCryptoRuntimeException("No encryption key list");
    }
    Map<String, byte[]> keys = new HashMap<>();
    for (String entry : masterKeys) {
      String[] parts = entry.split(":");
      keys.put(parts[0].trim(), Base64.getDecoder().decode(parts[1].trim()));
    }
    masterKeyMap = keys;
  }

  private static byte[] master(String id) {
    byte[] key = masterKeyMap.get(id);
    if (null == key) throw new ParquetCryptoRuntimeException("Key not found: " + id);
    return key;
  }

  @Override
  public synchronized String wrapKey(byte[] keyBytes, String id) {
    return KeyToolkit.encryptKeyLocally(keyBytes, master(id), id.getBytes(StandardCharsets.UTF_8));
  }

  @Override
  public synchronized byte[] unwrapKey(String wrapped, String id) {
    return KeyToolkit.decryptKeyLocally(wrapped, master(id), id.getBytes(StandardCharsets.UTF_8));
  }
}
"""

# A plain PySpark session, BigDL's EncryptedDataFrameWriter.parquet and setParquetKey.
_BIGDL_WRITE = """
import pickle, sys
from pyspark.sql import SparkSession
jar, out, key_list, algorithm, schema = sys.argv[1:6]
rows = pickle.load(sys.stdin.buffer)
spark = (SparkSession.builder.master("local[2]").appName("bigdl-parquet-vector")
         .config("spark.driver.extraClassPath", jar).config("spark.ui.enabled", "false")
         .getOrCreate())
spark.sparkContext.setLogLevel("ERROR")
conf = spark.sparkContext._jsc.hadoopConfiguration()
conf.set("parquet.crypto.factory.class",
         "org.apache.parquet.crypto.keytools.PropertiesDrivenCryptoFactory")
conf.set("parquet.encryption.kms.client.class",
         "org.apache.parquet.crypto.keytools.mocks.InMemoryKMS")
conf.set("parquet.encryption.key.list", key_list)
# Two parts, without a shuffle.
df = spark.createDataFrame(spark.sparkContext.parallelize(rows, 2), schema)
(df.write.option("parquet.encryption.column.keys", "key1: " + ",".join(df.schema.fieldNames()))
   .option("parquet.encryption.footer.key", "footerKey")
   .option("parquet.encryption.algorithm", algorithm)
   .mode("overwrite").parquet(out))
spark.stop()
"""

_SCHEMA = (
    "id long, name string, score double, even boolean, day date, at timestamp, "
    "amount decimal(12,2), raw binary, maybe int"
)
_UTC = dt.UTC
_ROWS = [
    (
        i,
        f"spark-canary-{i:04d}",
        i * 1.25,
        i % 2 == 0,
        dt.date(1999, 12, 1) + dt.timedelta(days=i * 37),
        dt.datetime(2021, 3, 4, 5, 6, 7, tzinfo=_UTC)
        + dt.timedelta(seconds=i * 9973, microseconds=i),
        Decimal(i * 1001) / 100,
        bytes([i % 256, 0, 255]),
        None if i % 7 == 0 else -i,
    )
    for i in range(240)
]


@pytest.fixture(scope="module")
def in_memory_kms_jar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The InMemoryKMS class, compiled against PySpark's Parquet and Hadoop jars."""
    if shutil.which("javac") is None or shutil.which("jar") is None:
        pytest.skip("needs a JDK (javac, jar)")
    import pyspark

    jars = Path(pyspark.__file__).parent / "jars"
    root = tmp_path_factory.mktemp("inmemorykms")
    source = root / "src" / "org/apache/parquet/crypto/keytools/mocks/InMemoryKMS.java"
    source.parent.mkdir(parents=True)
    source.write_text(_IN_MEMORY_KMS)
    classpath = ":".join(
        str(p)
        for pattern in ("parquet-*.jar", "hadoop-client-api-*.jar")
        for p in jars.glob(pattern)
    )
    classes = root / "classes"
    subprocess.run(
        ["javac", "-nowarn", "-d", str(classes), "-cp", classpath, str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    jar = root / "inmemorykms.jar"
    subprocess.run(["jar", "cf", str(jar), "-C", str(classes), "."], check=True, timeout=300)
    return jar


def _spark_writes_bigdl_parquet(jar: Path, out: Path, data_key: str) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _BIGDL_WRITE,
            str(jar),
            str(out),
            pv.key_list_property(data_key),
            "AES_GCM_V1",
            _SCHEMA,
        ],
        input=pickle.dumps(_ROWS),
        capture_output=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]


@pytest.mark.spark
@pytest.mark.skipif(find_pme_jar() is None, reason="scripts/build-java has not been run")
def test_a_folder_spark_wrote_with_inmemorykms_migrates_exactly(
    in_memory_kms_jar: Path, spark, kms: LocalKms, tmp_path: Path
) -> None:
    from cipherspark.spark import read_encrypted_parquet, secure_session
    from cipherspark.spark.pme import ParquetEncryption

    rng = random.Random(11)
    pk = bv.simple_primary_key(rng)
    (tmp_path / "primaryKey").write_text(pk + "\n")
    wrapped = bv.simple_wrap(pk, rng)
    folder = tmp_path / "bigdl-spark"
    _spark_writes_bigdl_parquet(in_memory_kms_jar, folder, bv.simple_unwrap(pk, wrapped))
    pv.write_meta(folder, wrapped)  # KeyLoader.writeEncryptedDataKey, after the write
    parts = sorted(folder.glob("part-*.parquet"))
    assert len(parts) == 2 and all(p.read_bytes()[-4:] == b"PARE" for p in parts)
    assert all(b"spark-canary" not in p.read_bytes() for p in parts)

    out = tmp_path / "migrated"
    result = migrate_bigdl(folder, out, kms, TEST_KEY, simple(tmp_path / "primaryKey"))
    assert result.files == 2 and result.unverified == ()
    for part in out.iterdir():
        assert_cipherspark_parquet(part, ["spark-canary"])
    # Spark's INT96 timestamps stay INT96 (Spark reads them back as it read them).
    props = pe.CryptoFactory(CipherSparkArrowKms).file_decryption_properties(
        pe.KmsConnectionConfig(kms_instance_url=kms.url), pe.DecryptionConfiguration()
    )
    migrated = pq.ParquetFile(str(next(out.iterdir())), decryption_properties=props)
    assert migrated.schema.column(5).physical_type == "INT96"
    assert b"org.apache.spark.sql.parquet.row.metadata" in migrated.schema_arrow.metadata

    secure_session(
        master="local[2]",
        credentials=TEST_CREDENTIALS,
        parquet=ParquetEncryption(kms.url, TEST_KEY),
    )
    try:
        frame = read_encrypted_parquet(spark, str(out), key=TEST_KEY)
        assert frame.schema.simpleString() == (
            "struct<id:bigint,name:string,score:double,even:boolean,day:date,at:timestamp,"
            "amount:decimal(12,2),raw:binary,maybe:int>"
        )
        back = [tuple(r) for r in frame.orderBy("id").collect()]
    finally:
        secure_session(master="local[2]", credentials=TEST_CREDENTIALS)
    # Spark hands timestamps back as naive local times: compared as instants.
    back = [(*row[:5], row[5].astimezone(_UTC), *row[6:]) for row in back]
    assert back == _ROWS
