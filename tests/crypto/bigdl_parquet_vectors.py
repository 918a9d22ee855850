"""BigDL PPML's encrypted Parquet, written from BigDL's documented settings with no cipherspark
code: pyarrow's Parquet Modular Encryption with a KMS client restating parquet-java's
``InMemoryKMS``, ``cryptography`` for its AES-GCM, and ``bigdl_vectors``' SimpleKMS arithmetic.

BigDL's ``EncryptedDataFrameWriter.parquet`` (with ``setParquetKey``) configures::

    parquet.encryption.key.list    = "footerKey: b64(s[0:16]), key1: b64(s[16:32])"
    parquet.encryption.column.keys = "key1: <every column>"
    parquet.encryption.footer.key  = footerKey
    parquet.encryption.algorithm   = AES_GCM_V1 or AES_GCM_CTR_V1

(``s``: the data key plaintext string) and otherwise parquet-java's defaults: encrypted footer,
double wrapping, key material in the footer, 128-bit data keys. It then writes the folder's
``.meta``, ``{"encryptedDataKey" : "<wrapped data key>"}``. InMemoryKMS wraps a key with
``KeyToolkit.encryptKeyLocally``: base64(nonce[12] || AES-GCM(master key) || tag[16]), the master
key's name as associated data.

Run as a script to write a set of vectors into a folder::

    python -m tests.crypto.bigdl_parquet_vectors OUT_DIR
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import random
import sys
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tests.crypto.bigdl_vectors import (
    API_KEY,
    APP_ID,
    simple_primary_key,
    simple_unwrap,
    simple_wrap,
)

__all__ = [
    "API_KEY",
    "APP_ID",
    "ParquetVectors",
    "bigdl_file",
    "bigdl_key_list",
    "key_list_property",
    "people_table",
    "read_bigdl_parquet",
    "write_bigdl_parquet",
    "write_meta",
    "write_vectors",
]


def bigdl_key_list(data_key: str) -> dict[str, bytes]:
    """``setParquetKey``'s two master keys: characters 0..16 and 16..32 of the data key."""
    return {
        "footerKey": data_key[0:16].encode("utf-8"),
        "key1": data_key[16:32].encode("utf-8"),
    }


def key_list_property(data_key: str) -> str:
    """``parquet.encryption.key.list`` as BigDL sets it."""
    keys = bigdl_key_list(data_key)
    return ", ".join(f"{name}: {base64.b64encode(key).decode()}" for name, key in keys.items())


class InMemoryKms(pe.KmsClient):
    """parquet-java's InMemoryKMS (wrap and unwrap locally with AES-GCM) over ``master``."""

    master: ClassVar[dict[str, bytes]] = {}

    def __init__(self, config: pe.KmsConnectionConfig) -> None:
        super().__init__()

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        nonce = os.urandom(12)
        key = self.master[master_key_identifier]
        sealed = AESGCM(key).encrypt(nonce, key_bytes, master_key_identifier.encode("utf-8"))
        return base64.b64encode(nonce + sealed).decode()

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        blob = base64.b64decode(wrapped_key)
        key = self.master[master_key_identifier]
        return AESGCM(key).decrypt(blob[:12], blob[12:], master_key_identifier.encode("utf-8"))


def _factory(data_key: str) -> pe.CryptoFactory:
    master = bigdl_key_list(data_key)

    class Bound(InMemoryKms):
        pass

    Bound.master = master
    return pe.CryptoFactory(Bound)


def write_bigdl_parquet(
    table: pa.Table, path: Path, data_key: str, algorithm: str = "AES_GCM_V1"
) -> None:
    """``table`` as BigDL writes one Parquet part under ``data_key``."""
    config = pe.EncryptionConfiguration(
        footer_key="footerKey",
        column_keys={"key1": list(table.column_names)},
        encryption_algorithm=algorithm,
        plaintext_footer=False,
        double_wrapping=True,
        internal_key_material=True,
        data_key_length_bits=128,
    )
    props = _factory(data_key).file_encryption_properties(pe.KmsConnectionConfig(), config)
    pq.write_table(table, str(path), encryption_properties=props)


def bigdl_file(path: Path, data_key: str) -> pq.ParquetFile:
    """A BigDL Parquet file opened with its keys (the vectors' own reader)."""
    props = _factory(data_key).file_decryption_properties(
        pe.KmsConnectionConfig(), pe.DecryptionConfiguration()
    )
    return pq.ParquetFile(str(path), decryption_properties=props)


def read_bigdl_parquet(path: Path, data_key: str) -> pa.Table:
    """The rows of a BigDL Parquet file (the vectors' own check of themselves)."""
    return bigdl_file(path, data_key).read()


def write_meta(folder: Path, wrapped: str) -> None:
    """BigDL's ``.meta``: KmsMetaFormatSerializer's pretty-printed JSON."""
    (folder / ".meta").write_text(json.dumps({"encryptedDataKey": wrapped}, indent=2) + "\n")


def people_table(rows: int, seed: int = 3) -> pa.Table:
    """Known rows of the types BigDL's Spark users write (nulls included)."""
    rng = random.Random(seed)
    jobs = ["Developer", "Engineer", "Researcher", "Manager"]
    data: dict[str, list[Any]] = {
        "name": [f"p{i}-{rng.randrange(10**6):06d}" for i in range(rows)],
        "age": [rng.randrange(18, 70) for _ in range(rows)],
        "job": [None if i % 11 == 0 else rng.choice(jobs) for i in range(rows)],
        "salary": [Decimal(rng.randrange(10**7)) / 100 for _ in range(rows)],
        "joined": [
            dt.date(2000, 1, 1) + dt.timedelta(days=rng.randrange(9000)) for _ in range(rows)
        ],
    }
    schema = pa.schema(
        [
            ("name", pa.string()),
            ("age", pa.int32()),
            ("job", pa.string()),
            ("salary", pa.decimal128(9, 2)),
            ("joined", pa.date32()),
        ]
    )
    return pa.table(data, schema=schema)


@dataclass(frozen=True)
class ParquetVectors:
    """Where :func:`write_vectors` put everything, and the plaintext rows."""

    root: Path
    table: pa.Table  # every row, in part order
    parts: tuple[pa.Table, ...]
    simple_primary_key: Path  # SimpleKMS primary key material file
    data_key: str  # the folder's data key plaintext (the vectors' secret)
    gcm_folder: Path  # AES_GCM_V1, several parts, .meta, _SUCCESS, .crc
    ctr_folder: Path  # AES_GCM_CTR_V1, one part
    single_file: Path  # one AES_GCM_V1 file in a folder with its .meta


def write_vectors(root: Path, rows: int = 300, parts: int = 3, seed: int = 5) -> ParquetVectors:
    """Write BigDL Parquet folders under a SimpleKMS key (one data key per write, as BigDL)."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    pk = simple_primary_key(rng)
    pk_file = root / "primaryKey"
    pk_file.write_text(pk + "\n")
    wrapped = simple_wrap(pk, rng)
    data_key = simple_unwrap(pk, wrapped)
    table = people_table(rows)
    step = -(-rows // parts)
    chunks = tuple(table.slice(i, step) for i in range(0, rows, step))

    gcm = root / "gcm"
    gcm.mkdir()
    for i, chunk in enumerate(chunks):
        name = f"part-{i:05d}-6b1c7d2e-aaaa-bbbb-cccc-000000000000-c000.snappy.parquet"
        write_bigdl_parquet(chunk, gcm / name, data_key)
        (gcm / f".{name}.crc").write_bytes(b"crc junk")
    (gcm / "_SUCCESS").write_bytes(b"")
    write_meta(gcm, wrapped)

    ctr = root / "ctr"
    ctr.mkdir()
    write_bigdl_parquet(
        table, ctr / "part-00000-ctr-c000.snappy.parquet", data_key, "AES_GCM_CTR_V1"
    )
    write_meta(ctr, wrapped)

    single_dir = root / "single"
    single_dir.mkdir()
    single = single_dir / "part-00000-one-c000.snappy.parquet"
    write_bigdl_parquet(table, single, data_key)
    write_meta(single_dir, wrapped)
    return ParquetVectors(root, table, chunks, pk_file, data_key, gcm, ctr, single)


if __name__ == "__main__":
    vectors = write_vectors(Path(sys.argv[1]))
    print(f"wrote BigDL Parquet vectors to {vectors.root}")
