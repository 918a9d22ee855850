"""RemoteKms's dataset registry against a real TLS server (``kms serve`` in a child process).

The four calls of :class:`~cipherspark.kms.base.KeyManagementService` round-trip; the server's
refusals reach the caller as the contract's errors (a lost compare-and-swap is
DatasetConflictError, a forged proof IntegrityError, another app's record is not there); a
malformed answer is refused by the client.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

import pytest

from cipherspark.errors import DatasetConflictError, IntegrityError, KmsError, UsageError
from cipherspark.kms import Credentials
from cipherspark.kms._wire import dataset_record
from cipherspark.kms.registry import DatasetRecord, registration_proof
from cipherspark.kms.remote import RemoteKms
from tests.kms.server.conftest import KmsSetup, serving, unique

pytestmark = pytest.mark.servers


@pytest.fixture(scope="module")
def kms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KmsSetup]:
    with serving(tmp_path_factory.mktemp("kms-registry-client")) as fresh:
        with fresh.kms() as owner:
            owner.create_key("k")
        with fresh.kms(fresh.app_b) as other:
            other.create_key("k")
        yield fresh


def client(kms: KmsSetup, app: dict[str, str]) -> RemoteKms:
    return RemoteKms(
        kms.server.url, Credentials(app["app_id"], app["api_key"]), ca_file=kms.server.ca
    )


def _dataset(
    owner: RemoteKms, location: str, generation: int = 1
) -> tuple[DatasetRecord, bytes, bytes]:
    made = owner.generate_data_key("k")
    record = DatasetRecord.at(
        location, os.urandom(16).hex(), "k", generation, "11" * 32, made.wrapped
    )
    return record, made.wrapped, made.plaintext


def test_register_look_up_find_and_move(kms: KmsSetup) -> None:
    location = f"/lake/{unique('people')}"
    with kms.kms() as owner:
        assert owner.dataset_at(location) is None
        record, wrapped, key = _dataset(owner, location)
        owner.register_dataset(
            record,
            previous=None,
            wrapped_key=wrapped,
            proof=registration_proof(key, record, None),
        )
        assert owner.dataset_at(location) == record
        assert owner.find_dataset(record.dataset_id) == [record]
        newer = dataclasses.replace(record, generation=2, manifest_sha256="22" * 32)
        owner.register_dataset(
            newer,
            previous=record,
            wrapped_key=wrapped,
            proof=registration_proof(key, newer, record),
        )
        target = dataclasses.replace(newer, location=location + "-moved")
        owner.move_dataset(
            newer, target, wrapped_key=wrapped, proof=registration_proof(key, target, newer)
        )
        assert owner.dataset_at(location) is None
        assert owner.find_dataset(record.dataset_id) == [target]


def test_refusals_reach_the_caller_as_the_contracts_errors(kms: KmsSetup) -> None:
    location = f"/lake/{unique('conflict')}"
    with kms.kms() as owner:
        record, wrapped, key = _dataset(owner, location)
        owner.register_dataset(
            record, previous=None, wrapped_key=wrapped, proof=registration_proof(key, record, None)
        )
        # Replayed (nothing was there when it was made): a lost compare-and-swap.
        with pytest.raises(DatasetConflictError, match="not the one this writer read"):
            owner.register_dataset(
                record,
                previous=None,
                wrapped_key=wrapped,
                proof=registration_proof(key, record, None),
            )
        newer = dataclasses.replace(record, generation=2)
        with pytest.raises(IntegrityError, match="registration proof"):
            owner.register_dataset(
                newer, previous=record, wrapped_key=wrapped, proof=os.urandom(32)
            )
        assert owner.dataset_at(location) == record
        with pytest.raises(UsageError):
            owner.dataset_at("relative/path")


def test_a_workload_credential_registers_and_another_app_sees_nothing(kms: KmsSetup) -> None:
    location = f"/lake/{unique('workload')}"
    with client(kms, kms.workload()) as worker:
        record, wrapped, key = _dataset(worker, location)
        worker.register_dataset(
            record, previous=None, wrapped_key=wrapped, proof=registration_proof(key, record, None)
        )
        assert worker.dataset_at(location) == record
    with kms.kms(kms.app_b) as other:
        assert other.dataset_at(location) is None
        assert other.find_dataset(record.dataset_id) == []
        # Its own key 'k' does not open app A's wrapped key.
        with pytest.raises(IntegrityError):
            other.register_dataset(
                record,
                previous=None,
                wrapped_key=wrapped,
                proof=registration_proof(key, record, None),
            )


@pytest.mark.parametrize(
    "change",
    [{"generation": "1"}, {"generation": True}, {"location": "rel"}, {"dataset_id": None}, {}],
)
def test_a_malformed_record_answer_is_refused(change: dict[str, object]) -> None:
    doc: dict[str, object] = {
        "location": "/lake/a",
        "dataset_id": "ab" * 16,
        "key_id": "k",
        "generation": 1,
        "manifest_sha256": "11" * 32,
        "wrapped_key_sha256": "22" * 32,
    }
    if not change:
        assert dataset_record(doc).location == "/lake/a"
        del doc["key_id"]
    doc.update(change)
    with pytest.raises(KmsError, match="malformed dataset record"):
        dataset_record(doc)
