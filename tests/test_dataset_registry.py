"""Writers register what they publish (cipherspark._dataset_registry), before publishing it.

The readers' side (refusing what the registry does not name) is in the readers' tests; here: the
record every writer leaves, the identity an overwrite continues, and two writers racing for one
location, where only the first to commit may publish.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from cipherspark.crypto import ExpectedPart
from cipherspark.crypto.manifest import MANIFEST_NAME, read_manifest
from cipherspark.errors import DatasetConflictError
from cipherspark.files import encrypt_path
from cipherspark.kms import LocalKms
from cipherspark.kms.registry import DatasetRecord, dataset_location
from tests.conftest import TEST_KEY


def _folder(tmp_path: Path, rows: int = 3) -> Path:
    src = tmp_path / "plain"
    src.mkdir(exist_ok=True)
    for i in range(2):
        lines = [f"r{i}-{j},{j}" for j in range(rows)]
        (src / f"p{i}.csv").write_text("name,n\n" + "\n".join(lines) + "\n")
    return src


def _unwrap(kms: LocalKms):  # type: ignore[no-untyped-def]
    return lambda h: kms.unwrap_data_key(h.key_id, h.wrapped_key)


def _folder_record(kms: LocalKms, out: Path) -> DatasetRecord:
    manifest = read_manifest(out, _unwrap(kms))
    assert manifest is not None and manifest.identity is not None
    part = ExpectedPart.of(next(out.glob("*.cspk")))
    return DatasetRecord.at(
        out,
        manifest.identity.dataset_id,
        manifest.identity.key_id,
        manifest.identity.generation,
        hashlib.sha256((out / MANIFEST_NAME).read_bytes()).hexdigest(),
        part.header.wrapped_key,
    )


def test_an_encrypted_folder_is_registered_as_committed(tmp_path: Path, kms: LocalKms) -> None:
    out = tmp_path / "out.cspk"
    result = encrypt_path(_folder(tmp_path), out, kms, TEST_KEY)
    record = kms.dataset_at(dataset_location(out))
    assert record == _folder_record(kms, out)
    assert result.dataset is not None and record is not None
    assert (record.dataset_id, record.generation) == (result.dataset.dataset_id, 1)


def test_an_overwrite_continues_the_registered_dataset(tmp_path: Path, kms: LocalKms) -> None:
    src, out = _folder(tmp_path), tmp_path / "out.cspk"
    first = encrypt_path(src, out, kms, TEST_KEY).dataset
    second = encrypt_path(src, out, kms, TEST_KEY, overwrite=True).dataset
    assert first is not None and second is not None
    assert (second.dataset_id, second.generation) == (first.dataset_id, 2)
    assert kms.dataset_at(dataset_location(out)) == _folder_record(kms, out)


def test_the_registry_not_the_disk_decides_the_next_generation(
    tmp_path: Path, kms: LocalKms
) -> None:
    """Storage rolled the folder back to generation 1 after generation 2 was registered: the
    next overwrite is generation 3 of the registered dataset. (Continuing the generation found
    on disk would make a second generation 2, which the registry refuses.)"""
    src, out, saved = _folder(tmp_path), tmp_path / "out.cspk", tmp_path / "saved"
    encrypt_path(src, out, kms, TEST_KEY)
    shutil.copytree(out, saved)
    encrypt_path(src, out, kms, TEST_KEY, overwrite=True)
    shutil.rmtree(out)
    saved.rename(out)  # the rollback
    third = encrypt_path(src, out, kms, TEST_KEY, overwrite=True).dataset
    assert third is not None and third.generation == 3
    assert kms.dataset_at(dataset_location(out)) == _folder_record(kms, out)


def test_a_single_file_is_registered_by_its_header_digest(tmp_path: Path, kms: LocalKms) -> None:
    src, out = tmp_path / "one.csv", tmp_path / "one.csv.cspk"
    src.write_text("a,b\n1,2\n")
    encrypt_path(src, out, kms, TEST_KEY)
    part = ExpectedPart.of(out)
    record = kms.dataset_at(dataset_location(out))
    assert record == DatasetRecord.at(
        out, part.header_sha256[:32], TEST_KEY, 1, part.header_sha256, part.header.wrapped_key
    )
    encrypt_path(src, out, kms, TEST_KEY, overwrite=True)
    again = kms.dataset_at(dataset_location(out))
    assert again is not None and again.manifest_sha256 == ExpectedPart.of(out).header_sha256
    assert again != record


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_of_two_racing_writers_only_the_first_to_commit_publishes(
    tmp_path: Path, kms: LocalKms, kind: str
) -> None:
    """Writer A reads the registry, then writer B commits to the same location while A is
    still encrypting: A's compare-and-swap is refused, and A publishes nothing (B's output
    stays, and no staging of A's is left)."""
    if kind == "folder":
        src = _folder(tmp_path)
    else:
        src = tmp_path / "one.csv"
        src.write_text("a,b\n1,2\n")
    out = tmp_path / "out.cspk"
    encrypt_path(src, out, kms, TEST_KEY)
    raced = False

    def progress(_: int) -> None:
        nonlocal raced
        if not raced:
            raced = True
            encrypt_path(src, out, kms, TEST_KEY, overwrite=True)  # writer B

    with pytest.raises(DatasetConflictError, match="another writer committed first"):
        encrypt_path(src, out, kms, TEST_KEY, overwrite=True, progress=progress)
    assert raced
    record = kms.dataset_at(dataset_location(out))
    assert record is not None
    if kind == "folder":
        assert record == _folder_record(kms, out)  # B's commit, published and registered
    else:
        assert record.manifest_sha256 == ExpectedPart.of(out).header_sha256
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["kms", "out.cspk", src.name])
