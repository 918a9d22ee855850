"""The ``file://`` keystore's dataset registry (:mod:`cipherspark.kms._local_registry`).

The same contract as the server's (tests/kms/server/test_registry.py): compare-and-swap, no
generation going back, a proof made with the data key, moves only onto empty locations. And
the attacks on its files: an edited record, or one copied to another location, does not open;
a deleted one reads as nothing registered (readers then refuse the dataset).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
from pathlib import Path

import pytest

from cipherspark.errors import DatasetConflictError, IntegrityError
from cipherspark.kms import LocalKms
from cipherspark.kms.registry import DatasetRecord, registration_proof
from tests.conftest import TEST_KEY


@dataclasses.dataclass(frozen=True)
class Made:
    record: DatasetRecord
    wrapped: bytes
    key: bytes

    def at(self, generation: int, digest: str = "22" * 32) -> Made:
        return dataclasses.replace(
            self,
            record=dataclasses.replace(self.record, generation=generation, manifest_sha256=digest),
        )


def make(kms: LocalKms, location: str = "/lake/people.cspk") -> Made:
    data_key = kms.generate_data_key(TEST_KEY)
    record = DatasetRecord.at(
        location, os.urandom(16).hex(), TEST_KEY, 1, "11" * 32, data_key.wrapped
    )
    return Made(record, data_key.wrapped, data_key.plaintext)


def register(kms: LocalKms, made: Made, previous: DatasetRecord | None) -> None:
    kms.register_dataset(
        made.record,
        previous=previous,
        wrapped_key=made.wrapped,
        proof=registration_proof(made.key, made.record, previous),
    )


def records_dir(kms: LocalKms) -> Path:
    return Path(kms.url.removeprefix("file://")) / "datasets"


def test_register_replace_look_up_and_find(kms: LocalKms) -> None:
    first = make(kms)
    assert kms.dataset_at(first.record.location) is None
    register(kms, first, None)
    assert kms.dataset_at(first.record.location) == first.record
    second = first.at(2)
    register(kms, second, first.record)
    assert kms.dataset_at(first.record.location) == second.record
    assert kms.find_dataset(first.record.dataset_id) == [second.record]
    assert kms.find_dataset("00" * 16) == []
    # Registering the current record again changes nothing.
    register(kms, second, second.record)
    assert kms.dataset_at(first.record.location) == second.record
    for path in records_dir(kms).iterdir():
        assert path.stat().st_mode & 0o077 == 0


def test_a_stale_previous_and_a_rollback_are_refused(kms: LocalKms) -> None:
    first = make(kms)
    register(kms, first, None)
    register(kms, first.at(2), first.record)
    with pytest.raises(DatasetConflictError, match="another writer committed first"):
        register(kms, first.at(3), first.record)  # a writer that read generation 1
    with pytest.raises(DatasetConflictError, match="must move it forward"):
        register(kms, first.at(1, "33" * 32), first.at(2).record)
    assert kms.dataset_at(first.record.location) == first.at(2).record


def test_a_bad_proof_or_a_wrapped_key_not_the_records_is_refused(kms: LocalKms) -> None:
    first = make(kms)
    with pytest.raises(IntegrityError, match="registration proof"):
        kms.register_dataset(
            first.record,
            previous=None,
            wrapped_key=first.wrapped,
            proof=registration_proof(os.urandom(32), first.record, None),
        )
    other = make(kms)
    with pytest.raises(IntegrityError, match="SHA-256 differs"):
        kms.register_dataset(
            first.record,
            previous=None,
            wrapped_key=other.wrapped,
            proof=registration_proof(other.key, first.record, None),
        )
    assert kms.dataset_at(first.record.location) is None


def test_a_move_goes_only_onto_an_empty_location(kms: LocalKms) -> None:
    first = make(kms)
    register(kms, first, None)
    taken = make(kms, "/lake/taken.cspk")
    register(kms, taken, None)
    target = dataclasses.replace(first.record, location="/lake/moved.cspk")
    proof = registration_proof(first.key, target, first.record)
    kms.move_dataset(first.record, target, wrapped_key=first.wrapped, proof=proof)
    assert kms.dataset_at(first.record.location) is None
    assert kms.dataset_at(target.location) == target
    onto = dataclasses.replace(target, location=taken.record.location)
    with pytest.raises(DatasetConflictError, match="moves only where nothing is registered"):
        kms.move_dataset(
            target,
            onto,
            wrapped_key=first.wrapped,
            proof=registration_proof(first.key, onto, target),
        )
    assert kms.dataset_at(taken.record.location) == taken.record


@pytest.mark.parametrize("attack", ["edit", "copy-to-another-location"])
def test_a_changed_record_file_does_not_open(kms: LocalKms, attack: str) -> None:
    first, second = make(kms), make(kms, "/lake/second.cspk")
    register(kms, first, None)
    register(kms, second, None)
    path = kms_file(kms, first.record.location)
    if attack == "edit":
        doc = json.loads(path.read_text())
        sealed = bytearray(doc["sealed"].encode())
        sealed[20] = ord("A") if sealed[20] != ord("A") else ord("B")
        doc["sealed"] = sealed.decode()
        path.write_text(json.dumps(doc))
    else:
        # The second location's sealed record, under the first location's name and label.
        doc = json.loads(kms_file(kms, second.record.location).read_text())
        doc["location"] = first.record.location
        path.write_text(json.dumps(doc))
    with pytest.raises(IntegrityError, match="does not open"):
        kms.dataset_at(first.record.location)


def test_a_deleted_record_file_reads_as_nothing_registered(kms: LocalKms) -> None:
    first = make(kms)
    register(kms, first, None)
    kms_file(kms, first.record.location).unlink()
    assert kms.dataset_at(first.record.location) is None


def kms_file(kms: LocalKms, location: str) -> Path:
    return records_dir(kms) / f"{hashlib.sha256(location.encode()).hexdigest()}.json"


def _register_from_another_process(
    url: str, made: Made, previous: DatasetRecord | None, out: multiprocessing.Queue
) -> None:  # type: ignore[type-arg]
    from cipherspark.kms import open_kms
    from tests.conftest import TEST_CREDENTIALS

    kms = open_kms(url, TEST_CREDENTIALS)
    assert isinstance(kms, LocalKms)
    try:
        register(kms, made, previous)
        out.put("won")
    except DatasetConflictError:
        out.put("lost")


def test_two_processes_overwriting_one_location_one_wins(kms: LocalKms) -> None:
    first = make(kms)
    register(kms, first, None)
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    writers = [
        context.Process(
            target=_register_from_another_process,
            args=(kms.url, first.at(2, digest * 32), first.record, out),
        )
        for digest in ("aa", "bb", "cc", "dd")
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
    results = sorted(out.get(timeout=5) for _ in writers)
    assert results == ["lost", "lost", "lost", "won"]
    assert kms.dataset_at(first.record.location).generation == 2  # type: ignore[union-attr]
