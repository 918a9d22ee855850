"""Parquet Modular Encryption (PME) in the secure session: every Parquet write encrypted.

Spark's own Parquet reader and writer (vectorised, with column pruning, predicate and row-group
pushdown, statistics) encrypt and decrypt through parquet-java's
``PropertiesDrivenCryptoFactory``; cipherspark provides its one missing piece, the KMS client
(``org.cipherspark.pme.CipherSparkKmsClient``, built from java/ by ``scripts/build-java``),
which delegates every key operation to cipherspark's KMS code (see
:mod:`cipherspark.spark._pme_helper`). A session configured with :class:`ParquetEncryption`
writes files with an encrypted footer (magic ``PARE``), AES_GCM_V1, double wrapping (data keys
under a key-encryption key per master key and JVM, itself wrapped by the KMS) and 256-bit keys;
by default the footer and every column are under the session's key. Reading needs nothing: the
key material travels in each file's footer metadata. docs/parquet.md has the details and
figures.

A session without one refuses to write Parquet (the KMS client says why), unless it was opened
with ``unsafe_plaintext_parquet``; :func:`unsafe_plaintext_parquet_options` is the same opt-out
for one write. Readers refuse plaintext Parquet files in the JVM that reads them (a plaintext
file in an encrypted table may be anyone's), unless a read passes
:func:`unsafe_plaintext_parquet_read_options`.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
import struct
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from cipherspark.errors import InputError, IntegrityError, UsageError
from cipherspark.kms import validate_key_name

__all__ = [
    "CRYPTO_FACTORY_CLASS",
    "ENCRYPTED_MAGIC",
    "FOOTER_KEY_PIN",
    "KMS_CLIENT_CLASS",
    "NO_KMS",
    "PME_JAR_NAME",
    "UNSAFE_PLAINTEXT_READS",
    "ParquetEncryption",
    "check_encrypted_parquet",
    "column_key_options",
    "find_pme_jar",
    "is_parquet",
    "parquet_properties",
    "require_pme_jar",
    "session_conf",
    "unsafe_plaintext_parquet_options",
    "unsafe_plaintext_parquet_read_options",
]

#: parquet-java's ``PropertiesDrivenCryptoFactory``, except that readers refuse plaintext files
#: and, where pinned, footers under another key, in the JVM that decrypts (java/, built by
#: ``scripts/build-java``).
CRYPTO_FACTORY_CLASS = "org.cipherspark.pme.CipherSparkCryptoFactory"
KMS_CLIENT_CLASS = "org.cipherspark.pme.CipherSparkKmsClient"
#: The KMS URL of a session that has no KMS for Parquet: the KMS client refuses every key
#: operation with a message saying how to configure one (``CipherSparkKmsClient.NO_KMS``).
NO_KMS = "cipherspark:no-kms"
#: The master key a session without a key "uses": never reached, the KMS client refuses first.
_NO_KEY = "cipherspark-no-parquet-key"
PME_JAR_NAME = "cipherspark-pme.jar"
#: Hadoop property naming the interpreter of the key helper (CipherSparkKmsClient.PYTHON_PROPERTY).
_PYTHON_PROPERTY = "cipherspark.pme.python"

#: Hadoop property (a reader option, or a session's): ``true`` lets plaintext Parquet files be
#: read (CipherSparkCryptoFactory.UNSAFE_PLAINTEXT_READS).
UNSAFE_PLAINTEXT_READS = "cipherspark.pme.unsafe.plaintext.reads"
#: Hadoop property (a reader option): the master key every file's footer must be under
#: (CipherSparkCryptoFactory.FOOTER_KEY).
FOOTER_KEY_PIN = "cipherspark.pme.footer.key"

_UNIFORM = "parquet.encryption.uniform.key"
_FOOTER = "parquet.encryption.footer.key"
_COLUMNS = "parquet.encryption.column.keys"
_COMPLETE = "parquet.encryption.complete.columns"


@dataclass(frozen=True)
class ParquetEncryption:
    """How a secure session encrypts the Parquet files it writes.

    ``footer_key`` (a primary key at ``kms_url``) protects the footer and, unless
    ``column_keys`` gives them another key, every column. ``column_keys`` maps a primary key to
    the columns it protects (dotted paths for nested fields): a reader without that key still
    reads the other columns, as PME specifies. A session-wide column key applies to every
    Parquet write of the session, so each written DataFrame must have those columns; for one
    write, use :func:`column_key_options`. ``cache_lifetime_seconds`` is how long a JVM keeps a
    key-encryption key (Parquet's ``parquet.encryption.cache.lifetime.seconds``): the KMS is
    asked about once per master key per JVM per lifetime, whatever the number of files.
    """

    kms_url: str
    footer_key: str
    column_keys: Mapping[str, Sequence[str]] = field(default_factory=lambda: MappingProxyType({}))
    cache_lifetime_seconds: int = 600

    def __post_init__(self) -> None:
        if not self.kms_url:
            raise UsageError("Parquet encryption needs a KMS URL")
        validate_key_name(self.footer_key)
        _column_keys_text(self.column_keys)
        if self.cache_lifetime_seconds < 1:
            raise UsageError("cache_lifetime_seconds must be at least 1")
        # Frozen: keep a read-only copy, so the value cannot change behind the session.
        frozen = {key: tuple(columns) for key, columns in self.column_keys.items()}
        object.__setattr__(self, "column_keys", MappingProxyType(frozen))


def _column_keys_text(column_keys: Mapping[str, Sequence[str]]) -> str:
    """``KEY:col,col;KEY:col`` (Parquet's ``parquet.encryption.column.keys``), validated."""
    seen: set[str] = set()
    groups = []
    for key, columns in column_keys.items():
        validate_key_name(key)
        if isinstance(columns, str) or not columns:
            raise UsageError(f"column key {key!r}: give a list of column names")
        for column in columns:
            if not column or any(c in column for c in ",:;") or column != column.strip():
                raise UsageError(f"column key {key!r}: invalid column name {column!r}")
            if column in seen:
                raise UsageError(f"column {column!r} is given two keys")
            seen.add(column)
        groups.append(f"{key}:{','.join(columns)}")
    return ";".join(groups)


def _key_settings(footer_key: str, column_keys: Mapping[str, Sequence[str]]) -> dict[str, str]:
    # Every one of the four is set, to "" where unused: these settings are layered (session
    # conf, then write options) and PropertiesDrivenCryptoFactory refuses uniform + footer keys.
    if not column_keys:
        return {_UNIFORM: footer_key, _FOOTER: "", _COLUMNS: "", _COMPLETE: "false"}
    return {
        _UNIFORM: "",
        _FOOTER: footer_key,
        _COLUMNS: _column_keys_text(column_keys),
        # Columns not listed go under the footer key: nothing is written in plaintext.
        _COMPLETE: "true",
    }


def parquet_properties(
    encryption: ParquetEncryption | None,
    *,
    unsafe_plaintext_parquet: bool = False,
    unsafe_plaintext_parquet_reads: bool = False,
) -> dict[str, str]:
    """The Hadoop properties that make Parquet writes follow ``encryption``, and reads refuse
    plaintext files.

    ``None`` without the opt-out: every write is refused (:data:`NO_KMS`); with
    ``unsafe_plaintext_parquet``: written in plaintext, and plaintext files read (the session
    has no Parquet encryption at all). ``unsafe_plaintext_parquet_reads`` alone lets an
    encrypting session read plaintext files too. Nothing here is secret: the KMS URL, key
    names and cache settings; credentials stay in the environment of Spark's processes.
    """
    if encryption is not None and unsafe_plaintext_parquet:
        raise UsageError("give a Parquet key or unsafe_plaintext_parquet, not both")
    url = NO_KMS if encryption is None else encryption.kms_url
    props = {
        "parquet.encryption.kms.instance.url": url,
        # Parquet caches KMS clients and key-encryption keys per access token, then per master
        # key name: a token per KMS keeps two keystores' keys of the same name apart. Our
        # client ignores the token's value (credentials come from the environment).
        "parquet.encryption.key.access.token": "cipherspark-"
        + hashlib.sha256(url.encode()).hexdigest()[:16],
        "parquet.encryption.algorithm": "AES_GCM_V1",
        "parquet.encryption.plaintext.footer": "false",
        "parquet.encryption.double.wrapping": "true",
        "parquet.encryption.key.material.store.internally": "true",
        "parquet.encryption.data.key.length.bits": "256",
        "parquet.encryption.kek.length.bits": "256",
        # Set either way: a session this one joins may have allowed them.
        UNSAFE_PLAINTEXT_READS: str(
            unsafe_plaintext_parquet or unsafe_plaintext_parquet_reads
        ).lower(),
    }
    if encryption is not None:
        props["parquet.encryption.cache.lifetime.seconds"] = str(encryption.cache_lifetime_seconds)
        props.update(_key_settings(encryption.footer_key, encryption.column_keys))
    elif unsafe_plaintext_parquet:
        props.update({_UNIFORM: "", _FOOTER: "", _COLUMNS: "", _COMPLETE: "false"})
    else:
        props.update(_key_settings(_NO_KEY, {}))
    return props


def column_key_options(footer_key: str, column_keys: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Writer options for one Parquet write with per-column keys::

        df.write.options(**column_key_options("main", {"pii": ["ssn", "email"]})).parquet(p)

    The footer and the unlisted columns are under ``footer_key``.
    """
    validate_key_name(footer_key)
    if not column_keys:
        raise UsageError("name at least one column key")
    return _key_settings(footer_key, column_keys)


def unsafe_plaintext_parquet_options() -> dict[str, str]:
    """Writer options for one *plaintext* Parquet write in a secure session (the explicit
    opt-out: anyone who can read the files reads every value)."""
    return {_UNIFORM: "", _FOOTER: "", _COLUMNS: "", _COMPLETE: "false"}


def unsafe_plaintext_parquet_read_options() -> dict[str, str]:
    """Reader options for one read of *plaintext* Parquet in a secure session (the explicit
    opt-out: the session's readers refuse plaintext files, which anyone who can write to the
    storage could have put there)::

        spark.read.options(**unsafe_plaintext_parquet_read_options()).parquet(public)
    """
    return {UNSAFE_PLAINTEXT_READS: "true"}


def find_pme_jar() -> Path | None:
    """The built KMS client jar: shipped in the package (wheels), else this checkout's
    ``build/java`` (editable installs; built by ``scripts/build-java``); ``None`` if neither.

    A checkout's jar older than a Java source of it counts as missing: it is not what the
    sources say.
    """
    shipped = importlib.resources.files("cipherspark.spark").joinpath(PME_JAR_NAME)
    if shipped.is_file():
        return Path(str(shipped))
    root = Path(__file__).resolve().parents[3]
    jar = root / "build" / "java" / PME_JAR_NAME
    sources = root / "java" / "src"
    if not jar.is_file():
        return None
    built = jar.stat().st_mtime
    if any(source.stat().st_mtime > built for source in sources.rglob("*.java")):
        return None
    return jar


def require_pme_jar() -> Path:
    """:func:`find_pme_jar`, or :class:`InputError` saying how to build it."""
    jar = find_pme_jar()
    if jar is None:
        raise InputError(
            f"the Parquet encryption KMS client ({PME_JAR_NAME}) is not built, or older than "
            "its sources: run scripts/build-java (it needs a JDK's javac 17+)"
        )
    return jar


def session_conf(
    encryption: ParquetEncryption | None,
    *,
    unsafe_plaintext_parquet: bool = False,
    unsafe_plaintext_parquet_reads: bool = False,
    jar: Path | None = None,
    existing_jars: str | None = None,
) -> dict[str, str]:
    """The Spark settings of a secure session for Parquet: the crypto factory, the KMS client
    (``jar`` added to ``spark.jars``, after ``existing_jars``), the key helper's interpreter, and
    :func:`parquet_properties` as ``spark.hadoop.*``."""
    conf = {
        "spark.hadoop.parquet.crypto.factory.class": CRYPTO_FACTORY_CLASS,
        "spark.hadoop.parquet.encryption.kms.client.class": KMS_CLIENT_CLASS,
        # The helper must run this interpreter, the one cipherspark is installed in.
        f"spark.hadoop.{_PYTHON_PROPERTY}": sys.executable,
    }
    jars = ",".join(filter(None, [existing_jars, None if jar is None else str(jar)]))
    if jars:
        conf["spark.jars"] = jars
    props = parquet_properties(
        encryption,
        unsafe_plaintext_parquet=unsafe_plaintext_parquet,
        unsafe_plaintext_parquet_reads=unsafe_plaintext_parquet_reads,
    )
    conf.update({f"spark.hadoop.{key}": value for key, value in props.items()})
    return conf


# -- encrypted Parquet tables on disk ---------------------------------------------------------

#: The magic at both ends of a Parquet file: ``PARE`` with an encrypted footer, ``PAR1`` without.
ENCRYPTED_MAGIC = b"PARE"
_PLAINTEXT_MAGIC = b"PAR1"
#: cipherspark's encrypted-CSV dataset manifest (:data:`cipherspark.crypto.manifest.MANIFEST_NAME`;
#: spelled here so this module stays free of the crypto package's imports).
_CSV_MANIFEST = "_manifest.cspk"
_MASTER_KEY = re.compile(rb'"masterKeyID":"([^"\\]{1,256})"')


def _magic(path: Path) -> tuple[bytes, bytes] | None:
    """The first and last four bytes of ``path``; ``None`` if it is shorter than a Parquet file."""
    try:
        with path.open("rb") as f:
            head = f.read(4)
            size = f.seek(0, 2)
            if size < 12:
                return None
            f.seek(size - 4)
            return head, f.read(4)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc


def _data_files(folder: Path) -> list[Path]:
    """The files Spark's Parquet reader reads in ``folder``: recursively (partition folders),
    skipping names starting with ``_`` or ``.`` (``_SUCCESS``, checksums, staging folders)."""
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(("_", ".")):
            continue
        if entry.is_dir():
            found.extend(_data_files(entry))
        else:
            found.append(entry)
    return found


def is_parquet(path: Path) -> bool:
    """Whether ``path`` holds a Parquet table rather than cipherspark's encrypted CSV: a file with
    Parquet's magic at both ends, or a folder (without a cipherspark dataset manifest) whose
    first data file has it. The format comes from the data, not from the name."""
    if path.is_dir():
        if (path / _CSV_MANIFEST).exists():
            return False
        files = _data_files(path)
        return bool(files) and is_parquet(files[0])
    magic = _magic(path)
    if magic is None:
        return False
    head, tail = magic
    return head == tail and head in (ENCRYPTED_MAGIC, _PLAINTEXT_MAGIC)


def _footer_key(path: Path) -> str:
    """The master key named by the footer's key material (plaintext ``FileCryptoMetaData`` just
    before the encrypted footer). Not trusted by itself: it only names the key whose KMS
    wrapping must then open the footer, so a changed name fails to decrypt."""
    with path.open("rb") as f:
        size = f.seek(0, 2)
        f.seek(size - 8)
        (length,) = struct.unpack("<I", f.read(4))
        if length > size - 12:
            raise IntegrityError(f"Parquet file {path} is truncated or malformed")
        f.seek(size - 8 - length)
        meta = f.read(length)
    found = _MASTER_KEY.search(meta)
    if found is None:
        raise IntegrityError(
            f"Parquet file {path} carries no cipherspark key material in its footer"
        )
    return found.group(1).decode("utf-8", "replace")


def check_encrypted_parquet(path: Path, *, key_id: str | None = None) -> str:
    """Check that every file Spark would read of the Parquet table at ``path`` is encrypted
    Parquet (magic ``PARE`` at both ends) under one footer key, ``key_id`` if given; that key.

    A table that is partly plaintext is refused: whoever can write to storage could add or
    swap in plaintext rows of their choosing. This is the early check, before Spark starts, by
    the file names and bytes (:class:`InputError`, :class:`IntegrityError`), for a clear error
    and nothing started; what holds against storage that changes a file after it is the
    readers' own check, file by file in the JVM that decrypts (:data:`CRYPTO_FACTORY_CLASS`:
    no plaintext file, the footer key pinned by :data:`FOOTER_KEY_PIN`), and the
    authentication of every module is Parquet's, as the files are read.
    """
    if not path.exists():
        raise InputError(f"{path} does not exist")
    files = _data_files(path) if path.is_dir() else [path]
    if not files:
        raise InputError(f"{path} holds no Parquet file")
    keys = set()
    for file in files:
        if _magic(file) != (ENCRYPTED_MAGIC, ENCRYPTED_MAGIC):
            raise IntegrityError(
                f"{file} is not encrypted Parquet (no encrypted footer): refused, a plaintext "
                "file in an encrypted table may have been put there by anyone who can write to "
                "the storage"
            )
        keys.add(_footer_key(file))
    if key_id is not None and keys != {key_id}:
        other = sorted(keys - {key_id})[0]
        raise IntegrityError(
            f"{path}: a Parquet file is under key {other!r}, not {key_id!r} "
            "(it may have been replaced by another file)"
        )
    if len(keys) > 1:
        raise IntegrityError(f"{path}: its Parquet files are under different keys {sorted(keys)}")
    return keys.pop()
