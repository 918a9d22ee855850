"""The dataset registry in the service (issue 14; the model is :mod:`cipherspark.kms.registry`).

Each app has one :class:`~cipherspark.kms.registry.DatasetRecord` per location. Writers replace
it by compare-and-swap: the record there now must be the one they read (``previous``), checked
and replaced inside one ``BEGIN IMMEDIATE`` transaction (the audited run of a mutating
operation), so of two concurrent registrations of one location exactly one commits. A record of
the same dataset may only move forward (a higher generation); the one exception is ``record ==
previous``, a no-op.

Who may write: a credential of the app that may wrap data keys under the record's key (and
under the replaced record's key), *and* that holds the dataset's data key. The request carries
the wrapped data key and :func:`~cipherspark.kms.registry.registration_proof`; the server
unwraps the key itself (no release policy applies: the key never leaves the server) and checks
the proof. A worker holding only the workload credential cannot forge a registration, and an
old request replayed fails its compare-and-swap. Lookups need an app credential (not the admin
token). Every change is audited in its transaction, naming the app, location, dataset id and
generation (never key material).
"""

from __future__ import annotations

import hashlib
import hmac

from cipherspark.errors import (
    IntegrityError,
    KeyNotFoundError,
    PermissionDeniedError,
    UsageError,
)
from cipherspark.kms.registry import (
    DatasetRecord,
    check_move,
    check_registration,
    dataset_location,
    verify_registration_proof,
)
from cipherspark.kms.server import keyring
from cipherspark.kms.server._audited import Outcome, digest
from cipherspark.kms.server._core import ServiceCore
from cipherspark.kms.server.permissions import Access, Principal, check
from cipherspark.kms.server.records import KeyRecord

__all__ = ["DatasetOperations", "location_label"]


def location_label(location: str) -> str:
    """What an audit line names for a location: itself if it is a registry location, else its
    digest (an invalid one may be anything, of any size: it is never written as sent)."""
    try:
        if dataset_location(location) == location:
            return location
    except UsageError:
        pass
    return digest(location)


def _checked_location(location: str) -> str:
    if dataset_location(location) != location:
        raise UsageError("a dataset location is an absolute, normalised path")
    return location


def _describe(record: DatasetRecord) -> dict[str, str]:
    return {
        "location": record.location,
        "dataset_id": record.dataset_id,
        "generation": str(record.generation),
    }


class DatasetOperations(ServiceCore):
    """Look up, register (compare-and-swap) and move the records of the caller's app."""

    @staticmethod
    def _app_credential(who: Principal) -> None:
        if who.credential_id is None:
            raise PermissionDeniedError(
                "the dataset registry is used with an app credential, not the admin token"
            )

    def dataset_at(
        self, who: Principal, location: str, request_id: str = "-"
    ) -> DatasetRecord | None:
        """The caller's app's record at ``location``, or ``None``."""

        def run(out: Outcome) -> DatasetRecord | None:
            out.detail["location"] = location_label(location)
            self._app_credential(who)
            return self._storage.get_dataset(who.app_id, _checked_location(location))

        return self._run("dataset.lookup", who, None, request_id, run)

    def find_dataset(
        self, who: Principal, dataset_id: str, request_id: str = "-"
    ) -> list[DatasetRecord]:
        """Every record of dataset ``dataset_id`` in the caller's app, by location."""

        def run(out: Outcome) -> list[DatasetRecord]:
            self._app_credential(who)
            if len(dataset_id) != 32 or any(c not in "0123456789abcdef" for c in dataset_id):
                raise UsageError("a dataset id is 32 lowercase hex digits")
            out.detail["dataset_id"] = dataset_id
            return self._storage.find_datasets(who.app_id, dataset_id)

        return self._run("dataset.find", who, None, request_id, run)

    def register_dataset(
        self,
        who: Principal,
        record: DatasetRecord,
        *,
        previous: DatasetRecord | None,
        wrapped_key: bytes,
        proof: bytes,
        request_id: str,
    ) -> bool:
        """Make ``record`` current at its location if ``previous`` is the record there now
        (``None``: nothing is); whether anything changed (``False``: ``record == previous``).

        :class:`DatasetConflictError` if the record there is not ``previous`` or the same
        dataset would not move forward; :class:`IntegrityError` for a wrapped key that is not
        the record's or a bad proof; :class:`PermissionDeniedError` /
        :class:`KeyNotFoundError` for a credential that may not wrap under the keys concerned.
        """

        def run(out: Outcome) -> bool:
            out.detail.update(_describe(record))
            if previous is not None:
                out.detail["previous_dataset_id"] = previous.dataset_id
                out.detail["previous_generation"] = str(previous.generation)
                if previous.location != record.location:
                    raise UsageError("the record and the one it replaces have one location")
            self._app_credential(who)
            key = self._key(who, record.key_id, Access.WRAP, out)
            if previous is not None and previous.key_id != record.key_id:
                self._may_replace(who, previous.key_id, out)
            self._check_proof(key, record, previous, wrapped_key, proof, out)
            current = self._storage.get_dataset(who.app_id, record.location)
            if not check_registration(current, record, previous):
                out.detail["unchanged"] = "true"
                return False
            self._storage.put_dataset(who.app_id, record, self._now())
            return True

        return self._run("dataset.register", who, record.key_id, request_id, run)

    def move_dataset(
        self,
        who: Principal,
        source: DatasetRecord,
        target: DatasetRecord,
        *,
        wrapped_key: bytes,
        proof: bytes,
        request_id: str,
    ) -> None:
        """Move the record ``source`` to ``target.location`` in one transaction: ``target`` is
        ``source`` with another location, nothing is registered at the target, and ``proof``
        is the registration proof of ``target`` over ``source``."""

        def run(out: Outcome) -> None:
            out.detail.update(_describe(source))
            out.detail["target"] = target.location
            check_move(source, target, source, None)  # its shape, before any key is used
            self._app_credential(who)
            key = self._key(who, source.key_id, Access.WRAP, out)
            self._check_proof(key, target, source, wrapped_key, proof, out)
            check_move(
                source,
                target,
                self._storage.get_dataset(who.app_id, source.location),
                self._storage.get_dataset(who.app_id, target.location),
            )
            self._storage.delete_dataset(who.app_id, source.location)
            self._storage.put_dataset(who.app_id, target, self._now())

        self._run("dataset.move", who, source.key_id, request_id, run)

    # -- checks ---------------------------------------------------------------------------------

    def _may_replace(self, who: Principal, key_id: str, out: Outcome) -> None:
        """The replaced record's key: the caller must be allowed to wrap under it too. A key
        deleted since leaves a record only the owner credential may replace (otherwise the
        location would stay stuck)."""
        try:
            self._key(who, key_id, Access.WRAP, out, usable=False)
        except KeyNotFoundError:
            check(who.role, Access.MANAGE, has_policy=False, name=key_id)

    def _check_proof(
        self,
        key: KeyRecord,
        record: DatasetRecord,
        previous: DatasetRecord | None,
        wrapped_key: bytes,
        proof: bytes,
        out: Outcome,
    ) -> None:
        """The wrapped key is the record's, it unwraps under the record's key (here, inside
        the server), and ``proof`` is made with the data key inside."""
        found = hashlib.sha256(wrapped_key).hexdigest()
        if not hmac.compare_digest(found, record.wrapped_key_sha256):
            raise IntegrityError(
                "the wrapped data key sent is not the one the dataset record names "
                "(its SHA-256 differs)"
            )
        out.version = version = keyring.wrapped_version(key.name, wrapped_key)
        primary = self._decryptable(key, version)
        data_key = keyring.open_wrapped(primary, key.name, version, wrapped_key)
        if not verify_registration_proof(data_key, record, previous, proof):
            raise IntegrityError(
                "the registration proof does not match the dataset record and its data key"
            )
