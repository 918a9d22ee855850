"""Encrypted datasets and the KMS's dataset registry: verify, register and move them.

Readers accept an encrypted CSV dataset (a folder with a manifest, or a single container) only
at the location the registry names it at, as the commit it names (docs/security.md,
"Whole-dataset replay"). Everything cipherspark writes is registered as it is published; these
are the operations for what happens to datasets afterwards, on purpose:

- :func:`verify_dataset`: check a dataset as every reader will, and say what is registered;
- :func:`register_dataset`: make the dataset now at a location the registered one there (one
  copied or restored by other tools, or written before the registry existed);
- :func:`move_dataset`: rename a dataset and move its record with it, or (``registry_only``)
  only the record, for a dataset moved by other tools;
- :func:`copy_dataset`: copy a registered dataset to a new location and register the copy
  there (the same dataset and generation at two locations: each is read where it is).

Each needs the dataset's data key (the registration proof is made with it), so only a holder
of the key can change what readers accept.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from cipherspark._atomic import atomic_output_dir, atomic_output_staged, publish
from cipherspark._dataset_registry import check_registered, folder_record, single_file_record
from cipherspark.crypto import ContainerHeader, ExpectedPart
from cipherspark.crypto.manifest import open_dataset
from cipherspark.errors import InputError, IntegrityError, OutputExistsError, UsageError
from cipherspark.kms import KeyManagementService
from cipherspark.kms.registry import DatasetRecord, dataset_location, registration_proof

__all__ = [
    "RegisterResult",
    "copy_dataset",
    "move_dataset",
    "register_dataset",
    "verify_dataset",
]


@dataclass(frozen=True)
class RegisterResult:
    """The record now registered at a location, and the one it replaced (``None``: nothing
    was registered there). ``changed`` is false when the record was already this one."""

    record: DatasetRecord
    replaced: DatasetRecord | None
    changed: bool


def _found(path: Path, kms: KeyManagementService) -> tuple[DatasetRecord, ContainerHeader]:
    """The record of what is at ``path`` now (checked as readers check it, the registry
    aside) and its header, whose wrapped key the proof is made with."""
    if not path.exists():
        raise InputError(f"{path} does not exist")

    def data_key_for(header: ContainerHeader) -> bytes:
        return kms.unwrap_data_key(header.key_id, header.wrapped_key)

    if path.is_dir():
        dataset = open_dataset(path, data_key_for)
        record = folder_record(path, dataset)
        if record is None:
            raise UsageError(
                f"{path} has a version 1 manifest (no dataset id), written by an earlier "
                "cipherspark: rewrite it ('cipherspark encrypt' or a Spark job) to register it"
            )
        return record, dataset.header
    part = ExpectedPart.of(path)
    return single_file_record(path, part.header, part.header_sha256), part.header


def verify_dataset(path: str | os.PathLike[str], kms: KeyManagementService) -> DatasetRecord:
    """Check the dataset at ``path`` as every reader does (manifest, parts, and the registry's
    record at its location); the record, which it matches. Raises as the readers do."""
    found, _ = _found(Path(path), kms)
    check_registered(kms, found)
    return found


def register_dataset(path: str | os.PathLike[str], kms: KeyManagementService) -> RegisterResult:
    """Register the dataset at ``path`` (checked first, as readers check it) as the current
    commit at its location, replacing whatever record is there; refused
    (:class:`~cipherspark.errors.DatasetConflictError`) when that would move the registered
    dataset back to an older generation, or when another writer changed the record meanwhile.
    """
    found, header = _found(Path(path), kms)
    previous = kms.dataset_at(found.location)
    if previous == found:
        return RegisterResult(found, previous, False)
    data_key = kms.unwrap_data_key(header.key_id, header.wrapped_key)
    proof = registration_proof(data_key, found, previous)
    kms.register_dataset(found, previous=previous, wrapped_key=header.wrapped_key, proof=proof)
    return RegisterResult(found, previous, True)


def move_dataset(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    kms: KeyManagementService,
    *,
    registry_only: bool = False,
) -> DatasetRecord:
    """Rename the registered dataset at ``src`` to ``dst`` (which must not exist), moving its
    registry record with it in one step; the record now at ``dst``.

    ``registry_only``: the dataset was already moved to ``dst`` by other means; only the record
    moves (the dataset at ``dst`` must be the one registered at ``src``). Without it, the
    record moves first and the rename follows; if the rename fails, the record moves back.
    """
    src_path, dst_path = Path(src), Path(dst)
    if dataset_location(src_path) == dataset_location(dst_path):
        raise UsageError("the source and the destination are one location")
    source = kms.dataset_at(dataset_location(src_path))
    if source is None:
        raise InputError(f"no dataset is registered at {dataset_location(src_path)}")
    on_disk = dst_path if registry_only else src_path
    if not registry_only and (dst_path.exists() or dst_path.is_symlink()):
        raise OutputExistsError(f"{dst_path} exists already")
    found, header = _found(on_disk, kms)
    target = DatasetRecord(
        dataset_location(dst_path),
        source.dataset_id,
        source.key_id,
        source.generation,
        source.manifest_sha256,
        source.wrapped_key_sha256,
    )
    # What is on disk must be the registered dataset (checked at the location it is read at).
    check_registered(
        kms,
        DatasetRecord(
            source.location,
            found.dataset_id,
            found.key_id,
            found.generation,
            found.manifest_sha256,
            found.wrapped_key_sha256,
        ),
    )
    data_key = kms.unwrap_data_key(header.key_id, header.wrapped_key)
    kms.move_dataset(
        source,
        target,
        wrapped_key=header.wrapped_key,
        proof=registration_proof(data_key, target, source),
    )
    if registry_only:
        return target
    try:
        publish(src_path, dst_path, False)  # a rename that never replaces what is at dst
    except (OSError, OutputExistsError) as exc:
        kms.move_dataset(
            target,
            source,
            wrapped_key=header.wrapped_key,
            proof=registration_proof(data_key, source, target),
        )
        if isinstance(exc, OutputExistsError):
            raise
        raise InputError(f"cannot move {src_path} to {dst_path}: {exc.strerror}") from exc
    return target


def _same_commit(a: DatasetRecord, b: DatasetRecord) -> bool:
    """``a`` and ``b`` name one commit of one dataset (wherever each is)."""
    return (a.dataset_id, a.key_id, a.generation, a.manifest_sha256, a.wrapped_key_sha256) == (
        b.dataset_id,
        b.key_id,
        b.generation,
        b.manifest_sha256,
        b.wrapped_key_sha256,
    )


def copy_dataset(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], kms: KeyManagementService
) -> DatasetRecord:
    """Copy the registered dataset at ``src`` to ``dst`` (which must not exist) and register
    the copy there; the record now at ``dst``.

    The source is checked as readers check it; the copy is made in a staging folder next to
    ``dst``, checked again *as copied* (storage that changed a file while it was read cannot
    slip it in), registered, and only then renamed into place. A failure leaves nothing at
    ``dst``.
    """
    src_path, dst_path = Path(src), Path(dst)
    if dataset_location(src_path) == dataset_location(dst_path):
        raise UsageError("the source and the destination are one location")
    found, header = _found(src_path, kms)
    check_registered(kms, found)
    data_key = kms.unwrap_data_key(header.key_id, header.wrapped_key)

    def register_copy(staging: Path) -> DatasetRecord:
        copied, _ = _found(staging, kms)
        if not _same_commit(copied, found):
            raise IntegrityError(f"{src_path} changed while it was copied; nothing was copied")
        target = DatasetRecord(
            dataset_location(dst_path),
            found.dataset_id,
            found.key_id,
            found.generation,
            found.manifest_sha256,
            found.wrapped_key_sha256,
        )
        previous = kms.dataset_at(target.location)
        kms.register_dataset(
            target,
            previous=previous,
            wrapped_key=header.wrapped_key,
            proof=registration_proof(data_key, target, previous),
        )
        return target

    mode = src_path.stat().st_mode & 0o777
    try:
        if src_path.is_dir():
            with atomic_output_dir(dst_path, overwrite=False, mode=mode) as staging:
                shutil.copytree(src_path, staging, dirs_exist_ok=True, symlinks=True)
                return register_copy(staging)
        with atomic_output_staged(dst_path, overwrite=False, mode=mode, replaces="encrypted") as (
            out,
            staging,
        ):
            with src_path.open("rb") as f:
                shutil.copyfileobj(f, out)
            out.flush()
            return register_copy(staging)
    except OSError as exc:
        raise InputError(f"cannot copy {src_path} to {dst_path}: {exc.strerror}") from exc
