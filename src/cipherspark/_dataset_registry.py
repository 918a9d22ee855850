"""The writers' side of the dataset registry (:mod:`cipherspark.kms.registry`).

Every writer of an encrypted dataset (``encrypt``, ``migrate``, the Spark writer) does the same
three things, in this order:

1. before it writes anything, it reads the record registered at the output's location
   (:func:`registered_at`): that record is the ``previous`` of its compare-and-swap, so of two
   writers that started from the same state only the first to commit wins;
2. it chooses the dataset's identity (:func:`identity_for`): overwriting in place continues
   the registered dataset (same id, next generation), else the one on disk, else a new one;
3. once the output is complete in its staging place and *before* it is published, it registers
   the new record (:func:`register_folder`, :func:`register_file`). A refused registration
   raises, and the writer's staging is removed: nothing is published.

A failure between registering and publishing (a crash, a full disk at the rename) leaves a
record that names a commit which is not at the location: readers that enforce the registry
refuse the location until it is written again. The record is not reverted, on purpose: a
revert is a registration to an older record, which the rule that a dataset only moves forward
(:func:`~cipherspark.kms.registry.check_registration`) exists to refuse.
"""

from __future__ import annotations

import hashlib
import os
import shlex
from collections.abc import Callable
from pathlib import Path

from cipherspark.crypto._manifest_json import MAX_GENERATION
from cipherspark.crypto.container import ContainerHeader, ExpectedPart
from cipherspark.crypto.manifest import MANIFEST_NAME, Dataset, DatasetIdentity, next_identity
from cipherspark.errors import CipherSparkError, IntegrityError
from cipherspark.kms.base import KeyManagementService
from cipherspark.kms.registry import DatasetRecord, dataset_location, registration_proof

__all__ = [
    "check_file",
    "check_folder",
    "check_registered",
    "folder_record",
    "identity_for",
    "register_file",
    "register_folder",
    "registered_at",
    "single_file_record",
]


def registered_at(kms: KeyManagementService, path: str | os.PathLike[str]) -> DatasetRecord | None:
    """The record registered at ``path``'s location now (read before writing: the previous
    record of the writer's compare-and-swap)."""
    return kms.dataset_at(dataset_location(path))


def identity_for(
    path: Path,
    key_id: str,
    *,
    overwrite: bool,
    previous: DatasetRecord | None,
    data_key_for: Callable[[ContainerHeader], bytes],
) -> DatasetIdentity:
    """The identity of a dataset written to ``path``: a new dataset, or, overwriting in place,
    the successor of the registered dataset (or, where none is registered, of the one on disk).

    The registry comes first: it is what readers check, and storage cannot roll it back."""
    if not overwrite:
        return DatasetIdentity.new(key_id)
    if previous is not None and previous.generation < MAX_GENERATION:
        return DatasetIdentity(previous.dataset_id, key_id, previous.generation + 1)
    return next_identity(path, data_key_for, key_id)


def _register(
    kms: KeyManagementService,
    record: DatasetRecord,
    previous: DatasetRecord | None,
    wrapped_key: bytes,
    data_key: bytes,
) -> DatasetRecord:
    proof = registration_proof(data_key, record, previous)
    kms.register_dataset(record, previous=previous, wrapped_key=wrapped_key, proof=proof)
    return record


def register_folder(
    kms: KeyManagementService,
    path: Path,
    staging: Path,
    identity: DatasetIdentity,
    *,
    previous: DatasetRecord | None,
    wrapped_key: bytes,
    data_key: bytes,
) -> DatasetRecord:
    """Register the dataset folder complete in ``staging`` (its manifest written) as the
    current commit at ``path``, over ``previous``; raises as
    :meth:`~cipherspark.kms.KeyManagementService.register_dataset` does."""
    digest = hashlib.sha256((staging / MANIFEST_NAME).read_bytes()).hexdigest()
    record = DatasetRecord.at(
        path, identity.dataset_id, identity.key_id, identity.generation, digest, wrapped_key
    )
    return _register(kms, record, previous, wrapped_key, data_key)


def single_file_record(
    path: str | os.PathLike[str], header: ContainerHeader, header_sha256: str
) -> DatasetRecord:
    """The record of a single encrypted file: it is identified by its header digest (which
    covers its random salt, so every write is a new dataset of generation 1)."""
    return DatasetRecord.at(
        path, header_sha256[:32], header.key_id, 1, header_sha256, header.wrapped_key
    )


def register_file(
    kms: KeyManagementService,
    path: Path,
    header: ContainerHeader,
    header_sha256: str,
    *,
    previous: DatasetRecord | None,
    data_key: bytes,
) -> DatasetRecord:
    """Register the single encrypted file written (not yet published) for ``path``, whose
    header is ``header`` and header digest (header and body header) ``header_sha256``."""
    record = single_file_record(path, header, header_sha256)
    return _register(kms, record, previous, header.wrapped_key, data_key)


def _differs(found: DatasetRecord, registered: DatasetRecord) -> str:
    """What makes the commit ``found`` at a location not the ``registered`` one, in words."""
    if found.dataset_id != registered.dataset_id:
        return (
            f"it holds dataset {found.dataset_id}, and dataset {registered.dataset_id} is "
            "registered there: it was replaced by another dataset"
        )
    if found.generation < registered.generation:
        return (
            f"it holds generation {found.generation} of the dataset, and generation "
            f"{registered.generation} is registered: it was rolled back"
        )
    if found.generation > registered.generation:
        return (
            f"it holds generation {found.generation} of the dataset, and generation "
            f"{registered.generation} is registered: its commit was never registered (a "
            "writer failed before publishing, or the registry was rolled back)"
        )
    return (
        f"it holds generation {found.generation} of dataset {found.dataset_id}, but not the "
        "commit registered as that generation"
    )


def check_registered(
    kms: KeyManagementService, found: DatasetRecord, *, versioned: bool = True
) -> None:
    """Refuse the commit ``found`` at ``found.location`` unless the registry names exactly it.

    ``versioned=False`` is a version 1 manifest (no dataset id, written before the registry):
    it is accepted only where nothing is registered. Raises :class:`IntegrityError` naming the
    location and what differs; the message says how to register a dataset that was copied or
    moved on purpose."""
    registered = kms.dataset_at(found.location)
    where = found.location
    if not versioned:
        if registered is None:
            return
        raise IntegrityError(
            f"{where}: the dataset there has no id (a version 1 manifest), and dataset "
            f"{registered.dataset_id} is registered at this location: it was replaced"
        )
    if registered is None:
        raise IntegrityError(
            f"{where}: no dataset is registered at this location, so a dataset copied or "
            "moved here cannot be told from one written here; if it was put there on purpose, "
            "register it: cipherspark dataset register " + _quoted(where)
        )
    if registered != found:
        raise IntegrityError(
            f"{where} is not the dataset registered there: {_differs(found, registered)}"
        )


def _quoted(path: str) -> str:
    return shlex.quote(path)


def check_folder(kms: KeyManagementService, path: str | os.PathLike[str], dataset: Dataset) -> None:
    """:func:`check_registered` for the dataset folder ``dataset`` (checked by
    :func:`~cipherspark.crypto.manifest.open_dataset`) read at ``path``."""
    found = folder_record(path, dataset)
    if found is None:
        check_registered(kms, _v1_record(path, dataset), versioned=False)
        return
    check_registered(kms, found)


def folder_record(path: str | os.PathLike[str], dataset: Dataset) -> DatasetRecord | None:
    """The record of the dataset folder ``dataset`` (checked by
    :func:`~cipherspark.crypto.manifest.open_dataset`) at ``path``; ``None`` for a version 1
    manifest, which names no dataset."""
    identity = dataset.identity
    if identity is None:
        return None
    return DatasetRecord.at(
        path,
        identity.dataset_id,
        identity.key_id,
        identity.generation,
        dataset.manifest_sha256,
        dataset.header.wrapped_key,
    )


def _v1_record(path: str | os.PathLike[str], dataset: Dataset) -> DatasetRecord:
    # A version 1 manifest names no dataset: a stand-in record, only its location is used.
    return DatasetRecord.at(
        path, "0" * 32, dataset.key_id, 1, dataset.manifest_sha256, dataset.header.wrapped_key
    )


def check_file(kms: KeyManagementService, path: str | os.PathLike[str], part: ExpectedPart) -> None:
    """:func:`check_registered` for the single encrypted file ``part`` read at ``path``.

    A refusal is first checked against the file's key: a file encrypted with another keystore
    or KMS is reported as that (its key does not unwrap here, the first thing to fix), not as
    an unregistered location. A folder needs no such step: its manifest is decrypted before
    the registry is asked."""
    try:
        check_registered(kms, single_file_record(path, part.header, part.header_sha256))
    except IntegrityError as refused:
        try:
            kms.unwrap_data_key(part.header.key_id, part.header.wrapped_key)
        except IntegrityError as wrong_key:
            raise wrong_key from refused
        except CipherSparkError:
            pass  # e.g. not allowed to unwrap here: the registry's refusal is the answer
        raise
