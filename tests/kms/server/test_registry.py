"""The KMS server's dataset registry (issue 14), played by the writers and attackers it stops.

In-process (the service over a real data directory, and its HTTP application through
Starlette's test client): compare-and-swap, replay, rollback of a generation, two writers at
once, a forged or borrowed proof, a credential that may not, another app, moves; and a storage
attacker editing, deleting or restoring ``datasets`` rows while the server is stopped (refused
at open) or running (the request fails closed). Every change leaves its audit line.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from cipherspark.errors import (
    DatasetConflictError,
    IntegrityError,
    KeyNotFoundError,
    KmsError,
    PermissionDeniedError,
    StoreChangedError,
    UsageError,
)
from cipherspark.kms.registry import DatasetRecord, registration_proof
from cipherspark.kms.server import init_data_dir, open_service
from cipherspark.kms.server.app import create_app
from cipherspark.kms.server.datadir import OpenedService
from cipherspark.kms.server.permissions import PERMISSIONS, Access, Principal, Role, Rule
from cipherspark.kms.server.service import KeyService

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

LOCATION = "/lake/people"
DATASET = "ab" * 16
OTHER_DATASET = "cd" * 16


@dataclass(frozen=True)
class Made:
    """A dataset's record and what its writer holds: the wrapped and the plain data key."""

    record: DatasetRecord
    wrapped: bytes
    data_key: bytes = field(repr=False)

    def proof(self, previous: DatasetRecord | None) -> bytes:
        """The registration proof of this record over ``previous``."""
        return registration_proof(self.data_key, self.record, previous)

    def at(self, generation: int, manifest: str = "11" * 32) -> Made:
        """The same dataset (id, key, data key), another commit."""
        record = dataclasses.replace(self.record, generation=generation, manifest_sha256=manifest)
        return Made(record, self.wrapped, self.data_key)


@dataclass
class World:
    """One data directory, opened: app A (owner and workload), app B (owner)."""

    data: Path
    opened: OpenedService
    owner: Principal
    workload: Principal
    other: Principal
    owner_headers: dict[str, str] = field(repr=False)
    stopped: bool = False

    def stop(self) -> None:
        """Close the data directory (the fixture then leaves it alone)."""
        self.opened.close()
        self.stopped = True

    @property
    def service(self) -> KeyService:
        return self.opened.service

    def make(
        self,
        who: Principal | None = None,
        *,
        key: str = "k",
        location: str = LOCATION,
        dataset_id: str = DATASET,
        generation: int = 1,
        manifest: str = "11" * 32,
    ) -> Made:
        """A fresh data key under ``key`` and the record of a dataset written with it."""
        _, data_key, wrapped = self.service.generate_data_key(who or self.owner, key, "-")
        assert data_key is not None
        record = DatasetRecord.at(location, dataset_id, key, generation, manifest, wrapped)
        return Made(record, wrapped, data_key)

    def register(
        self, made: Made, previous: DatasetRecord | None, who: Principal | None = None
    ) -> bool:
        """Register ``made`` over ``previous`` with an honest proof."""
        return self.service.register_dataset(
            who or self.owner,
            made.record,
            previous=previous,
            wrapped_key=made.wrapped,
            proof=made.proof(previous),
            request_id="-",
        )

    def at(self, location: str = LOCATION, who: Principal | None = None) -> DatasetRecord | None:
        return self.service.dataset_at(who or self.owner, location, "-")


def _world(data: Path) -> World:
    opened = open_service(data)
    service = opened.service
    a = service.create_app("a", "-")
    b = service.create_app("b", "-")
    owner = service.authenticate(a.app_id, a.api_key)
    other = service.authenticate(b.app_id, b.api_key)
    minted = service.accounts.create_credential(owner, a.app_id, Role.WORKLOAD, "w", "-")
    workload = service.authenticate(minted.app_id, minted.api_key)
    for name in ("k", "k2"):
        service.create_key(owner, name, "-")
    service.create_key(other, "k", "-")
    headers = {"X-App-Id": a.app_id, "X-Api-Key": a.api_key}
    return World(data, opened, owner, workload, other, headers)


@pytest.fixture()
def world(tmp_path: Path) -> Iterator[World]:
    made = _world(init_data_dir(tmp_path / "data").data_dir)
    try:
        yield made
    finally:
        if not made.stopped:
            made.opened.close()


def _audit(data: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (data / "audit.log").read_text().splitlines()]


# -- compare-and-swap -----------------------------------------------------------------------------


def test_register_a_new_record_then_replace_it_with_its_previous(world: World) -> None:
    assert world.at() is None
    first = world.make()
    assert world.register(first, None)
    assert world.at() == first.record
    second = first.at(2, "22" * 32)
    assert world.register(second, first.record)
    assert world.at() == second.record
    assert world.service.find_dataset(world.owner, DATASET, "-") == [second.record]


def test_a_stale_previous_is_refused_and_changes_nothing(world: World) -> None:
    first = world.make()
    world.register(first, None)
    second = first.at(2, "22" * 32)
    world.register(second, first.record)
    # A writer that read generation 1 (or nothing) and lost the race.
    with pytest.raises(DatasetConflictError, match="not the one this writer read"):
        world.register(first.at(3, "33" * 32), first.record)
    with pytest.raises(DatasetConflictError):
        world.register(world.make(dataset_id=OTHER_DATASET), None)
    assert world.at() == second.record


def test_a_replayed_old_request_is_refused(world: World) -> None:
    first = world.make()
    request = {
        "record": first.record,
        "previous": None,
        "wrapped_key": first.wrapped,
        "proof": first.proof(None),
    }
    world.service.register_dataset(world.owner, request_id="-", **request)  # type: ignore[arg-type]
    second = first.at(2, "22" * 32)
    world.register(second, first.record)
    second_request = {
        "record": second.record,
        "previous": first.record,
        "wrapped_key": second.wrapped,
        "proof": second.proof(first.record),
    }
    world.register(first.at(3, "33" * 32), second.record)
    # Storage (or the network) replays both captured requests, byte for byte.
    for old in (request, second_request):
        with pytest.raises(DatasetConflictError):
            world.service.register_dataset(world.owner, request_id="-", **old)  # type: ignore[arg-type]
    assert world.at() == first.at(3, "33" * 32).record


def test_the_same_dataset_never_goes_back_a_generation(world: World) -> None:
    first = world.make()
    world.register(first, None)
    fifth = first.at(5, "55" * 32)
    world.register(fifth, first.record)
    # The holder of the data key tries to put generation 1 (or another generation 5) back.
    for older in (first, first.at(5, "66" * 32), first.at(4, "44" * 32)):
        with pytest.raises(DatasetConflictError, match="move it forward"):
            world.register(older, fifth.record)
    assert world.at() == fifth.record


def test_registering_the_current_record_again_is_a_no_op(world: World) -> None:
    first = world.make()
    world.register(first, None)
    assert world.register(first, first.record) is False
    assert world.at() == first.record
    noop = _audit(world.data)[-2]
    assert (noop["op"], noop["detail"]["unchanged"]) == ("dataset.register", "true")


def test_another_dataset_replaces_one_at_any_generation(world: World) -> None:
    first = world.make().at(7, "77" * 32)
    world.register(first, None)
    other = world.make(dataset_id=OTHER_DATASET, key="k2")
    assert world.register(other, first.record)
    assert world.at() == other.record


def test_two_writers_of_one_location_at_once_exactly_one_wins(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = world.opened.storage
    read = storage.get_dataset

    def slow_read(app_id: str, location: str) -> DatasetRecord | None:
        found = read(app_id, location)
        time.sleep(0.3)  # the window in which the other writer would slip in
        return found

    monkeypatch.setattr(storage, "get_dataset", slow_read)
    writers = [world.make(dataset_id=d) for d in (DATASET, OTHER_DATASET)]
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def write(made: Made) -> None:
        start.wait()
        try:
            world.register(made, None)
            outcomes.append("won")
        except DatasetConflictError:
            outcomes.append("lost")

    threads = [threading.Thread(target=write, args=(m,)) for m in writers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["lost", "won"]
    monkeypatch.undo()
    assert world.at() in {m.record for m in writers}


# -- proofs and permissions -----------------------------------------------------------------------


def test_a_bad_proof_is_refused(world: World) -> None:
    made = world.make()
    # The wrapped key is public (it is in the dataset's headers); its data key is not.
    for proof in (os.urandom(32), b"", registration_proof(os.urandom(32), made.record, None)):
        with pytest.raises(IntegrityError, match="registration proof"):
            world.service.register_dataset(
                world.owner,
                made.record,
                previous=None,
                wrapped_key=made.wrapped,
                proof=proof,
                request_id="-",
            )
    assert world.at() is None


def test_a_proof_made_for_another_record_is_refused(world: World) -> None:
    made = world.make()
    world.register(made, None)
    target = made.at(2, "22" * 32)
    borrowed = [
        registration_proof(made.data_key, made.at(2, "99" * 32).record, made.record),
        registration_proof(made.data_key, target.record, None),  # made over another previous
        registration_proof(made.data_key, made.record, None),
    ]
    for proof in borrowed:
        with pytest.raises(IntegrityError, match="registration proof"):
            world.service.register_dataset(
                world.owner,
                target.record,
                previous=made.record,
                wrapped_key=made.wrapped,
                proof=proof,
                request_id="-",
            )
    assert world.at() == made.record


def test_a_wrapped_key_that_is_not_the_records_is_refused(world: World) -> None:
    mine = world.make()
    theirs = world.make()
    # A data key the attacker minted: the record names the dataset's wrapped key (the proof is
    # valid for the attacker's key), or the attacker's (matching no dataset it did not write).
    with pytest.raises(IntegrityError, match="SHA-256 differs"):
        world.service.register_dataset(
            world.owner,
            mine.record,
            previous=None,
            wrapped_key=theirs.wrapped,
            proof=registration_proof(theirs.data_key, mine.record, None),
            request_id="-",
        )
    # A wrapped key of another primary key, claimed to be under 'k2'.
    claimed = dataclasses.replace(mine.record, key_id="k2")
    with pytest.raises(IntegrityError, match="does not authenticate"):
        world.service.register_dataset(
            world.owner,
            claimed,
            previous=None,
            wrapped_key=mine.wrapped,
            proof=registration_proof(mine.data_key, claimed, None),
            request_id="-",
        )
    assert world.at() is None


def test_a_workload_credential_holding_the_data_key_registers(world: World) -> None:
    made = world.make(world.workload)
    assert world.register(made, None, world.workload)
    assert world.at(who=world.workload) == made.record


def test_a_credential_that_may_not_wrap_under_the_key_is_refused(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = world.make()
    monkeypatch.setitem(PERMISSIONS, (Role.WORKLOAD, Access.WRAP), Rule.DENY)
    with pytest.raises(PermissionDeniedError, match="wrap data keys under"):
        world.register(made, None, world.workload)
    operator = Principal.operator(world.owner.app_id)
    with pytest.raises(PermissionDeniedError):
        world.register(made, None, operator)
    with pytest.raises(PermissionDeniedError, match="app credential"):
        world.service.dataset_at(operator, LOCATION, "-")
    assert world.at() is None


def test_replacing_a_record_under_a_deleted_key_needs_the_owner(world: World) -> None:
    old = world.make(key="k2")
    world.register(old, None)
    opened = world.opened
    opened.storage.delete_key(world.owner.app_id, "k2")  # its grace period ended
    new = world.make(dataset_id=OTHER_DATASET)
    with pytest.raises(PermissionDeniedError):
        world.register(new, old.record, world.workload)
    assert world.register(new, old.record, world.owner)


def test_records_are_per_app(world: World) -> None:
    mine = world.make()
    world.register(mine, None)
    assert world.at(who=world.other) is None
    assert world.service.find_dataset(world.other, DATASET, "-") == []
    # App B has a key 'k' of its own: app A's wrapped key does not open under it.
    with pytest.raises(IntegrityError):
        world.service.register_dataset(
            world.other,
            mine.record,
            previous=None,
            wrapped_key=mine.wrapped,
            proof=mine.proof(None),
            request_id="-",
        )
    theirs = world.make(world.other, manifest="bb" * 32)
    assert world.register(theirs, None, world.other)
    assert world.at(who=world.other) == theirs.record
    assert world.at() == mine.record
    with pytest.raises(KeyNotFoundError):
        world.register(world.make(key="k2"), mine.record, world.other)


# -- moves ----------------------------------------------------------------------------------------


def test_a_move_takes_the_record_to_an_empty_location(world: World) -> None:
    made = world.make()
    world.register(made, None)
    target = dataclasses.replace(made.record, location="/lake/people-2025")
    proof = registration_proof(made.data_key, target, made.record)
    world.service.move_dataset(
        world.owner, made.record, target, wrapped_key=made.wrapped, proof=proof, request_id="-"
    )
    assert world.at() is None
    assert world.at("/lake/people-2025") == target
    # Replayed: the source is no longer there.
    with pytest.raises(DatasetConflictError):
        world.service.move_dataset(
            world.owner,
            made.record,
            target,
            wrapped_key=made.wrapped,
            proof=proof,
            request_id="-",
        )


def test_a_move_is_refused_onto_a_record_with_a_bad_proof_or_a_changed_record(
    world: World,
) -> None:
    made = world.make()
    world.register(made, None)
    there = world.make(location="/lake/taken", dataset_id=OTHER_DATASET)
    world.register(there, None)

    def move(target: DatasetRecord, proof: bytes) -> None:
        world.service.move_dataset(
            world.owner,
            made.record,
            target,
            wrapped_key=made.wrapped,
            proof=proof,
            request_id="-",
        )

    taken = dataclasses.replace(made.record, location="/lake/taken")
    with pytest.raises(DatasetConflictError, match="is registered at /lake/taken"):
        move(taken, registration_proof(made.data_key, taken, made.record))
    free = dataclasses.replace(made.record, location="/lake/free")
    with pytest.raises(IntegrityError):
        move(free, registration_proof(made.data_key, free, None))
    bumped = dataclasses.replace(free, generation=9)
    with pytest.raises(UsageError, match="another location"):
        move(bumped, registration_proof(made.data_key, bumped, made.record))
    assert world.at() == made.record
    assert world.at("/lake/taken") == there.record
    assert world.at("/lake/free") is None


# -- audit ----------------------------------------------------------------------------------------


def test_changes_and_refusals_are_audited_without_key_material(world: World) -> None:
    made = world.make()
    world.register(made, None)
    with pytest.raises(DatasetConflictError):
        world.register(made.at(2), None)
    target = dataclasses.replace(made.record, location="/lake/moved")
    world.service.move_dataset(
        world.owner,
        made.record,
        target,
        wrapped_key=made.wrapped,
        proof=registration_proof(made.data_key, target, made.record),
        request_id="-",
    )
    lines = _audit(world.data)
    ops = [(e["op"], e["result"]) for e in lines[-3:]]
    assert ops == [
        ("dataset.register", "ok"),
        ("dataset.register", "DatasetConflictError"),
        ("dataset.move", "ok"),
    ]
    registered = lines[-3]
    assert registered["app"] == world.owner.app_id and registered["key"] == "k"
    assert registered["detail"] == {
        "location": LOCATION,
        "dataset_id": DATASET,
        "generation": "1",
    }
    assert lines[-1]["detail"]["target"] == "/lake/moved"
    text = (world.data / "audit.log").read_text()
    for secret in (made.data_key, made.wrapped, made.proof(None)):
        assert base64.b64encode(secret).decode() not in text and secret.hex() not in text


def test_a_database_without_an_audited_registration_is_refused(world: World) -> None:
    # The registration's entry is in the transaction of the change: a database copied before
    # it, put back later, lacks a change the log records.
    before = world.data.parent / "before.db"
    world.opened.storage.backup(before)
    world.register(world.make(), None)
    world.stop()
    _replace_db(world.data, before)
    with pytest.raises(KmsError, match=r"older than its audit log.*dataset\.register"):
        open_service(world.data)


def _replace_db(data: Path, source: Path) -> None:
    for suffix in ("-wal", "-shm"):
        (data / f"kms.db{suffix}").unlink(missing_ok=True)
    shutil.copyfile(source, data / "kms.db")


# -- storage attacks ------------------------------------------------------------------------------


def _edit(data: Path, *statements: tuple[str, tuple[object, ...]]) -> None:
    db = sqlite3.connect(data / "kms.db", isolation_level=None)
    try:
        for sql, params in statements:
            db.execute(sql, params)
    finally:
        db.close()


def _stopped_with_two_generations(world: World) -> tuple[Made, tuple[object, ...]]:
    """Register generations 1 and 2; stop; generation 1's row as it was (seal included)."""
    first = world.make()
    world.register(first, None)
    db = sqlite3.connect(world.data / "kms.db")
    old = db.execute("SELECT * FROM datasets").fetchone()
    db.close()
    world.register(first.at(2, "22" * 32), first.record)
    world.stop()
    return first, old


@pytest.mark.parametrize("attack", ["edit", "delete", "restore-old", "insert-copy"])
def test_a_datasets_row_changed_while_stopped_is_refused_at_open(world: World, attack: str) -> None:
    _, old = _stopped_with_two_generations(world)
    placeholders = ", ".join("?" * len(old))
    statements: dict[str, list[tuple[str, tuple[object, ...]]]] = {
        "edit": [("UPDATE datasets SET manifest_sha256 = ?", ("99" * 32,))],
        "delete": [("DELETE FROM datasets", ())],
        "restore-old": [
            ("DELETE FROM datasets", ()),
            (f"INSERT INTO datasets VALUES ({placeholders})", old),
        ],
        # A validly sealed old row, copied to another location.
        "insert-copy": [
            (
                f"INSERT INTO datasets VALUES ({placeholders})",
                (old[0], "/lake/elsewhere", *tuple(old)[2:]),
            )
        ],
    }
    _edit(world.data, *statements[attack])
    with pytest.raises(StoreChangedError, match="changed outside the server"):
        open_service(world.data)


def test_a_datasets_row_edited_while_running_fails_the_request_closed(world: World) -> None:
    first = world.make()
    world.register(first, None)
    assert world.at() == first.record
    _edit(world.data, ("UPDATE datasets SET generation = 9", ()))
    with pytest.raises(StoreChangedError):
        world.at()
    with pytest.raises(StoreChangedError):
        world.register(first.at(10), dataclasses.replace(first.record, generation=9))
    with pytest.raises(StoreChangedError):
        world.service.find_dataset(world.owner, DATASET, "-")


def test_a_datasets_row_deleted_while_running_is_not_read_as_never_registered(
    world: World,
) -> None:
    first = world.make()
    world.register(first, None)
    _edit(world.data, ("DELETE FROM datasets", ()))
    with pytest.raises(StoreChangedError, match="missing"):
        world.at()
    # Nor may a writer (or the attacker) register over "nothing" there now.
    with pytest.raises(StoreChangedError):
        world.register(world.make(dataset_id=OTHER_DATASET), None)


# -- HTTP -----------------------------------------------------------------------------------------


def _body(record: DatasetRecord) -> dict[str, Any]:
    return dataclasses.asdict(record)


@pytest.fixture()
def http(world: World) -> Iterator[tuple[TestClient, dict[str, str]]]:
    with TestClient(create_app(world.service), base_url="https://testserver") as client:
        yield client, world.owner_headers


def _put(made: Made, previous: DatasetRecord | None, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "record": _body(made.record),
        "previous": None if previous is None else _body(previous),
        "wrapped_key": base64.b64encode(made.wrapped).decode(),
        "proof": base64.b64encode(made.proof(previous)).decode(),
    }
    body.update(changes)
    return body


def test_the_routes_answer_the_contract(
    world: World, http: tuple[TestClient, dict[str, str]]
) -> None:
    client, headers = http
    missing = client.get("/v1/datasets", params={"location": LOCATION}, headers=headers)
    assert (missing.status_code, missing.json()["code"]) == (404, "dataset_not_found")
    made = world.make()
    assert client.put("/v1/datasets", json=_put(made, None), headers=headers).status_code == 204
    found = client.get("/v1/datasets", params={"location": LOCATION}, headers=headers)
    assert (found.status_code, found.json()) == (200, _body(made.record))
    listed = client.get("/v1/datasets", params={"dataset_id": DATASET}, headers=headers)
    assert listed.json() == {"datasets": [_body(made.record)]}
    stale = client.put("/v1/datasets", json=_put(made.at(2), None), headers=headers)
    assert (stale.status_code, stale.json()["code"]) == (409, "dataset_conflict")
    forged = _put(made.at(2), made.record, proof=base64.b64encode(os.urandom(32)).decode())
    bad = client.put("/v1/datasets", json=forged, headers=headers)
    assert (bad.status_code, bad.json()["code"]) == (400, "integrity")
    target = dataclasses.replace(made.record, location="/lake/moved")
    moved = client.post(
        "/v1/datasets/move",
        json={
            "source": _body(made.record),
            "target": _body(target),
            "wrapped_key": base64.b64encode(made.wrapped).decode(),
            "proof": base64.b64encode(
                registration_proof(made.data_key, target, made.record)
            ).decode(),
        },
        headers=headers,
    )
    assert moved.status_code == 204
    assert world.at("/lake/moved") == target
    assert client.get("/v1/datasets", params={"location": LOCATION}).status_code == 401


@pytest.mark.parametrize(
    "location", ["lake/relative", "/lake/../people", "/lake/people/", "/lake//people", "/a\nb"]
)
def test_a_location_that_is_not_normalised_is_a_422(
    world: World, http: tuple[TestClient, dict[str, str]], location: str
) -> None:
    client, headers = http
    made = world.make()
    body = _put(made, None)
    body["record"] = {**body["record"], "location": location}
    answer = client.put("/v1/datasets", json=body, headers=headers)
    assert (answer.status_code, answer.json()["code"]) == (422, "invalid_field")
    query = client.get("/v1/datasets", params={"location": location}, headers=headers)
    assert query.status_code == 422
    assert location not in query.text


@pytest.mark.parametrize(
    "change",
    [
        {"dataset_id": "AB" * 16},
        {"manifest_sha256": "11" * 31},
        {"wrapped_key_sha256": "zz" * 32},
        {"generation": 0},
        {"generation": "1"},
        {"extra": 1},
    ],
)
def test_a_malformed_record_is_a_422(
    world: World, http: tuple[TestClient, dict[str, str]], change: dict[str, Any]
) -> None:
    client, headers = http
    body = _put(world.make(), None)
    body["record"] = {**body["record"], **change}
    answer = client.put("/v1/datasets", json=body, headers=headers)
    assert (answer.status_code, answer.json()["code"]) == (422, "invalid_field")
    assert world.at() is None


def test_a_lookup_names_exactly_one_of_location_or_dataset_id(
    http: tuple[TestClient, dict[str, str]],
) -> None:
    client, headers = http
    assert client.get("/v1/datasets", headers=headers).status_code == 400
    both = client.get(
        "/v1/datasets", params={"location": LOCATION, "dataset_id": DATASET}, headers=headers
    )
    assert both.status_code == 400
    bad = client.get("/v1/datasets", params={"dataset_id": "x" * 32}, headers=headers)
    assert bad.status_code == 422
