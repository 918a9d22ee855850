"""BigDL PPML encrypted files, written from BigDL's documented layout with no cipherspark code.

Only the standard library and ``cryptography``: this is an independent restatement of what
BigDL's writer does (``BigDLEncrypt.genHeader`` / ``init`` / ``doFinal``, SimpleKMS's digit
arithmetic, the plaintext primary key's AES-ECB wrapping), so that the reader under test is
checked against a second implementation, not against itself.

Run as a script to write a set of vectors into a folder::

    python tests/crypto/bigdl_vectors.py OUT_DIR
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

APP_ID = "123456789012"  # SimpleKMS: 12 digits
API_KEY = "210987654321"
PRIMARY_KEY_PLAINTEXT = base64.b64encode(bytes(range(16))).decode()  # an AES-128 key


def simple_primary_key(rng: random.Random) -> str:
    """SimpleKMS's retrievePrimaryKey: the APP ID and 4 random digits."""
    return APP_ID + "".join(str(rng.randrange(10)) for _ in range(4))


def simple_wrap(primary_key: str, rng: random.Random) -> str:
    """SimpleKMS's retrieveDataKey: ('0' + digit) appended as an Int, i.e. its decimal code."""
    rand = [rng.randrange(10) for _ in range(16)]
    return "".join(str(48 + (int(primary_key[i]) + rand[i]) % 10) for i in range(16))


def simple_unwrap(primary_key: str, wrapped: str) -> str:
    """SimpleKMS's retrieveDataKeyPlainText over the first 16 characters of the ciphertext."""
    return "".join(
        str(48 + ((ord(wrapped[i]) - 48) - (ord(primary_key[i]) - 48) + 10) % 10) for i in range(16)
    )


def plaintext_wrap(primary_key_b64: str, rng: random.Random) -> tuple[str, str]:
    """The plaintext primary key's data key: base64 of 16 random bytes, AES-ECB-PKCS5 wrapped
    and base64'd. Returns (wrapped text, data key text)."""
    data_key = base64.b64encode(rng.randbytes(16)).decode()
    padder = padding.PKCS7(128).padder()
    padded = padder.update(data_key.encode()) + padder.finalize()
    encryptor = Cipher(algorithms.AES(base64.b64decode(primary_key_b64)), modes.ECB()).encryptor()
    wrapped = base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode()
    return wrapped, data_key


def _keys(data_key: str, aes_len: int) -> tuple[bytes, bytes]:
    secret = data_key.encode()
    mac_key = secret[0:16].ljust(16, b"\0")
    aes_key = secret[16 : 16 + aes_len].ljust(aes_len, b"\0")
    return mac_key, aes_key


def _cbc(aes_key: bytes, iv: bytes, data: bytes) -> bytes:
    padder = padding.PKCS7(128).padder()
    padded = padder.update(data) + padder.finalize()
    encryptor = Cipher(algorithms.AES(aes_key), modes.CBC(iv)).encryptor()
    return encryptor.update(padded) + encryptor.finalize()


def v2_file(plaintext: bytes, wrapped: str, data_key: str, iv: bytes) -> bytes:
    """header[400] (K, 16, wrapped key text, IV, 0x80 fill) || CBC || HMAC(ciphertext)."""
    key_bytes = wrapped.encode()
    header = struct.pack(">ii", len(key_bytes), len(iv)) + key_bytes + iv
    header += b"\x80" * (400 - len(header))
    mac_key, aes_key = _keys(data_key, 16)
    body = _cbc(aes_key, iv, plaintext)
    return header + body + hmac.new(mac_key, body, hashlib.sha256).digest()


def v1_file(plaintext: bytes, data_key: str, iv: bytes, epoch: int) -> bytes:
    """0x80 || epoch seconds (int64 BE) || IV || CBC (AES-256 key, secret[16:48]) || HMAC."""
    mac_key, aes_key = _keys(data_key, 32)
    body = _cbc(aes_key, iv, plaintext)
    header = b"\x80" + struct.pack(">q", epoch) + iv
    return header + body + hmac.new(mac_key, body, hashlib.sha256).digest()


def native_file(plaintext: bytes, primary_key_b64: str, iv: bytes) -> bytes:
    """IV || CBC under the base64-decoded primary key itself; no MAC."""
    return iv + _cbc(base64.b64decode(primary_key_b64), iv, plaintext)


def people_csv(rows: int, seed: int = 7) -> bytes:
    """A small known CSV (name,age,job) with a header."""
    rng = random.Random(seed)
    jobs = ["Developer", "Engineer", "Researcher", "Manager"]
    lines = ["name,age,job"]
    lines += [f"p{i},{rng.randrange(18, 70)},{rng.choice(jobs)}" for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def split_csv(data: bytes, parts: int) -> list[bytes]:
    """As Spark writes a CSV with header=true: every part starts with the header line."""
    header, _, body = data.partition(b"\n")
    rows = body.splitlines(keepends=True)
    step = -(-len(rows) // parts)
    return [header + b"\n" + b"".join(rows[i : i + step]) for i in range(0, len(rows), step)]


@dataclass(frozen=True)
class Vectors:
    """Where :func:`write_vectors` put everything, and the plaintexts."""

    root: Path
    csv: bytes
    parts: tuple[bytes, ...]
    simple_primary_key: Path  # SimpleKMS primary key material file
    v2_folder: Path  # SimpleKMS, several parts, .meta and _SUCCESS
    v2_plaintext_key_file: Path  # one v2 file under the plaintext primary key
    v1_file: Path
    v1_data_key: Path  # v1's separate data-key file
    native_file: Path
    exported_file: Path  # v2 under a KMS reached only through an export (EHSM-like)
    exported_keys: Path  # the export: {wrapped key text: data key text}


def write_vectors(root: Path, rows: int = 500, parts: int = 3, seed: int = 1) -> Vectors:
    """Write a v2 folder, a v2 file under a plaintext key, a v1 file and a nativeaescbc file."""
    rng = random.Random(seed)
    csv = people_csv(rows)
    chunks = split_csv(csv, parts)
    root.mkdir(parents=True, exist_ok=True)
    pk = simple_primary_key(rng)
    pk_file = root / "primaryKey"
    pk_file.write_text(pk + "\n")

    folder = root / "v2-simple"
    folder.mkdir()
    # One data key per write call, one IV per part (BigDL's codec).
    wrapped = simple_wrap(pk, rng)
    data_key = simple_unwrap(pk, wrapped)
    for i, chunk in enumerate(chunks):
        name = f"part-{i:05d}-0d3c1e2f-aaaa-bbbb-cccc-000000000000-c000.csv.cbc"
        (folder / name).write_bytes(v2_file(chunk, wrapped, data_key, rng.randbytes(16)))
        (folder / f".{name}.crc").write_bytes(b"crc junk")
    (folder / "_SUCCESS").write_bytes(b"")
    # .meta holds *a* data key: append mode overwrites it, so a reader must not trust it.
    other = simple_wrap(pk, rng)
    (folder / ".meta").write_text(json.dumps({"encryptedDataKey": other}, indent=2) + "\n")

    plain_wrapped, plain_key = plaintext_wrap(PRIMARY_KEY_PLAINTEXT, rng)
    v2_plain = root / "plain-key.csv.cbc"
    v2_plain.write_bytes(v2_file(csv, plain_wrapped, plain_key, rng.randbytes(16)))

    v1_wrapped = simple_wrap(pk, rng)
    v1_dk = root / "dataKey"
    v1_dk.write_text(v1_wrapped + "\n")
    v1 = root / "v1.csv.cbc"
    v1.write_bytes(v1_file(csv, simple_unwrap(pk, v1_wrapped), rng.randbytes(16), 1_660_000_000))

    native = root / "native.csv.cbc"
    native.write_bytes(native_file(csv, PRIMARY_KEY_PLAINTEXT, rng.randbytes(16)))
    # EHSM / Azure: an opaque wrapped key (only the service can unwrap it), a data key of 32
    # random bytes in base64 (44 characters); the user exports the pair.
    ehsm_wrapped = base64.b64encode(rng.randbytes(120)).decode()
    ehsm_key = base64.b64encode(rng.randbytes(32)).decode()
    exported = root / "ehsm.csv.cbc"
    exported.write_bytes(v2_file(csv, ehsm_wrapped, ehsm_key, rng.randbytes(16)))
    export = root / "exported-keys.json"
    export.write_text(json.dumps({ehsm_wrapped: ehsm_key}))
    return Vectors(
        root, csv, tuple(chunks), pk_file, folder, v2_plain, v1, v1_dk, native, exported, export
    )


if __name__ == "__main__":
    vectors = write_vectors(Path(sys.argv[1]))
    print(f"wrote BigDL vectors to {vectors.root}")
