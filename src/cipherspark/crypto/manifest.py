"""Dataset manifests: what a written output folder must contain, authenticated.

Per-file AEAD cannot notice a part file that is missing, added, or swapped in from another run.
The Spark writer therefore commits ``_manifest.cspk`` beside its parts: a container (same key id
and wrapped data key as the parts, content type :data:`MANIFEST_CONTENT_TYPE`) whose plaintext is
JSON listing every part's name, size, row count and header digest. It is encrypted, so row counts
do not leak, and authenticated under the dataset's data key, so it cannot be edited.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cipherspark.crypto._streaming import BODY_HEADER_SIZE
from cipherspark.crypto.container import (
    ContainerHeader,
    EncryptingWriter,
    decrypt_stream,
    read_header,
)
from cipherspark.errors import FormatError, InputError, IntegrityError

__all__ = [
    "MANIFEST_CONTENT_TYPE",
    "MANIFEST_NAME",
    "Manifest",
    "PartEntry",
    "describe_part",
    "list_parts",
    "read_manifest",
    "require_manifest",
    "verify_listing",
    "write_manifest",
]

MANIFEST_NAME = "_manifest.cspk"
MANIFEST_CONTENT_TYPE = "application/vnd.cipherspark.manifest+json; version=1"
_MAX_MANIFEST = 64 << 20


@dataclass(frozen=True)
class PartEntry:
    """One part file as committed."""

    name: str
    size: int
    rows: int
    header_sha256: str


@dataclass(frozen=True)
class Manifest:
    """The committed content of a dataset folder."""

    parts: tuple[PartEntry, ...]

    @property
    def rows(self) -> int:
        """Rows in the whole dataset."""
        return sum(p.rows for p in self.parts)

    def to_json(self) -> bytes:
        """Canonical JSON."""
        doc = {"version": 1, "parts": [vars(p) for p in self.parts]}
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        """Parse :meth:`to_json` output; :class:`FormatError` on anything else."""
        try:
            doc: Any = json.loads(data)
            if not isinstance(doc, dict) or doc.get("version") != 1:
                raise ValueError("not a version 1 manifest")
            parts = tuple(
                PartEntry(str(p["name"]), int(p["size"]), int(p["rows"]), str(p["header_sha256"]))
                for p in doc["parts"]
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise FormatError("the dataset manifest is malformed") from exc
        return cls(parts)


def list_parts(directory: Path) -> list[Path]:
    """The data files of a directory, as Spark and Hadoop see them: no ``_`` or ``.`` names."""
    try:
        entries = sorted(directory.iterdir())
    except OSError as exc:
        raise InputError(f"cannot read folder {directory}: {exc.strerror}") from exc
    return [p for p in entries if p.is_file() and not p.name.startswith(("_", "."))]


def describe_part(path: Path, rows: int) -> PartEntry:
    """The manifest entry of a finished part file.

    The digest covers the container header and the body header (which holds the part's random
    salt and nonce prefix), so it differs for every part, even within one dataset.
    """
    with open(path, "rb") as f:
        _, raw = read_header(f)
        body_header = f.read(BODY_HEADER_SIZE)
        size = os.fstat(f.fileno()).st_size
    return PartEntry(path.name, size, rows, hashlib.sha256(raw + body_header).hexdigest())


def write_manifest(
    folder: Path, manifest: Manifest, header: ContainerHeader, data_key: bytes
) -> None:
    """Encrypt ``manifest`` into ``folder/_manifest.cspk`` with the dataset's key."""
    manifest_header = ContainerHeader(
        key_id=header.key_id,
        wrapped_key=header.wrapped_key,
        segment_size=header.segment_size,
        content_type=MANIFEST_CONTENT_TYPE,
    )
    with open(folder / MANIFEST_NAME, "xb") as out:
        writer = EncryptingWriter(out, manifest_header, data_key)
        writer.write(manifest.to_json())
        writer.close()
        out.flush()
        os.fsync(out.fileno())


def read_manifest(
    folder: Path, data_key_for: Callable[[ContainerHeader], bytes]
) -> Manifest | None:
    """The authenticated manifest of ``folder``, or None if it has none."""
    path = folder / MANIFEST_NAME
    if not path.exists():
        return None
    if path.stat().st_size > _MAX_MANIFEST:
        raise FormatError(f"{path}: the manifest is implausibly large")
    with open(path, "rb") as f:
        header, raw = read_header(f)
        if header.content_type != MANIFEST_CONTENT_TYPE:
            raise FormatError(f"{path} is not a dataset manifest")
        data = b"".join(decrypt_stream(f, data_key_for, header=(header, raw)))
    return Manifest.from_json(data)


def require_manifest(
    folder: Path, data_key_for: Callable[[ContainerHeader], bytes], parts: Sequence[Path]
) -> Manifest:
    """The folder's manifest, after checking ``parts`` against it.

    A folder without a manifest is refused: without one, a deleted part file would go unnoticed.
    """
    manifest = read_manifest(folder, data_key_for)
    if manifest is None:
        raise IntegrityError(
            f"{folder} has no dataset manifest ({MANIFEST_NAME}), so missing or swapped part "
            "files could not be detected; encrypt folders with 'cipherspark encrypt' or write "
            "them with Spark"
        )
    verify_listing(folder, manifest, parts)
    return manifest


def verify_listing(folder: Path, manifest: Manifest, parts: Sequence[Path]) -> None:
    """Check that ``parts`` (the folder's data files) are exactly the manifest's parts.

    Raises :class:`IntegrityError` naming the first difference: a missing, extra, resized or
    swapped part file.
    """
    expected = {p.name: p for p in manifest.parts}
    present = {p.name: p for p in parts}
    missing = sorted(set(expected) - set(present))
    extra = sorted(set(present) - set(expected))
    if missing:
        raise IntegrityError(f"{folder}: part file {missing[0]} listed in the manifest is missing")
    if extra:
        raise IntegrityError(f"{folder}: part file {extra[0]} is not in the manifest")
    for name, entry in expected.items():
        try:
            actual: PartEntry | None = describe_part(present[name], entry.rows)
        except (FormatError, InputError):  # e.g. cut inside its header: not the committed part
            actual = None
        if (
            actual is None
            or actual.size != entry.size
            or actual.header_sha256 != entry.header_sha256
        ):
            raise IntegrityError(f"{folder}: part file {name} is not the one committed")
