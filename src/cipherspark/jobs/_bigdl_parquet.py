"""BigDL PPML's encrypted Parquet, verified and rewritten as cipherspark's encrypted Parquet.

BigDL wrote Parquet with Parquet Modular Encryption (PME), through parquet-java's
``PropertiesDrivenCryptoFactory`` and its test-only ``InMemoryKMS``
(``EncryptedDataFrameWriter.parquet`` and ``setParquetKey``, read from BigDL's sources)::

    parquet.encryption.key.list     = "footerKey: b64(s[0:16]), key1: b64(s[16:32])"
    parquet.encryption.footer.key   = footerKey
    parquet.encryption.column.keys  = "key1: <every top-level column>"
    parquet.encryption.algorithm    = AES_GCM_V1 | AES_GCM_CTR_V1

where ``s`` is the *data key plaintext* string (characters, UTF-8 bytes). Everything else is
parquet-java's default: an encrypted footer (magic ``PARE``), double wrapping, key material in
the footer, 128-bit data keys. InMemoryKMS "wraps" a key-encryption key (KEK) locally:
``KeyToolkit.encryptKeyLocally`` = base64(nonce[12] || AES-GCM ciphertext || tag[16]) under the
master key, with the master key's *name* (UTF-8) as associated data. :class:`_InMemoryKms` is
the same, for pyarrow's PME, unwrapping only.

Where the data key is: BigDL's ``KeyLoader.writeEncryptedDataKey`` writes the folder's
``.meta`` (``{"encryptedDataKey" : "..."}``) after the Parquet write, and its reader takes the
data key from that ``.meta`` (``retrieveDataKeyPlainText``): Parquet files carry no BigDL
header. So the wrapped data key is the ``.meta`` beside the files (for a single file: in its
folder); without one, the BigDL 2.1/2.2 data-key file's text (``--bigdl-data-key``), which is
what those versions configured for every read and write (inferred: not run against them).

Decryption is pyarrow's: every row group of every column is read, which decrypts and
authenticates every page, page header and the footer (AES_GCM_V1: all AES-GCM). AES_GCM_CTR_V1
encrypts page *data* with AES-CTR, which has no MAC: those files are treated like BigDL's
nativeaescbc files (refused unless unauthenticated input is allowed, then reported unverified);
page checksums, where the writer stored them (parquet-java's default in recent versions), are
checked too, which catches corruption but not a forger.
Modules a read never needs (page indexes, bloom filters) are not read, and not migrated either.

The output is written by pyarrow's PME in the shape cipherspark's Spark writer produces
(:func:`cipherspark.spark.pme.parquet_properties`): encrypted footer, AES_GCM_V1, double
wrapping, 256-bit data keys, the footer and every column under the cipherspark key, key material
in the footer, the KEK wrapped through the cipherspark KMS exactly as the JVM's KMS client wraps
it (:mod:`cipherspark.spark._pme_keys`: Transit for a KMS server, the ``cspk1:`` envelope for the
embedded keystore). One difference: pyarrow's KEKs are 128-bit (it has no setting), the JVM's
256-bit. Rows go from decrypted pages to encrypted pages in memory, one row group at a time:
plaintext never reaches the disk.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import struct
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cipherspark._atomic import atomic_output, atomic_output_dir
from cipherspark._descriptors import read_at
from cipherspark.crypto._bigdl import BigDLKeys
from cipherspark.crypto.container import open_regular
from cipherspark.errors import (
    CipherSparkError,
    CredentialsError,
    FormatError,
    InputError,
    IntegrityError,
    UsageError,
)
from cipherspark.kms import KeyManagementService
from cipherspark.kms.remote import RemoteKms

# The cspk1: envelope's one definition (prefix and associated data) is the JVM client's.
from cipherspark.spark._pme_keys import ENVELOPE_PREFIX, _aad

__all__ = [
    "COLUMN_KEY",
    "FOOTER_KEY",
    "META_NAME",
    "BigDLParquet",
    "MasterKeys",
    "ParquetLayout",
    "master_keys",
    "read_meta",
    "wrap_kek",
]

Progress = Callable[[int], None]

#: BigDL's two InMemoryKMS master key names (``setParquetKey``).
FOOTER_KEY = "footerKey"
COLUMN_KEY = "key1"
#: BigDL's data-key file in an output folder (``KeyLoader.META_FILE_NAME``).
META_NAME = ".meta"

_ENCRYPTED_MAGIC = b"PARE"
_PLAINTEXT_MAGIC = b"PAR1"
_NONCE = 12
_TAG = 16
# A .meta holds one JSON object with one wrapped key (at most a few hundred bytes).
_META_LIMIT = 1 << 16
# FileCryptoMetaData (Thrift compact), plaintext before the encrypted footer: field 1, a struct
# (0x1C), the EncryptionAlgorithm union whose field 1 (0x1C) is AES_GCM_V1, field 2 (0x2C)
# AES_GCM_CTR_V1.
_ALGORITHM_FIELD = 0x1C
_GCM = 0x1C
_GCM_CTR = 0x2C
# cipherspark's Spark writer's settings (spark/pme.py, parquet_properties), as pyarrow spells them.
_KEY_CACHE = timedelta(minutes=10)
_DATA_KEY_BITS = 256


class ParquetLayout(StrEnum):
    """Which PME algorithm a BigDL Parquet file is encrypted with."""

    AES_GCM_V1 = "parquet AES_GCM_V1"
    AES_GCM_CTR_V1 = "parquet AES_GCM_CTR_V1"

    @property
    def authenticated(self) -> bool:
        """Whether every module carries a MAC (AES_GCM_CTR_V1's page data does not)."""
        return self is ParquetLayout.AES_GCM_V1


@dataclass(frozen=True)
class MasterKeys:
    """BigDL's two Parquet master keys, as InMemoryKMS holds them (never in ``repr``)."""

    footer: bytes = field(repr=False)
    column: bytes = field(repr=False)

    def get(self, name: str) -> bytes | None:
        """The master key called ``name`` in the file's key material; ``None`` if unknown."""
        return {FOOTER_KEY: self.footer, COLUMN_KEY: self.column}.get(name)


def master_keys(data_key: str) -> MasterKeys:
    """``setParquetKey``: ``footerKey`` = characters 0..16 of the data key string, ``key1`` =
    characters 16..32, each as UTF-8 bytes (no padding, unlike the CBC key schedule).

    AES takes 16, 24 or 32 bytes; anything else could never have been written by BigDL (its
    InMemoryKMS fails on it): a plaintext primary key's 24-character data keys, for one, give an
    8-byte ``key1``.
    """
    footer, column = data_key[0:16].encode(), data_key[16:32].encode()
    if len(footer) not in (16, 24, 32) or len(column) not in (16, 24, 32):
        raise CredentialsError(
            f"the BigDL data key has {len(data_key)} characters: BigDL's Parquet master keys are "
            "its characters 0-16 and 16-32, so it cannot have written Parquet under it (a "
            "plaintext primary key's 24-character data keys cannot; SimpleKMS's, EHSM's and "
            "Azure's can)"
        )
    return MasterKeys(footer, column)


def read_meta(path: Path) -> str:
    """The wrapped data key in BigDL's ``.meta`` at ``path``: ``{"encryptedDataKey": "..."}``."""
    fd, size = open_regular(path)
    try:
        if size > _META_LIMIT:
            raise FormatError(f"{path}: too large for BigDL's .meta ({size:,} bytes)")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(_META_LIMIT + 1)
    finally:
        os.close(fd)
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormatError(f"{path}: not BigDL's .meta (not JSON)") from exc
    wrapped = doc.get("encryptedDataKey") if isinstance(doc, dict) else None
    if not isinstance(wrapped, str) or not wrapped:
        raise FormatError(
            f"{path}: not BigDL's .meta (a JSON object with an encryptedDataKey string)"
        )
    return wrapped


def _layout(fd: int, size: int) -> ParquetLayout:
    """The file's algorithm, from its magic and its plaintext FileCryptoMetaData.

    Not trusted by itself: the footer and pages are decrypted with what it names, so a changed
    byte here makes decryption fail.
    """
    head, tail = read_at(fd, 4, 0), read_at(fd, 8, max(size - 8, 0))
    if head == tail[4:] == _PLAINTEXT_MAGIC:
        raise IntegrityError(
            "plaintext Parquet (PAR1), not BigDL's encrypted Parquet: refused (a plaintext "
            "file among encrypted ones may have been put there by anyone)"
        )
    if size < 12 or head != _ENCRYPTED_MAGIC or tail[4:] != _ENCRYPTED_MAGIC:
        raise FormatError(
            "not a complete encrypted Parquet file (no PARE magic at both ends): truncated or "
            "damaged"
        )
    (length,) = struct.unpack("<I", tail[:4])
    if not 2 <= length <= size - 12:
        raise FormatError("the encrypted Parquet footer's length is invalid (damaged)")
    algorithm = read_at(fd, 2, size - 8 - length)
    if algorithm == bytes([_ALGORITHM_FIELD, _GCM]):
        return ParquetLayout.AES_GCM_V1
    if algorithm == bytes([_ALGORITHM_FIELD, _GCM_CTR]):
        return ParquetLayout.AES_GCM_CTR_V1
    raise FormatError("an encrypted Parquet file of an unknown algorithm (damaged?)")


class _InMemoryKms(pe.KmsClient):  # type: ignore[misc]
    """parquet-java's InMemoryKMS for pyarrow, unwrapping only: ``KeyToolkit.decryptKeyLocally``
    (base64 of nonce || AES-GCM ciphertext || tag, the master key's name as associated data)."""

    def __init__(self, keys: MasterKeys) -> None:
        super().__init__()
        self._keys = keys

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        """Never called: BigDL's files are only read."""
        raise UsageError("BigDL's Parquet keys are only unwrapped here")

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        """The key in ``wrapped_key``; :class:`IntegrityError` if it does not authenticate."""
        key = self._keys.get(master_key_identifier)
        if key is None:
            raise IntegrityError(
                f"its key material names master key {master_key_identifier[:64]!r}; BigDL's "
                f"Parquet has only {FOOTER_KEY!r} and {COLUMN_KEY!r} (not written by BigDL?)"
            )
        try:
            blob = base64.b64decode(wrapped_key, validate=True)
            if len(blob) < _NONCE + _TAG:
                raise ValueError("truncated")
            aad = master_key_identifier.encode()
            return AESGCM(key).decrypt(blob[:_NONCE], blob[_NONCE:], aad)
        except (binascii.Error, ValueError, InvalidTag) as exc:
            raise IntegrityError(
                f"its keys do not unwrap under the BigDL data key's Parquet master key "
                f"{master_key_identifier!r}: the BigDL key is wrong, the file was modified, or "
                "it was written before an append replaced .meta"
            ) from exc


def wrap_kek(kms: KeyManagementService, master_key: str, kek: bytes) -> str:
    """``kek`` wrapped under ``master_key`` as the JVM's KMS client wraps it
    (:func:`cipherspark.spark._pme_keys.wrap_key` without a TEE, through ``kms`` itself rather
    than a client opened from the environment): Transit for a KMS server, else the envelope."""
    if isinstance(kms, RemoteKms):
        return kms.transit_encrypt(master_key, kek)
    fresh = kms.generate_data_key(master_key)
    nonce = os.urandom(_NONCE)
    sealed = nonce + AESGCM(fresh.plaintext).encrypt(nonce, kek, _aad(master_key))
    return (
        ENVELOPE_PREFIX
        + base64.b64encode(fresh.wrapped).decode()
        + ":"
        + base64.b64encode(sealed).decode()
    )


class _CipherSparkKms(pe.KmsClient):  # type: ignore[misc]
    """A pyarrow KmsClient that wraps KEKs under one cipherspark key (writing only)."""

    def __init__(self, kms: KeyManagementService, key_id: str) -> None:
        super().__init__()
        self._kms = kms
        self._key_id = key_id

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        """The KEK wrapped through the cipherspark KMS (see :func:`wrap_kek`)."""
        if master_key_identifier != self._key_id:
            raise UsageError(f"the migrated Parquet is written under {self._key_id!r} only")
        return wrap_kek(self._kms, master_key_identifier, bytes(key_bytes))

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        """Never called: the output is only written here."""
        raise UsageError("the migrated Parquet's keys are only wrapped here")


@dataclass(frozen=True)
class _Opened:
    """One file open on one descriptor: its size, layout, and pyarrow's reader (footer
    decrypted) over that descriptor."""

    size: int
    layout: ParquetLayout
    file: Any  # pyarrow.parquet.ParquetFile
    int96: bool


def _damaged(path: Path) -> IntegrityError:
    # pyarrow's message is not quoted: it may carry values (a cast's, a checksum's) of the data.
    return IntegrityError(
        f"{path}: does not decrypt as encrypted Parquet: the file was modified or truncated "
        "(an AES-GCM tag or a page checksum failed, or its structure is damaged)"
    )


@contextmanager
def _errors_named(path: Path) -> Iterator[None]:
    """cipherspark's errors prefixed with ``path`` (the KMS clients' do not know it); pyarrow's
    as :func:`_damaged`."""
    try:
        yield
    except CipherSparkError as exc:
        raise type(exc)(f"{path}: {exc}") from exc
    except OSError as exc:
        # The system's own errors (a read failing, the output's disk full) keep their errno
        # through pyarrow; its decryption and format failures have none.
        if exc.errno is not None:
            raise InputError(f"{path}: input/output error: {exc.strerror}") from exc
        raise _damaged(path) from exc
    except (pa.ArrowException, ValueError) as exc:
        raise _damaged(path) from exc


class BigDLParquet:
    """BigDL Parquet input under one data key: verify each file, then migrate them all."""

    def __init__(self, keys: MasterKeys, *, allow_unauthenticated: bool = False) -> None:
        self._keys = keys
        self._allow_unauthenticated = allow_unauthenticated

    def _decryption(self) -> Any:
        """Decryption properties from a pyarrow ``CryptoFactory`` of their own: pyarrow caches
        KMS clients and unwrapped KEKs per factory (and access token), and a cached KEK would
        leave a later file's own wrapped KEK unchecked. Unwrapping is local AES-GCM: cheap."""
        keys = self._keys
        factory = pe.CryptoFactory(lambda _config: _InMemoryKms(keys))
        config = pe.KmsConnectionConfig(key_access_token=uuid.uuid4().hex)
        return factory.file_decryption_properties(
            config, pe.DecryptionConfiguration(cache_lifetime=_KEY_CACHE)
        )

    @classmethod
    def for_input(
        cls,
        src: Path,
        keys: BigDLKeys,
        *,
        v1_data_key: str | None = None,
        allow_unauthenticated: bool = False,
    ) -> BigDLParquet:
        """The input at ``src`` (a folder, or a file in one): its data key from the folder's
        ``.meta`` (else ``v1_data_key``, BigDL 2.1/2.2's data-key file), unwrapped by ``keys``.

        Raises for the folder as a whole (no ``.meta``, a malformed one, a data key BigDL
        cannot have written Parquet under, a partitioned folder), naming the path.
        """
        folder = src if src.is_dir() else src.parent
        if src.is_dir():
            nested = sorted(
                p.name for p in src.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))
            )
            if nested:
                raise InputError(
                    f"{src} has subfolders ({nested[0]}, ...): partitioned Parquet folders are "
                    "not migrated; migrate each partition folder on its own"
                )
        meta = folder / META_NAME
        if meta.exists():
            wrapped, where = read_meta(meta), str(meta)
        elif v1_data_key is not None:
            wrapped, where = v1_data_key, "the --bigdl-data-key file"
        else:
            raise InputError(
                f"{meta} does not exist: BigDL keeps the wrapped data key of a Parquet folder "
                "there (for BigDL 2.1/2.2, give its data-key file with --bigdl-data-key)"
            )
        try:
            master = master_keys(keys.unwrap(wrapped))
        except CipherSparkError as exc:
            raise type(exc)(f"{where}: {exc}") from exc
        return cls(master, allow_unauthenticated=allow_unauthenticated)

    @contextmanager
    def _open(self, path: Path) -> Iterator[_Opened]:
        """``path`` opened on one descriptor (closed at the end): layout checked, footer
        decrypted. Every error names the file."""
        fd, size = open_regular(path)
        with os.fdopen(fd, "rb") as source, _errors_named(path):
            layout = _layout(fd, size)
            if not layout.authenticated and not self._allow_unauthenticated:
                raise FormatError(
                    "AES_GCM_CTR_V1 Parquet: its page data has no MAC (only the footer and page "
                    "headers are authenticated), so a modified file could migrate as garbage; "
                    "it is read only with --unsafe-unauthenticated-input"
                )
            properties = self._decryption()
            # INT96 (Spark's default for timestamps) as microseconds, Spark's precision:
            # nanoseconds would overflow outside 1677..2262. pyarrow reads through ``source``
            # and never closes it (it did not open it): the with block does.
            file = pq.ParquetFile(
                source,
                decryption_properties=properties,
                page_checksum_verification=True,
                coerce_int96_timestamp_unit="us",
            )
            yield _Opened(size, layout, file, _int96_timestamps(file))

    def verify(self, path: Path, progress: Progress | None = None) -> ParquetLayout:
        """Decrypt every row group of ``path`` (and so authenticate every page), keeping none
        of it; its layout. Errors name the file."""
        with self._open(path) as opened:
            for index in range(opened.file.num_row_groups):
                opened.file.read_row_group(index)
        if progress is not None:
            progress(opened.size)
        return opened.layout

    def _rewrite(self, path: Path, out: BinaryIO, encryption: _Encryption) -> int:
        """Decrypt ``path`` row group by row group into ``out``, encrypted under the cipherspark
        key; the plaintext bytes (Parquet's uncompressed size of its row groups)."""
        # First: the KMS's own errors (wrapping the KEK) are not this input file's.
        properties = encryption.properties()
        with self._open(path) as opened:
            meta = opened.file.metadata
            writer = pq.ParquetWriter(
                out,
                opened.file.schema_arrow,
                compression="snappy",  # Spark's default
                encryption_properties=properties,
                # Spark's INT96 timestamps stay INT96: the same values, read by Spark as it
                # read them (its rebase settings included).
                use_deprecated_int96_timestamps=opened.int96,
                write_page_checksum=True,
                # The file's key-value metadata (Spark's schema, which Spark reads its types
                # from) is written only with pyarrow's own (ARROW:schema), which Spark ignores.
                store_schema=True,
            )
            with writer:
                for index in range(meta.num_row_groups):
                    table = opened.file.read_row_group(index)
                    writer.write_table(table, row_group_size=max(table.num_rows, 1))
        return sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))

    def migrate(
        self,
        src: Path,
        files: Sequence[Path],
        dst: Path,
        kms: KeyManagementService,
        key_id: str,
        *,
        overwrite: bool = False,
        progress: Progress | None = None,
    ) -> tuple[int, int]:
        """Rewrite the (verified) ``files`` of ``src`` to ``dst``: one encrypted Parquet file
        for a file, a folder of them (same part names) for a folder; staged, published only
        when complete. Plaintext and ciphertext bytes."""
        encryption = _Encryption(kms, key_id)
        plain = cipher = 0
        if not src.is_dir():
            with atomic_output(dst, overwrite=overwrite) as out:
                plain = self._rewrite(files[0], out, encryption)
                cipher = out.tell()
            if progress is not None:
                progress(files[0].stat().st_size)
            return plain, cipher
        with atomic_output_dir(dst, overwrite=overwrite) as staging:
            for path in files:
                with open(staging / path.name, "xb") as out:
                    plain += self._rewrite(path, out, encryption)
                    out.flush()
                    os.fsync(out.fileno())
                    cipher += out.tell()
                if progress is not None:
                    progress(path.stat().st_size)
        return plain, cipher


class _Encryption:
    """pyarrow's PME under one cipherspark key, in the Spark writer's shape: one KEK per
    migration (pyarrow caches it per factory), wrapped once by the KMS; fresh data keys per
    file."""

    def __init__(self, kms: KeyManagementService, key_id: str) -> None:
        self._factory = pe.CryptoFactory(lambda _config: _CipherSparkKms(kms, key_id))
        # The URL the Spark writer records in the key material: the KMS readers are pointed at.
        self._config = pe.KmsConnectionConfig(
            kms_instance_url=kms.url, key_access_token=uuid.uuid4().hex
        )
        self._settings = pe.EncryptionConfiguration(
            footer_key=key_id,
            uniform_encryption=True,
            encryption_algorithm="AES_GCM_V1",
            plaintext_footer=False,
            double_wrapping=True,
            internal_key_material=True,
            data_key_length_bits=_DATA_KEY_BITS,
            cache_lifetime=_KEY_CACHE,
        )

    def properties(self) -> Any:
        """Fresh ``FileEncryptionProperties`` for one file."""
        return self._factory.file_encryption_properties(self._config, self._settings)


def _int96_timestamps(file: Any) -> bool:
    """Whether ``file``'s timestamps are INT96 (then written back as INT96). pyarrow writes
    either all timestamps as INT96 or none: a file with both INT96 and INT64 timestamps (Spark's
    TIMESTAMP_NTZ beside INT96 timestamps) is refused rather than changed."""
    schema = file.schema
    int96 = int64 = False
    for index in range(len(schema)):
        column = schema.column(index)
        int96 |= column.physical_type == "INT96"
        int64 |= column.logical_type.type == "TIMESTAMP"
    if int96 and int64:
        raise FormatError(
            "has both INT96 and INT64 timestamp columns, which cannot be written back "
            "unchanged: not migrated"
        )
    return int96
