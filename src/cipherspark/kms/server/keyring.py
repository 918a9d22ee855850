"""The server's cryptography: the root key, sealing primary keys, wrapping data keys, secrets.

* The **root key** (32 random bytes, file mode 0600, never in the database) seals each primary-key
  version with AES-256-GCM; the app id, key name and version are the associated data, so a sealed
  row copied to another app, key or version does not open. (Rows sealed before the app id was
  bound, whose associated data is the name and version only, are re-sealed once, with the root
  key, when the database is first sealed: :func:`reseal_legacy_primary`.)
* **Wrapped data keys** (what clients store) are ``0x02 || version(u32) || nonce || ct+tag``,
  AES-256-GCM under the primary key version with the key name and version bound as associated
  data. Clients treat them as opaque. The app id is not in this associated data, and need not
  be: two apps' keys of one name are different random primary keys, so app A's wrapped key does
  not open under app B's key; only a copy of A's *sealed primary* into B's row could make it
  open, and the app-bound seal above (and the row seals of :mod:`._seal`) refuse that. So the
  wrapped keys already in users' datasets keep their format.
* **Vault ciphertexts** are ``vault:vN:base64(nonce || ct+tag)`` under the same key versions with
  a different associated-data domain, so a Transit ciphertext is never accepted as a wrapped key.
* **Secrets** (API keys, the admin token) are random and stored only as salted scrypt hashes,
  compared in constant time.
"""

from __future__ import annotations

import base64
import hmac
import os
import re
import secrets
import stat
import struct
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from cipherspark.errors import IntegrityError, KmsError

__all__ = [
    "KEY_BYTES",
    "MAX_TRANSIT_PLAINTEXT",
    "WRAPPED_KEY_BYTES",
    "SecretHasher",
    "create_root_key",
    "load_root_key",
    "new_secret",
    "open_vault",
    "open_wrapped",
    "parse_vault_ciphertext",
    "reseal_legacy_primary",
    "seal_primary",
    "unseal_primary",
    "vault_ciphertext",
    "wrap",
    "wrapped_version",
]

KEY_BYTES = 32
_NONCE = 12
_TAG = 16
_WRAP_FORMAT = 2  # 1 and 3 are the embedded keystore's formats; a blob never passes for another.
_WRAP_HEADER = struct.Struct(">BI")
WRAPPED_KEY_BYTES = _WRAP_HEADER.size + _NONCE + KEY_BYTES + _TAG
_AAD_SEAL_V1 = b"cipherspark/kms-server/v1/primary-key\x00"
_AAD_SEAL = b"cipherspark/kms-server/v2/primary-key\x00"
_AAD_WRAP = b"cipherspark/kms-server/v1/wrap\x00"
_AAD_TRANSIT = b"cipherspark/kms-server/v1/transit\x00"
_VAULT = re.compile(r"vault:v([1-9][0-9]{0,8}):([A-Za-z0-9+/=]+)")
# The most plaintext a Transit encrypt accepts (the request body limit is the other bound).
MAX_TRANSIT_PLAINTEXT = 32 * 1024


def _aad(domain: bytes, name: str, version: int) -> bytes:
    return domain + name.encode() + b"\x00" + struct.pack(">I", version)


def create_root_key(path: Path) -> None:
    """Write a new random root key to ``path`` (mode 0600); refuse to overwrite one."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise KmsError(f"{path} exists already: refusing to replace a root key") from exc
    with os.fdopen(fd, "wb") as f:
        f.write(os.urandom(KEY_BYTES))
        f.flush()
        os.fsync(f.fileno())


def load_root_key(path: Path) -> bytes:
    """Read the root key, refusing a file others can read (it unlocks every primary key)."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise KmsError(f"no root key at {path}: run 'cipherspark kms init' first") from exc
    except OSError as exc:
        raise KmsError(f"cannot read the root key {path}: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KmsError(f"the root key {path} is accessible to other users; chmod 600 it")
    if len(data) != KEY_BYTES:
        raise KmsError(f"the root key {path} is damaged (expected {KEY_BYTES} bytes)")
    return data


def _seal_aad(app_id: str, name: str, version: int) -> bytes:
    # Length-prefixed app id: no (app id, name) pair encodes like another.
    app = app_id.encode()
    return _AAD_SEAL + struct.pack(">I", len(app)) + app + _aad(b"", name, version)


def seal_primary(root: bytes, app_id: str, name: str, version: int, primary: bytes) -> bytes:
    """Encrypt app ``app_id``'s primary-key version under the root key for storage."""
    nonce = os.urandom(_NONCE)
    return nonce + AESGCM(root).encrypt(nonce, primary, _seal_aad(app_id, name, version))


def unseal_primary(root: bytes, app_id: str, name: str, version: int, sealed: bytes) -> bytes:
    """Decrypt a stored primary-key version; :class:`KmsError` if the row was altered or
    belongs to another app, key or version."""
    try:
        return AESGCM(root).decrypt(
            sealed[:_NONCE], sealed[_NONCE:], _seal_aad(app_id, name, version)
        )
    except (InvalidTag, ValueError) as exc:
        raise KmsError(
            f"primary key {name!r} version {version} does not unseal: the database row was "
            "modified or the root key is not the one it was created with"
        ) from exc


def reseal_legacy_primary(
    root: bytes, app_id: str, name: str, version: int, sealed: bytes
) -> bytes:
    """Re-seal a version sealed before the app id was bound (name and version only) under the
    current associated data. Only the database's one-time sealing step calls this: the old
    form is never accepted when serving. The primary key itself is unchanged, so data keys
    wrapped under it keep unwrapping."""
    try:
        primary = AESGCM(root).decrypt(
            sealed[:_NONCE], sealed[_NONCE:], _aad(_AAD_SEAL_V1, name, version)
        )
    except (InvalidTag, ValueError) as exc:
        raise KmsError(
            f"primary key {name!r} version {version} does not unseal: the database row was "
            "modified or the root key is not the one it was created with"
        ) from exc
    return seal_primary(root, app_id, name, version, primary)


def wrap(primary: bytes, name: str, version: int, data_key: bytes) -> bytes:
    """Wrap ``data_key`` under a primary-key version (the opaque blob clients store)."""
    nonce = os.urandom(_NONCE)
    return (
        _WRAP_HEADER.pack(_WRAP_FORMAT, version)
        + nonce
        + AESGCM(primary).encrypt(nonce, data_key, _aad(_AAD_WRAP, name, version))
    )


def wrapped_version(name: str, wrapped: bytes) -> int:
    """The primary-key version a wrapped blob names; :class:`IntegrityError` if malformed."""
    if wrapped[:1] in (b"\x01", b"\x03"):  # the embedded keystore's formats (kms/local.py)
        raise IntegrityError(
            f"the data key for {name!r} was wrapped by an embedded keystore (file://), not by "
            "this KMS server: point --kms (CIPHERSPARK_KMS) at the keystore that encrypted it"
        )
    if len(wrapped) != WRAPPED_KEY_BYTES:
        raise IntegrityError(f"the wrapped data key for {name!r} is malformed (wrong length)")
    fmt, version = _WRAP_HEADER.unpack_from(wrapped)
    if fmt != _WRAP_FORMAT or version < 1:
        raise IntegrityError(f"the wrapped data key for {name!r} is malformed (bad header)")
    return int(version)


def open_wrapped(primary: bytes, name: str, version: int, wrapped: bytes) -> bytes:
    """Unwrap a blob made by :func:`wrap`; :class:`IntegrityError` if it does not authenticate."""
    body = wrapped[_WRAP_HEADER.size :]
    try:
        return AESGCM(primary).decrypt(body[:_NONCE], body[_NONCE:], _aad(_AAD_WRAP, name, version))
    except (InvalidTag, ValueError) as exc:
        raise IntegrityError(
            f"the wrapped data key does not authenticate under {name!r} version {version}"
        ) from exc


def vault_ciphertext(primary: bytes, name: str, version: int, plaintext: bytes) -> str:
    """Encrypt for the Transit API: ``vault:vN:base64(nonce || ct+tag)``."""
    nonce = os.urandom(_NONCE)
    body = nonce + AESGCM(primary).encrypt(nonce, plaintext, _aad(_AAD_TRANSIT, name, version))
    return f"vault:v{version}:{base64.b64encode(body).decode()}"


def parse_vault_ciphertext(text: str) -> tuple[int, bytes]:
    """Split a ``vault:vN:...`` ciphertext into (N, raw bytes); ``ValueError`` if malformed."""
    match = _VAULT.fullmatch(text)
    if match is None:
        raise ValueError("ciphertext is not of the form vault:vN:BASE64")
    raw = base64.b64decode(match.group(2), validate=True)
    if len(raw) < _NONCE + _TAG:
        raise ValueError("ciphertext is too short")
    return int(match.group(1)), raw


def open_vault(primary: bytes, name: str, version: int, raw: bytes) -> bytes:
    """Decrypt the raw bytes of a Vault ciphertext; :class:`IntegrityError` if altered."""
    try:
        return AESGCM(primary).decrypt(
            raw[:_NONCE], raw[_NONCE:], _aad(_AAD_TRANSIT, name, version)
        )
    except (InvalidTag, ValueError) as exc:
        raise IntegrityError(f"the ciphertext does not authenticate under {name!r}") from exc


def new_secret() -> str:
    """A fresh 256-bit random secret, URL-safe base64 (no '.', so tokens can join on it)."""
    return secrets.token_urlsafe(KEY_BYTES)


class SecretHasher:
    """Salted scrypt hashes of high-entropy secrets (API keys, the admin token).

    The secrets are 256-bit random, so scrypt is defence in depth against a stolen database
    rather than the only barrier against guessing; the cost below (16 MiB, ~40 ms) keeps a
    failed login cheap enough not to be a denial-of-service lever of its own.
    """

    def __init__(self, n: int = 1 << 14, r: int = 8, p: int = 1) -> None:
        self._params = (n, r, p)
        # A fixed dummy salt/hash so an unknown APP ID costs the same time as a wrong API KEY.
        self._dummy_salt = os.urandom(16)
        self._dummy_hash = self._derive("dummy", self._dummy_salt)

    def _derive(self, secret: str, salt: bytes) -> bytes:
        n, r, p = self._params
        return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(secret.encode())

    def hash(self, secret: str) -> tuple[bytes, bytes]:
        """(salt, hash) of ``secret``, with a fresh salt."""
        salt = os.urandom(16)
        return salt, self._derive(secret, salt)

    def verify(self, secret: str, salt: bytes | None, expected: bytes | None) -> bool:
        """Whether ``secret`` hashes to ``expected``; with ``None`` it burns the same time."""
        if salt is None or expected is None:
            hmac.compare_digest(self._derive(secret, self._dummy_salt), self._dummy_hash)
            return False
        return hmac.compare_digest(self._derive(secret, salt), expected)
