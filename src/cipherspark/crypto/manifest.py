"""Dataset manifests: what a dataset folder must contain, authenticated, and which dataset it is.

Per-file AEAD cannot notice a part file that is missing, added, or swapped in from another run.
Every writer therefore commits ``_manifest.cspk`` beside the parts: a container under the
dataset's data key (the same key id and wrapped key as every part, content type
:data:`MANIFEST_CONTENT_TYPE`) whose plaintext is canonical JSON naming the dataset (a random
id, its key, a generation counted up by each overwrite in place) and listing every part's name,
size, row count and header digest. It is encrypted, so row counts do not leak, and
authenticated, so it cannot be edited. docs/format.md specifies it.

Readers call :func:`open_dataset`: it checks the manifest, its binding to the parts' key, the
reader's pins (key, dataset id) and the listing, and returns one :class:`ExpectedPart` per part.
Whoever then decrypts a part opens it with that entry (:class:`ContainerFile` ``expected=``),
so the bytes decrypted are checked from the same descriptor: a part replaced after
:func:`open_dataset` is refused, not read.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cipherspark.crypto._manifest_json import MAX_GENERATION, canonical, parse_document
from cipherspark.crypto.container import (
    ContainerHeader,
    EncryptingWriter,
    ExpectedPart,
    decrypt_stream,
    open_regular,
    read_header,
)
from cipherspark.errors import (
    CipherSparkError,
    FormatError,
    InputError,
    IntegrityError,
    NotEncryptedError,
    UsageError,
)

__all__ = [
    "MANIFEST_CONTENT_TYPE",
    "MANIFEST_CONTENT_TYPE_V1",
    "MANIFEST_CONTENT_TYPE_V3",
    "MANIFEST_NAME",
    "MANIFEST_VERSION",
    "Dataset",
    "DatasetIdentity",
    "Manifest",
    "PartEntry",
    "check_dataset_id",
    "describe_part",
    "list_parts",
    "next_identity",
    "open_dataset",
    "read_manifest",
    "write_manifest",
]

MANIFEST_NAME = "_manifest.cspk"
MANIFEST_VERSION = 2
MANIFEST_CONTENT_TYPE = "application/vnd.cipherspark.manifest+json; version=2"
#: A version 2 manifest that also records the dataset's schema (written when one is known).
MANIFEST_CONTENT_TYPE_V3 = "application/vnd.cipherspark.manifest+json; version=3"
#: Manifests written by cipherspark before dataset identities; still read (docs/format.md).
MANIFEST_CONTENT_TYPE_V1 = "application/vnd.cipherspark.manifest+json; version=1"
_VERSIONS = {MANIFEST_CONTENT_TYPE: 2, MANIFEST_CONTENT_TYPE_V1: 1, MANIFEST_CONTENT_TYPE_V3: 3}
_CONTENT_TYPES = {version: content_type for content_type, version in _VERSIONS.items()}
_MAX_MANIFEST = 64 << 20
_DATASET_ID = re.compile(r"[0-9a-f]{32}")

DataKeyFor = Callable[[ContainerHeader], bytes]


def check_dataset_id(value: str) -> str:
    """``value`` if it is a dataset id (32 lowercase hex digits), else :class:`UsageError`."""
    if not _DATASET_ID.fullmatch(value):
        raise UsageError(f"{value!r} is not a dataset id (32 lowercase hex digits)")
    return value


@dataclass(frozen=True)
class DatasetIdentity:
    """Which dataset a manifest commits: a random id, the primary key its data key is under,
    and a generation, 1 when first written and one more at each overwrite in place."""

    dataset_id: str
    key_id: str
    generation: int = 1

    def __post_init__(self) -> None:
        check_dataset_id(self.dataset_id)
        if not 1 <= self.generation <= MAX_GENERATION:
            raise UsageError("a dataset generation is at least 1")

    @classmethod
    def new(cls, key_id: str) -> DatasetIdentity:
        """A fresh dataset: a new random id (128 bits), generation 1."""
        return cls(secrets.token_hex(16), key_id, 1)

    def successor(self, key_id: str) -> DatasetIdentity:
        """The same dataset overwritten in place (possibly under another key)."""
        return DatasetIdentity(self.dataset_id, key_id, self.generation + 1)


@dataclass(frozen=True)
class PartEntry:
    """One part file as committed.

    ``rows`` is what the writer counted (the Spark writer: rows written; ``cipherspark
    encrypt``: non-empty lines, less the header line). It is for reporting only: readers do not
    check it, and nothing decides anything on it.
    """

    name: str
    size: int
    rows: int
    header_sha256: str


@dataclass(frozen=True)
class Manifest:
    """The committed content of a dataset folder.

    ``identity`` is ``None`` only for a version 1 manifest (written before dataset identities),
    which can still be read. ``schema`` is the dataset's columns as canonical Spark DDL
    (:func:`cipherspark._ddl.canonical_ddl`), recorded by the writer when it knew them (a
    version 3 manifest); readers use it instead of inferring types.
    """

    parts: tuple[PartEntry, ...]
    identity: DatasetIdentity | None
    schema: str | None = None

    def __post_init__(self) -> None:
        if self.schema is not None and self.identity is None:
            raise UsageError("a manifest that records a schema names its dataset")

    @property
    def rows(self) -> int:
        """Rows in the whole dataset (the entries' ``rows``: names are unique, so none twice)."""
        return sum(p.rows for p in self.parts)

    @property
    def version(self) -> int:
        """The manifest format version of this document."""
        if self.identity is None:
            return 1
        return MANIFEST_VERSION if self.schema is None else 3

    @property
    def content_type(self) -> str:
        """The content type of the container that holds this document."""
        return _CONTENT_TYPES[self.version]

    def to_json(self) -> bytes:
        """The canonical encoding (docs/format.md); parts in name order from version 2."""
        parts = [vars(p) for p in self.parts]
        if self.identity is None:
            return canonical({"version": 1, "parts": parts})
        dataset = {
            "id": self.identity.dataset_id,
            "key_id": self.identity.key_id,
            "generation": self.identity.generation,
        }
        parts.sort(key=lambda p: p["name"])
        doc: dict[str, object] = {"version": self.version, "dataset": dataset, "parts": parts}
        if self.schema is not None:
            doc["schema"] = self.schema
        return canonical(doc)

    @classmethod
    def from_json(cls, data: bytes, version: int = MANIFEST_VERSION) -> Manifest:
        """Parse exactly :meth:`to_json` output of ``version``; :class:`FormatError` otherwise."""
        doc = parse_document(data, version)
        parts = tuple(
            PartEntry(p["name"], p["size"], p["rows"], p["header_sha256"]) for p in doc["parts"]
        )
        if version == 1:
            return cls(parts, None)
        ds = doc["dataset"]
        identity = DatasetIdentity(ds["id"], ds["key_id"], ds["generation"])
        return cls(parts, identity, doc["schema"] if version == 3 else None)


@dataclass(frozen=True)
class Dataset:
    """A dataset folder whose manifest, key binding, pins and listing have been checked.

    ``parts`` are what each part file must be when it is opened to be decrypted, in name order
    (the order ``cipherspark decrypt`` concatenates them). ``manifest_sha256`` is the SHA-256
    of the ``_manifest.cspk`` bytes that were decrypted: it names this commit of the dataset.
    """

    folder: Path
    manifest: Manifest
    header: ContainerHeader = field(repr=False)
    manifest_sha256: str
    parts: tuple[ExpectedPart, ...]

    @property
    def key_id(self) -> str:
        """The primary key the dataset's data key is wrapped under."""
        return self.header.key_id

    @property
    def identity(self) -> DatasetIdentity | None:
        """The dataset's identity (``None`` for a version 1 manifest)."""
        return self.manifest.identity

    @property
    def schema(self) -> str | None:
        """The columns the dataset records (canonical Spark DDL), if its writer knew them."""
        return self.manifest.schema


def list_parts(directory: Path) -> list[Path]:
    """The data files of a directory, as Spark and Hadoop see them: no ``_`` or ``.`` names."""
    try:
        entries = sorted(directory.iterdir())
        return [p for p in entries if p.is_file() and not p.name.startswith(("_", "."))]
    except OSError as exc:
        raise InputError(f"cannot read folder {directory}: {exc.strerror}") from exc


def describe_part(path: Path, rows: int) -> PartEntry:
    """The manifest entry of a finished part file.

    The digest covers the container header and the body header (which holds the part's random
    salt and nonce prefix), so it differs for every part, even within one dataset.
    """
    part = ExpectedPart.of(path)
    return PartEntry(path.name, part.size, rows, part.header_sha256)


def write_manifest(
    folder: Path, manifest: Manifest, header: ContainerHeader, data_key: bytes
) -> None:
    """Encrypt ``manifest`` into ``folder/_manifest.cspk`` with the dataset's key.

    ``header`` is a part's (its key id and wrapped key are the dataset's); the manifest must
    be version 2 or 3 (with a schema) and name that key.
    """
    if manifest.identity is None or manifest.identity.key_id != header.key_id:
        raise UsageError("a manifest is written with the identity of a dataset under its key")
    manifest_header = ContainerHeader(
        key_id=header.key_id,
        wrapped_key=header.wrapped_key,
        segment_size=header.segment_size,
        content_type=manifest.content_type,
    )
    with open(folder / MANIFEST_NAME, "xb") as out:
        writer = EncryptingWriter(out, manifest_header, data_key)
        writer.write(manifest.to_json())
        writer.close()
        out.flush()
        os.fsync(out.fileno())


@dataclass(frozen=True)
class _Read:
    manifest: Manifest
    header: ContainerHeader
    sha256: str


def _read(folder: Path, data_key_for: DataKeyFor, key_id: str | None) -> _Read | None:
    """The authenticated manifest, read and decrypted from one descriptor; None if absent.

    With ``key_id``, a manifest under another key is refused before any key is asked for.
    """
    path = folder / MANIFEST_NAME
    try:
        fd, size = open_regular(path)
    except FileNotFoundError:
        return None
    try:
        if size > _MAX_MANIFEST:
            raise FormatError(f"{path}: the manifest is implausibly large")
        chunks: list[bytes] = []
        offset = 0
        while offset < size and (chunk := os.pread(fd, size - offset, offset)):
            chunks.append(chunk)
            offset += len(chunk)
        data = b"".join(chunks)  # what is hashed and decrypted: the same bytes
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    stream = io.BytesIO(data)
    header, raw = read_header(stream)
    version = _VERSIONS.get(header.content_type)
    if version is None:
        raise FormatError(f"{path} is not a dataset manifest")
    if key_id is not None and header.key_id != key_id:
        raise IntegrityError(
            f"{folder}: the dataset is under key {header.key_id!r}, not {key_id!r} "
            "(it may have been replaced by another dataset)"
        )
    plaintext = b"".join(decrypt_stream(stream, data_key_for, header=(header, raw)))
    manifest = Manifest.from_json(plaintext, version)
    if manifest.identity is not None and manifest.identity.key_id != header.key_id:
        raise IntegrityError(f"{path} names another key than the one it is encrypted under")
    return _Read(manifest, header, hashlib.sha256(data).hexdigest())


def read_manifest(folder: Path, data_key_for: DataKeyFor) -> Manifest | None:
    """The authenticated manifest of ``folder``, or None if it has none.

    This reads the manifest alone (for reporting, e.g. row counts); a reader of the data uses
    :func:`open_dataset`, which also checks the parts against it.
    """
    read = _read(folder, data_key_for, None)
    return None if read is None else read.manifest


def open_dataset(
    folder: Path,
    data_key_for: DataKeyFor,
    *,
    key_id: str | None = None,
    dataset_id: str | None = None,
) -> Dataset:
    """Check the dataset folder ``folder`` (docs/format.md, "Reading a folder") and return what
    each part must be when it is decrypted.

    ``key_id`` and ``dataset_id`` pin what the reader expects: a dataset under another key, or
    another dataset, is refused (:class:`IntegrityError`, one message saying which). Raises
    :class:`InputError` for a folder without data files, :class:`IntegrityError` for a missing
    or unauthentic manifest, a part not under the manifest's key, or parts not the ones listed,
    :class:`FormatError` for a malformed manifest.
    """
    parts = list_parts(folder)
    if not parts:
        raise InputError(f"folder {folder} holds no data files")
    read = _read(folder, data_key_for, key_id)
    if read is None:
        raise IntegrityError(
            f"{folder} has no dataset manifest ({MANIFEST_NAME}), so missing or swapped part "
            "files could not be detected; encrypt folders with 'cipherspark encrypt' or write "
            "them with Spark"
        )
    identity = read.manifest.identity
    if dataset_id is not None:
        if identity is None:
            raise IntegrityError(
                f"{folder}: the dataset has no id (its manifest is version 1, written by an "
                f"earlier cipherspark), so it cannot be checked to be dataset {dataset_id}"
            )
        if identity.dataset_id != dataset_id:
            raise IntegrityError(
                f"{folder} holds dataset {identity.dataset_id}, not {dataset_id} "
                "(it may have been replaced by another dataset)"
            )
    return Dataset(
        folder, read.manifest, read.header, read.sha256, _check_listing(folder, read, parts)
    )


def _check_listing(folder: Path, read: _Read, parts: Sequence[Path]) -> tuple[ExpectedPart, ...]:
    """Check that ``parts`` (the folder's data files) are exactly the manifest's parts, each
    under the manifest's key; return each one's expected state, in name order."""
    expected = {p.name: p for p in read.manifest.parts}
    present = {p.name: p for p in parts}
    missing = sorted(set(expected) - set(present))
    extra = sorted(set(present) - set(expected))
    if missing:
        raise IntegrityError(f"{folder}: part file {missing[0]} listed in the manifest is missing")
    if extra:
        raise IntegrityError(f"{folder}: part file {extra[0]} is not in the manifest")
    checked = []
    for name in sorted(expected):
        entry = expected[name]
        path = present[name].absolute()
        try:
            actual: ExpectedPart | None = ExpectedPart.of(path)
        except (FormatError, NotEncryptedError, IntegrityError):
            actual = None  # e.g. cut inside its header: not the committed part
        if (
            actual is None
            or actual.size != entry.size
            or actual.header_sha256 != entry.header_sha256
        ):
            raise IntegrityError(f"{folder}: part file {name} is not the one committed")
        if (actual.header.key_id, actual.header.wrapped_key) != (
            read.header.key_id,
            read.header.wrapped_key,
        ):
            raise IntegrityError(
                f"{folder}: part file {name} is not under the data key of the manifest"
            )
        checked.append(actual)
    return tuple(checked)


def next_identity(folder: Path, data_key_for: DataKeyFor, key_id: str) -> DatasetIdentity:
    """The identity a dataset written to ``folder`` (replacing what is there) gets: the
    successor of the dataset there if its manifest authenticates, else a new dataset."""
    try:
        read = _read(folder, data_key_for, None) if folder.is_dir() else None
    except (CipherSparkError, OSError):
        read = None  # not a dataset we can read: the new one is a new dataset
    if read is None or read.manifest.identity is None:
        return DatasetIdentity.new(key_id)
    identity = read.manifest.identity
    if identity.generation >= MAX_GENERATION:
        return DatasetIdentity.new(key_id)
    return identity.successor(key_id)
