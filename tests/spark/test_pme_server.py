"""Parquet encryption against a real KMS server (TLS, self-signed certificate): pyarrow's PME with
a Vault-Transit KmsClient reads what ``cipherspark run`` writes and the other way round, the
KMS's audit log counts one wrap and one unwrap for a job of many files and row groups, and with
the simulated TEE an attested-only key is released to attested workers only."""

from __future__ import annotations

import base64
import json
import os
import random
import ssl
import string
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest

from cipherspark.kms import Credentials
from cipherspark.kms.remote import RemoteKms
from cipherspark.spark.pme import find_pme_jar
from tests.kms.server.conftest import KmsSetup, serving, unique
from tests.spark.test_pme import crypto_metadata

pytestmark = [
    pytest.mark.spark,
    pytest.mark.servers,
    pytest.mark.skipif(find_pme_jar() is None, reason="scripts/build-java has not been run"),
]

# Reads Parquet, writes it again as many files with small row groups.
COPY_APP = '''import sys
from pyspark.sql import SparkSession
spark = SparkSession.builder.getOrCreate()
src, dst, files = sys.argv[1], sys.argv[2], int(sys.argv[3])
frame = spark.read.parquet(src)
frame.repartition(files).write.option("parquet.block.size", "4096").parquet(dst)
'''

# Writes only: its one key use is wrapping the new files' keys.
MAKE_APP = """import sys
from pyspark.sql import SparkSession
SparkSession.builder.getOrCreate().range(100).write.parquet(sys.argv[1])
"""

_CA: dict[str, Path] = {}


class TransitArrowKms(pe.KmsClient):
    """What a pyarrow user writes for Vault Transit (parquet-java's sample VaultClient, in
    Python): the token is ``APPID.APIKEY``, as for Vault."""

    def __init__(self, config: pe.KmsConnectionConfig) -> None:
        super().__init__()
        context = ssl.create_default_context(cafile=str(_CA["ca"]))
        self.http = httpx.Client(base_url=config.kms_instance_url, verify=context, timeout=10,
                                 headers={"X-Vault-Token": config.key_access_token})

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        answer = self.http.post(f"/v1/transit/encrypt/{master_key_identifier}",
                                json={"plaintext": base64.b64encode(key_bytes).decode()})
        answer.raise_for_status()
        return str(answer.json()["data"]["ciphertext"])

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        answer = self.http.post(f"/v1/transit/decrypt/{master_key_identifier}",
                                json={"ciphertext": wrapped_key})
        answer.raise_for_status()
        return base64.b64decode(answer.json()["data"]["plaintext"])


@pytest.fixture(scope="module")
def kms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KmsSetup]:
    with serving(tmp_path_factory.mktemp("pme-kms")) as setup:
        _CA["ca"] = setup.server.ca
        yield setup


def arrow_config(setup: KmsSetup, app: dict[str, str]) -> pe.KmsConnectionConfig:
    return pe.KmsConnectionConfig(kms_instance_url=setup.server.url,
                                  key_access_token=app["vault_token"])


def audit_ops(setup: KmsSetup, key: str) -> list[str]:
    lines = (setup.server.data / "audit.log").read_text().splitlines()
    return [entry["op"] for entry in map(json.loads, lines) if entry.get("key") == key]


def run(setup: KmsSetup, app: dict[str, str], cwd: Path, *args: str,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CIPHERSPARK_")}
    base["CIPHERSPARK_SIMULATED_TEE_KEY"] = os.environ["CIPHERSPARK_SIMULATED_TEE_KEY"]
    return subprocess.run(
        [sys.executable, "-m", "cipherspark", "run", "--kms", setup.server.url,
         "--kms-ca", str(setup.server.ca), "--master", "local[2]", *args],
        cwd=cwd, capture_output=True, text=True, timeout=900,
        env={**base, "CIPHERSPARK_APP_ID": app["app_id"], "CIPHERSPARK_API_KEY": app["api_key"],
             **(env or {})})


def names(n: int) -> list[str]:
    return ["".join(random.choices(string.ascii_lowercase, k=14)) for _ in range(n)]


def test_pyarrow_and_cipherspark_read_each_others_files_over_transit(kms: KmsSetup,
                                                                     tmp_path: Path) -> None:
    key = unique("lake")
    with kms.kms() as client:
        client.create_key(key)
    people = names(2000)
    table = pa.table({"id": list(range(len(people))), "name": people})
    # pyarrow writes, through Transit.
    (tmp_path / "in").mkdir()
    factory = pe.CryptoFactory(TransitArrowKms)
    props = factory.file_encryption_properties(
        arrow_config(kms, kms.app_a),
        pe.EncryptionConfiguration(footer_key=key, uniform_encryption=True))
    pq.write_table(table, str(tmp_path / "in" / "part-0.parquet"), encryption_properties=props)
    (tmp_path / "copy_app.py").write_text(COPY_APP)

    before = audit_ops(kms, key)
    result = run(kms, kms.app_a, tmp_path, "--key", key, "copy_app.py", "in", "out", "8")
    assert result.returncode == 0, result.stderr
    during = audit_ops(kms, key)[len(before):]
    # Eight files of small row groups, one job: one wrap (the KEK of its writes), one unwrap
    # (the KEK pyarrow's file carries).
    assert during.count("transit.encrypt") == 1, during
    assert during.count("transit.decrypt") == 1, during

    parts = sorted((tmp_path / "out").glob("*.parquet"))
    assert len(parts) == 8
    decrypt = factory.file_decryption_properties(arrow_config(kms, kms.app_a),
                                                 pe.DecryptionConfiguration())
    rows, groups = [], 0
    for part in parts:
        data = part.read_bytes()
        assert data[:4] == data[-4:] == b"PARE"
        assert not any(name.encode() in data for name in people)
        assert b'"wrappedKEK":"vault:v1:' in crypto_metadata(part)
        file = pq.ParquetFile(str(part), decryption_properties=decrypt)
        groups += file.metadata.num_row_groups
        rows += file.read().to_pylist()
    assert groups > 8
    assert sorted(rows, key=lambda r: r["id"]) == table.to_pylist()

    # Another app may not read them (its key namespace has no such key: 404, as Vault's).
    props_b = pe.CryptoFactory(TransitArrowKms).file_decryption_properties(
        arrow_config(kms, kms.app_b), pe.DecryptionConfiguration())
    with pytest.raises(httpx.HTTPStatusError, match="404"):
        pq.ParquetFile(str(parts[0]), decryption_properties=props_b).read()


def test_attested_only_key_with_the_simulated_tee(kms: KmsSetup, tmp_path: Path) -> None:
    from cipherspark.attestation import AttestationPolicy
    from cipherspark.kms.local import simulated_development_policy

    key = unique("attested")
    owner = RemoteKms(kms.server.url, Credentials(kms.app_a["app_id"], kms.app_a["api_key"]),
                      ca_file=kms.server.ca)
    owner.create_key(key)
    policy = simulated_development_policy()
    platform = policy.to_dict()["simulated"]["platform_keys"][0]
    with kms.admin() as admin:
        admin.register_simulated_platform(platform, "pme tests")
    owner.set_policy(key, policy)
    workload = kms.workload()
    people = names(50)
    # The owner writes the input with pyarrow over Transit: its KEK is a vault: ciphertext,
    # which only the attested Transit decrypt gives the workload credential.
    (tmp_path / "in").mkdir()
    props = pe.CryptoFactory(TransitArrowKms).file_encryption_properties(
        arrow_config(kms, kms.app_a),
        pe.EncryptionConfiguration(footer_key=key, uniform_encryption=True))
    pq.write_table(pa.table({"id": list(range(50)), "name": people}),
                   str(tmp_path / "in" / "part-0.parquet"), encryption_properties=props)
    assert b'"wrappedKEK":"vault:v1:' in crypto_metadata(tmp_path / "in" / "part-0.parquet")
    (tmp_path / "copy_app.py").write_text(COPY_APP)

    attested = {"CIPHERSPARK_TEE": "simulated"}
    result = run(kms, workload, tmp_path, "--key", key, "copy_app.py", "in", "out", "2",
                 env=attested)
    assert result.returncode == 0, result.stderr
    ops = audit_ops(kms, key)
    assert "transit.attested_decrypt" in ops and "transit.decrypt" not in ops, ops
    assert "datakey.attested_unwrap" in ops
    parts = sorted((tmp_path / "out").glob("*.parquet"))
    assert parts and all(b'"wrappedKEK":"cspk1:' in crypto_metadata(p) for p in parts)
    # An attested reader reads them back.
    result = run(kms, workload, tmp_path, "--key", key, "copy_app.py", "out", "again", "1",
                 env=attested)
    assert result.returncode == 0, result.stderr

    # Without evidence the workload gets no key material of an attested-only key.
    result = run(kms, workload, tmp_path, "--key", key, "copy_app.py", "out", "plain-read", "1")
    line = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(line) == 1, result.stderr
    assert "release policy" in line[0], line
    assert not list((tmp_path / "plain-read").rglob("*.parquet"))

    # A policy for other code: denied, with the reason.
    doc = policy.to_dict()
    doc["simulated"]["measurements"] = ["cd" * 32]
    owner.set_policy(key, AttestationPolicy.from_dict(doc))
    # Writing alone needs the key too: the KEK's envelope key comes by attested release. (A
    # read is refused by the same server check, for the reason above without evidence; the
    # helper refuses both for a measurement: tests/attestation/test_local_attested.py.)
    (tmp_path / "make_app.py").write_text(MAKE_APP)
    result = run(kms, workload, tmp_path, "--key", key, "make_app.py", "made", env=attested)
    line = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(line) == 1, result.stderr
    assert "attested key release refused (measurement)" in line[0], line
    assert not list((tmp_path / "made").rglob("*.parquet"))
    owner.close()
