"""Reading Intel BigDL PPML's encrypted CSV / JSON / text files, verifying them first ("hazmat").

BigDL writes three layouts, none with a version byte (``docs/migrate-bigdl.md``)::

    v2 "common"   header[400] || AES-CBC-PKCS5(file) || HMAC-SHA256(ciphertext)[32]
                  header = K (int32 BE) || 16 (int32 BE) || wrapped data key (K bytes, text)
                           || IV[16] || 0x80 fill up to byte 400
    v1            0x80 || epoch seconds (int64 BE) || IV[16] || AES-CBC(file) || HMAC[32]
    nativeaescbc  IV[16] || AES-CBC-PKCS5(file), under the primary key itself: no MAC

The data key is a *string* (a KMS's text); its bytes give the HMAC key (``[0:16]``) and the AES
key (``[16:32]``, AES-128; ``[16:48]``, AES-256, in v1), zero-padded as Java's
``Arrays.copyOfRange`` pads. BigDL never checks its MAC; this reader checks it over the whole
ciphertext, in constant time, before it returns a byte of plaintext (:meth:`BigDLFile.verify`),
and again while it decrypts (the second pass reads the file again, and a file changed in
between fails there: callers write into an atomic output, so that failure leaves nothing).

Memory is bounded: both passes stream in 1 MiB chunks. Pure Python on ``cryptography``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import struct
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from cipherspark._descriptors import read_at
from cipherspark.crypto.container import open_regular
from cipherspark.errors import CredentialsError, FormatError, InputError, IntegrityError

__all__ = [
    "BigDLFile",
    "BigDLKeys",
    "ExportedDataKeys",
    "Layout",
    "PlaintextPrimaryKey",
    "SimpleKms",
]

V2_HEADER_SIZE = 400
V1_HEADER_SIZE = 25
MAC_SIZE = 32
_BLOCK = 16
_V2_FILL = 0x80
_V1_VERSION = 0x80
# v2's header: two int32 then the wrapped key, the IV and at least no fill.
_V2_MAX_WRAPPED = V2_HEADER_SIZE - 8 - _BLOCK
# A v1 timestamp BigDL could have written (2001 .. 2100): a nativeaescbc IV that happens to
# start with 0x80 is then still told apart (its size is a multiple of 16 anyway, v1's is not).
_V1_EPOCH_RANGE = (1_000_000_000, 4_102_444_800)
_CHUNK = 1 << 20

Progress = Callable[[int], None]


class Layout(StrEnum):
    """Which of BigDL's layouts a file has."""

    V2 = "v2"
    V1 = "v1"
    NATIVE_AES_CBC = "nativeaescbc"

    @property
    def authenticated(self) -> bool:
        """Whether the layout carries a MAC (nativeaescbc does not)."""
        return self is not Layout.NATIVE_AES_CBC


class BigDLKeys(ABC):
    """A BigDL key service, as far as reading needs it: wrapped data key text -> data key text."""

    @abstractmethod
    def unwrap(self, wrapped: str) -> str:
        """The data key *string* BigDL derives its file keys from."""

    def native_key(self) -> bytes:
        """The AES key of nativeaescbc files (the primary key itself)."""
        raise CredentialsError(
            "nativeaescbc files are encrypted under a plaintext primary key: give it "
            "(--bigdl-primary-key-plaintext) instead of a SimpleKMS primary key file"
        )


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


@dataclass(frozen=True)
class SimpleKms(BigDLKeys):
    """BigDL's SimpleKeyManagementService: a primary key of 16 decimal digits (APP ID + 4).

    Its "wrapping" is digit arithmetic, reproduced exactly (the quirks included: each result
    digit is appended as its character *code*, so 16 digits become a 32-character string).
    """

    primary_key: str = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.primary_key) < 16 or not _digits(self.primary_key[:16]):
            raise CredentialsError(
                "the BigDL primary key file does not hold a SimpleKMS primary key "
                "(16 decimal digits)"
            )

    @classmethod
    def from_material(cls, app_id: str, api_key: str, material: bytes) -> SimpleKms:
        """The service of ``app_id`` from its primary key file's bytes.

        BigDL compares the API KEY only with the one it was configured with, so nothing can
        check it here; it must still be given, as BigDL requires. The APP ID is checked: BigDL
        refuses a primary key whose first 12 characters are not it, and so does this.
        """
        if not app_id or not api_key:
            raise CredentialsError("SimpleKMS needs both an APP ID and an API KEY")
        try:
            text = material.decode("ascii").strip()
        except UnicodeDecodeError as exc:
            raise CredentialsError("the BigDL primary key file is not a SimpleKMS key") from exc
        keys = cls(text)
        if text[:12] != app_id:
            raise CredentialsError(
                "the BigDL primary key file does not belong to this APP ID "
                "(SimpleKMS primary keys start with it)"
            )
        return keys

    def unwrap(self, wrapped: str) -> str:
        """BigDL's ``retrieveDataKeyPlainText``: 16 digit differences as character codes."""
        if len(wrapped) < 16 or not _digits(wrapped[:16]):
            raise CredentialsError("the wrapped data key is not a SimpleKMS data key")
        return "".join(
            str(ord("0") + ((ord(c) - ord("0")) - (ord(p) - ord("0")) + 10) % 10)
            for c, p in zip(wrapped[:16], self.primary_key[:16], strict=True)
        )


@dataclass(frozen=True)
class PlaintextPrimaryKey(BigDLKeys):
    """``spark.bigdl.primaryKey.NAME.plainText``: an AES key; data keys wrapped AES-ECB-PKCS5."""

    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.key) not in (16, 24, 32):
            raise CredentialsError("the BigDL plaintext primary key is not a 128/192/256-bit key")

    @classmethod
    def from_base64(cls, text: str) -> PlaintextPrimaryKey:
        """The key from its base64 text, as BigDL's configuration holds it."""
        try:
            key = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise CredentialsError("the BigDL plaintext primary key is not base64") from exc
        return cls(key)

    def unwrap(self, wrapped: str) -> str:
        """Base64 decode, AES-ECB decrypt, strict PKCS5 unpad: the data key's text."""
        try:
            blob = base64.b64decode(wrapped, validate=True)
            if not blob or len(blob) % _BLOCK:
                raise ValueError("not whole blocks")
            # ECB is BigDL's choice for wrapping; it is only ever decrypted here.
            decryptor = Cipher(algorithms.AES(self.key), modes.ECB()).decryptor()
            unpadder = padding.PKCS7(128).unpadder()
            plain = unpadder.update(decryptor.update(blob) + decryptor.finalize())
            plain += unpadder.finalize()
            return plain.decode("ascii")
        except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
            raise IntegrityError(
                "the data key does not unwrap under the plaintext primary key (wrong key?)"
            ) from exc

    def native_key(self) -> bytes:
        """nativeaescbc encrypts under the primary key itself."""
        return self.key


@dataclass(frozen=True)
class ExportedDataKeys(BigDLKeys):
    """Data keys exported from a KMS this reader does not talk to (EHSM, BigDL's KMS server,
    Azure Key Vault): each file's wrapped data key text, as its header holds it, mapped to the
    data key text BigDL derived its file keys from. Whether a pair is right, the MAC tells.
    """

    keys: dict[str, str] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: bytes) -> ExportedDataKeys:
        """From a JSON object ``{"wrapped data key": "data key", ...}``."""
        try:
            keys = json.loads(data)
        except (UnicodeDecodeError, ValueError) as exc:
            raise CredentialsError("the exported BigDL data keys are not JSON") from exc
        if (
            not isinstance(keys, dict)
            or not keys
            or not all(isinstance(k, str) and isinstance(v, str) and v for k, v in keys.items())
        ):
            raise CredentialsError(
                "the exported BigDL data keys must be a JSON object of wrapped key -> data key "
                "(both strings)"
            )
        return cls(keys)

    def unwrap(self, wrapped: str) -> str:
        """The exported data key of ``wrapped``; :class:`CredentialsError` if none was."""
        try:
            return self.keys[wrapped]
        except KeyError:
            raise CredentialsError(
                "no exported data key for this file's wrapped data key (export one per "
                "distinct wrapped key in the files' headers)"
            ) from None


def file_keys(data_key: str, layout: Layout) -> tuple[bytes, bytes]:
    """BigDL's ``init``: (HMAC key, AES key) from the data key string's bytes."""
    secret = data_key.encode()
    aes_end = 48 if layout is Layout.V1 else 32

    def copy_of_range(start: int, end: int) -> bytes:
        # Java's Arrays.copyOfRange: past the end of the array it fills with zeros.
        return secret[start:end].ljust(end - start, b"\0")

    return copy_of_range(0, 16), copy_of_range(16, aes_end)


@dataclass(frozen=True)
class _Plan:
    layout: Layout
    start: int  # first ciphertext byte
    end: int  # one past the last ciphertext byte
    iv: bytes
    wrapped: str | None  # v2: the header's wrapped data key text


def _plan(name: str, prefix: bytes, size: int, allow_unauthenticated: bool) -> _Plan:
    """Which layout a file has, from its first 400 bytes and its size (the notes' rules)."""
    if len(prefix) >= 8:
        wrapped_len, iv_len = struct.unpack_from(">ii", prefix)
        if iv_len == _BLOCK and 0 < wrapped_len <= _V2_MAX_WRAPPED:
            fill = prefix[24 + wrapped_len : V2_HEADER_SIZE]
            body = size - V2_HEADER_SIZE - MAC_SIZE
            if (
                len(prefix) < V2_HEADER_SIZE
                or fill != bytes([_V2_FILL]) * len(fill)
                or body < _BLOCK
                or body % _BLOCK
            ):
                raise FormatError(
                    f"{name}: starts like a BigDL v2 header but is not one (bad fill, or truncated)"
                )
            try:
                wrapped = prefix[8 : 8 + wrapped_len].decode("utf-8")
            except UnicodeDecodeError as exc:
                raise FormatError(f"{name}: the BigDL v2 header's data key is not text") from exc
            iv = prefix[8 + wrapped_len : 24 + wrapped_len]
            return _Plan(Layout.V2, V2_HEADER_SIZE, size - MAC_SIZE, iv, wrapped)
    if prefix[:1] == bytes([_V1_VERSION]) and (size - V1_HEADER_SIZE - MAC_SIZE) % _BLOCK == 0:
        (epoch,) = struct.unpack_from(">q", prefix, 1) if len(prefix) >= 9 else (-1,)
        body = size - V1_HEADER_SIZE - MAC_SIZE
        if not _V1_EPOCH_RANGE[0] <= epoch <= _V1_EPOCH_RANGE[1] or body < _BLOCK:
            raise FormatError(
                f"{name}: starts like a BigDL v1 header but is not one (bad timestamp, or "
                "truncated)"
            )
        return _Plan(Layout.V1, V1_HEADER_SIZE, size - MAC_SIZE, prefix[9:25], None)
    if allow_unauthenticated:
        if size < 2 * _BLOCK or size % _BLOCK:
            raise FormatError(
                f"{name}: not a BigDL file of any layout (a nativeaescbc file is an IV and "
                "whole AES blocks)"
            )
        return _Plan(Layout.NATIVE_AES_CBC, _BLOCK, size, prefix[:_BLOCK], None)
    raise FormatError(
        f"{name}: not a BigDL v2 or v1 encrypted file; a nativeaescbc file has no header "
        "and no MAC, and is read only with --unsafe-unauthenticated-input"
    )


class BigDLFile:
    """One BigDL file, open on one descriptor: its layout, its keys, verify, then decrypt.

    ``v1_data_key`` is the wrapped data key text of a v1 file (BigDL 2.1/2.2 kept it in a
    separate data-key file). Errors name the file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        keys: BigDLKeys,
        *,
        v1_data_key: str | None = None,
        allow_unauthenticated: bool = False,
    ) -> None:
        self.path = Path(path)
        try:
            self._fd, self.size = open_regular(self.path)
        except FileNotFoundError as exc:
            raise InputError(f"{self.path} does not exist") from exc
        try:
            prefix = read_at(self._fd, V2_HEADER_SIZE, 0)
            self._plan = _plan(str(self.path), prefix, self.size, allow_unauthenticated)
            self._mac_key, self._aes_key = self._keys(keys, v1_data_key)
        except BaseException:
            os.close(self._fd)
            raise
        self._verified = False

    @property
    def layout(self) -> Layout:
        """The file's layout."""
        return self._plan.layout

    @property
    def ciphertext_size(self) -> int:
        """Bytes of AES-CBC ciphertext (each pass reads them once)."""
        return self._plan.end - self._plan.start

    def _keys(self, keys: BigDLKeys, v1_data_key: str | None) -> tuple[bytes, bytes]:
        plan = self._plan
        try:
            if plan.layout is Layout.NATIVE_AES_CBC:
                return b"", keys.native_key()
            if plan.layout is Layout.V1:
                if v1_data_key is None:
                    raise CredentialsError(
                        "a BigDL v1 file: its data key is in a separate data-key file "
                        "(--bigdl-data-key)"
                    )
                wrapped = v1_data_key
            else:
                assert plan.wrapped is not None
                wrapped = plan.wrapped
            return file_keys(keys.unwrap(wrapped), plan.layout)
        except (CredentialsError, IntegrityError) as exc:
            raise type(exc)(f"{self.path}: {exc}") from exc

    def close(self) -> None:
        """Close the descriptor (twice is harmless)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> BigDLFile:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _ciphertext(self, progress: Progress | None) -> Iterator[bytes]:
        offset, end = self._plan.start, self._plan.end
        while offset < end:
            try:
                chunk = os.pread(self._fd, min(_CHUNK, end - offset), offset)
            except OSError as exc:
                raise InputError(f"cannot read {self.path}: {exc.strerror}") from exc
            if not chunk:
                raise IntegrityError(f"{self.path}: the file became shorter while being read")
            offset += len(chunk)
            if progress is not None:
                progress(len(chunk))
            yield chunk

    def _tag(self) -> bytes:
        return read_at(self._fd, MAC_SIZE, self._plan.end)

    def _mismatch(self) -> IntegrityError:
        return IntegrityError(
            f"{self.path}: the HMAC does not verify: the file was modified or truncated, or the "
            "BigDL key is wrong"
        )

    def verify(self, progress: Progress | None = None) -> None:
        """Check HMAC-SHA256 over the whole ciphertext against the file's tag (constant-time
        comparison); :class:`IntegrityError` naming the file if it does not match.

        The last block's padding is checked too (:class:`IntegrityError` if invalid: a wrong
        key). A nativeaescbc file has no MAC: only its padding is checked, which proves
        nothing about its content (it was opened only with ``allow_unauthenticated``).
        """
        if self.layout.authenticated:
            mac = hmac.new(self._mac_key, digestmod=hashlib.sha256)
            for chunk in self._ciphertext(progress):
                mac.update(chunk)
            if not hmac.compare_digest(mac.digest(), self._tag()):
                raise self._mismatch()
        # The MAC does not cover the whole key: SimpleKMS's HMAC key comes from the APP ID's
        # digits only, its AES key from the rest. A wrong AES key shows in the padding (at
        # 255 in 256 odds), which the last block alone tells: check it before any output.
        self._check_padding()
        self._verified = self.layout.authenticated

    def _padding_error(self) -> IntegrityError:
        return IntegrityError(
            f"{self.path}: the AES-CBC padding is invalid: the BigDL key is wrong (or the file "
            "is not a BigDL file)"
        )

    def _check_padding(self) -> None:
        end = self._plan.end
        if end - self._plan.start >= 2 * _BLOCK:
            tail = read_at(self._fd, 2 * _BLOCK, end - 2 * _BLOCK)
            iv, last = tail[:_BLOCK], tail[_BLOCK:]
        else:
            iv, last = self._plan.iv, read_at(self._fd, _BLOCK, end - _BLOCK)
        decryptor = Cipher(algorithms.AES(self._aes_key), modes.CBC(iv)).decryptor()
        unpadder = padding.PKCS7(128).unpadder()
        try:
            unpadder.update(decryptor.update(last) + decryptor.finalize())
            unpadder.finalize()
        except ValueError as exc:
            raise self._padding_error() from exc

    def plaintext(
        self, progress: Progress | None = None, *, verified_earlier: bool = False
    ) -> Iterator[bytes]:
        """The decrypted file, in chunks: only after :meth:`verify` passed.

        The ciphertext is read again; its MAC is recomputed on the way and checked before the
        last chunk (a file changed since :meth:`verify` raises :class:`IntegrityError` then, so
        a caller writing into an atomic output publishes nothing). Padding is checked strictly.
        ``verified_earlier``: the caller verified this path on another descriptor (to check a
        whole folder before writing anything) and writes into an atomic output; the MAC check
        of this pass is then what binds the plaintext to the tag.
        """
        if self.layout.authenticated and not (self._verified or verified_earlier):
            raise IntegrityError(f"{self.path}: not verified: call verify() first")
        mac = hmac.new(self._mac_key, digestmod=hashlib.sha256)
        decryptor = Cipher(algorithms.AES(self._aes_key), modes.CBC(self._plan.iv)).decryptor()
        unpadder = padding.PKCS7(128).unpadder()
        for chunk in self._ciphertext(progress):
            mac.update(chunk)
            out = unpadder.update(decryptor.update(chunk))
            if out:
                yield out
        if self.layout.authenticated and not hmac.compare_digest(mac.digest(), self._tag()):
            raise self._mismatch()
        try:
            last = unpadder.update(decryptor.finalize()) + unpadder.finalize()
        except ValueError as exc:
            raise self._padding_error() from exc
        if last:
            yield last
