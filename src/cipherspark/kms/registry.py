"""The dataset registry: which commit of which dataset is the current one at each location.

A dataset's manifest authenticates its parts and names the dataset (a random id, its key and a
generation; docs/format.md), but storage can still swap a whole dataset for another one of the
same owner, or roll it back to an older commit of itself: both are authentic. The KMS therefore
keeps, per application (the server) or per keystore (``file://``), one :class:`DatasetRecord`
per *location*: the dataset id, its primary key, its generation and the SHA-256 of the committed
``_manifest.cspk`` (or, for a single encrypted file, of its header). Readers compare what they
find with the record at the location they read; writers replace the record with
compare-and-swap (:meth:`KeyManagementService.register_dataset`), so of two concurrent
overwrites of one location only one commits.

Who may write a record: a caller that holds the dataset's *data key*. Every registration carries
:func:`registration_proof`, an HMAC under a key derived from the data key over the new record and
the one it replaces; the server unwraps the wrapped data key itself to check it. A worker host
that holds the workload credential but not the key (attested release) cannot roll a record back,
and an old request replayed fails its compare-and-swap.

Locations are lexical absolute paths (``os.path.abspath``), not resolved ones: a symlink planted
at a dataset's location must not make the location mean the link's target.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cipherspark.errors import DatasetConflictError, UsageError

__all__ = [
    "DatasetRecord",
    "check_move",
    "check_registration",
    "dataset_location",
    "registration_proof",
    "verify_registration_proof",
]

_DIGEST = re.compile(r"[0-9a-f]{64}")
_DATASET_ID = re.compile(r"[0-9a-f]{32}")
_MAX_LOCATION = 4096  # PATH_MAX on Linux
_PROOF_INFO = b"cipherspark dataset registry v1"


def dataset_location(path: str | os.PathLike[str]) -> str:
    """The registry location of ``path``: its lexical absolute form (no symlinks resolved)."""
    location = os.path.abspath(os.fspath(path))
    if len(location) > _MAX_LOCATION or "\x00" in location or "\n" in location:
        raise UsageError("a dataset location is at most 4096 characters, without NUL or newline")
    return location


@dataclass(frozen=True)
class DatasetRecord:
    """The registered, current commit of the dataset at ``location``.

    ``manifest_sha256`` is the SHA-256 (hex) of the committed ``_manifest.cspk`` bytes, or of a
    single encrypted file's header. ``wrapped_key_sha256`` is the SHA-256 of the dataset's
    wrapped data key (the bytes in its headers): the registration proof is made with that data
    key, and readers check that the dataset they found is under it, so a record registered with a
    data key the registrant minted for the purpose matches no dataset it did not write.
    ``generation`` grows by one at each overwrite in place; a move keeps it.
    """

    location: str
    dataset_id: str
    key_id: str
    generation: int
    manifest_sha256: str
    wrapped_key_sha256: str

    def __post_init__(self) -> None:
        if dataset_location(self.location) != self.location:
            raise UsageError(f"{self.location!r} is not an absolute, normalised location")
        if not _DATASET_ID.fullmatch(self.dataset_id):
            raise UsageError(f"{self.dataset_id!r} is not a dataset id (32 lowercase hex digits)")
        if not self.key_id:
            raise UsageError("a dataset record names its primary key")
        if not 1 <= self.generation <= 2**53:
            raise UsageError("a dataset generation is at least 1")
        for digest in (self.manifest_sha256, self.wrapped_key_sha256):
            if not _DIGEST.fullmatch(digest):
                raise UsageError("a registry digest is 64 lowercase hex digits (SHA-256)")

    @classmethod
    def at(
        cls,
        path: str | os.PathLike[str] | Path,
        dataset_id: str,
        key_id: str,
        generation: int,
        manifest_sha256: str,
        wrapped_key: bytes,
    ) -> DatasetRecord:
        """A record for ``path`` (made a location with :func:`dataset_location`) of a dataset
        whose wrapped data key is ``wrapped_key``."""
        return cls(
            dataset_location(path),
            dataset_id,
            key_id,
            generation,
            manifest_sha256,
            hashlib.sha256(wrapped_key).hexdigest(),
        )

    def canonical(self) -> bytes:
        """The bytes a registration proof covers: one field per line, fixed order."""
        return "\n".join(
            (
                self.location,
                self.dataset_id,
                self.key_id,
                str(self.generation),
                self.manifest_sha256,
                self.wrapped_key_sha256,
            )
        ).encode()


def _proof_message(record: DatasetRecord, previous: DatasetRecord | None) -> bytes:
    before = b"-" if previous is None else previous.canonical()
    # Length-prefixed so no (record, previous) pair encodes like another one.
    parts = (record.canonical(), before)
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def registration_proof(
    data_key: bytes, record: DatasetRecord, previous: DatasetRecord | None
) -> bytes:
    """HMAC-SHA256, under a key derived from the dataset's data key, over ``record`` and the
    record it replaces (``None``: there is none). Proves the registrant holds the data key.

    The verifier (the KMS) unwraps the wrapped key the registrant sends, checks that its SHA-256
    is ``record.wrapped_key_sha256``, and checks this proof under it."""
    if len(data_key) != 32:
        raise UsageError("a data key is 32 bytes")
    mac_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_PROOF_INFO).derive(
        data_key
    )
    return hmac.new(mac_key, _proof_message(record, previous), hashlib.sha256).digest()


def verify_registration_proof(
    data_key: bytes, record: DatasetRecord, previous: DatasetRecord | None, proof: bytes
) -> bool:
    """Whether ``proof`` is :func:`registration_proof` of these (constant-time compare)."""
    return hmac.compare_digest(registration_proof(data_key, record, previous), proof)


def _named(record: DatasetRecord | None) -> str:
    if record is None:
        return "nothing"
    return f"dataset {record.dataset_id} generation {record.generation}"


def check_registration(
    current: DatasetRecord | None, record: DatasetRecord, previous: DatasetRecord | None
) -> bool:
    """The compare-and-swap rule every registry applies (the server and ``file://``): whether
    registering ``record`` over ``previous`` changes anything, given the record ``current``
    there now. ``False``: ``record == previous``, a no-op.

    :class:`DatasetConflictError` if ``current`` is not ``previous`` (another writer committed
    first, or the dataset was moved), or if the same dataset would not move forward (a
    rollback: an old registration's proof replayed over a newer record cannot get here, as its
    ``previous`` is not current, and this refuses one made anew)."""
    if previous is not None and previous.location != record.location:
        raise UsageError("the record and the one it replaces have one location")
    if current != previous:
        raise DatasetConflictError(
            f"the dataset registry's record at {record.location} is not the one this writer "
            f"read ({_named(current)} is registered there now, the writer expected "
            f"{_named(previous)}): another writer committed first, or the dataset was moved; "
            "nothing was registered"
        )
    if record == previous:
        return False
    if (
        previous is not None
        and record.dataset_id == previous.dataset_id
        and record.generation <= previous.generation
    ):
        raise DatasetConflictError(
            f"dataset {record.dataset_id} at {record.location} is at generation "
            f"{previous.generation}; a registration must move it forward, not to generation "
            f"{record.generation}"
        )
    return True


def check_move(
    source: DatasetRecord,
    target: DatasetRecord,
    current: DatasetRecord | None,
    there: DatasetRecord | None,
) -> None:
    """The rule for moving ``source`` to ``target.location``, given the records now at the
    source (``current``) and at the target (``there``)."""
    if target.location == source.location or target != DatasetRecord(
        target.location,
        source.dataset_id,
        source.key_id,
        source.generation,
        source.manifest_sha256,
        source.wrapped_key_sha256,
    ):
        raise UsageError("a move's target is its source at another location")
    if current != source:
        raise DatasetConflictError(
            f"the dataset registry's record at {source.location} is not the one to move "
            f"({_named(current)} is registered there now); nothing was moved"
        )
    if there is not None:
        raise DatasetConflictError(
            f"{_named(there)} is registered at {target.location}; a dataset moves only where "
            "nothing is registered"
        )
