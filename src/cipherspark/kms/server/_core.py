"""What every key operation of the service shares: finding the caller's key in its app's
namespace, the permission check, key state, unsealed primary keys, and the audited run.

:class:`ServiceCore` is the base of :class:`~cipherspark.kms.server.service.KeyService` and its
Transit and attested-release parts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from cipherspark.errors import IntegrityError, KeyNotFoundError, KeyStateError
from cipherspark.kms.base import validate_key_name
from cipherspark.kms.server import keyring
from cipherspark.kms.server._audited import Outcome, Recorder, app_label, key_label
from cipherspark.kms.server.permissions import Access, Principal, Role, check
from cipherspark.kms.server.records import KeyRecord
from cipherspark.kms.server.storage import Storage

__all__ = ["OWNER_RELEASE", "KeyView", "ServiceCore"]

T = TypeVar("T")
#: The audit detail of an owner credential's release of an attested-only key's material.
OWNER_RELEASE = {"attested_only": "released to the owner credential without attestation"}


@dataclass(frozen=True)
class KeyView:
    """What clients may learn about a key (never its bytes)."""

    name: str
    version: int
    created: str
    min_decryption_version: int
    enabled: bool
    deletion_date: str | None


class ServiceCore:
    """Storage, root key, audit and clock, and the checks every key operation makes."""

    def __init__(
        self, storage: Storage, root: bytes, recorder: Recorder, clock: Callable[[], datetime]
    ) -> None:
        self._storage = storage
        self._root = root
        self._recorder = recorder
        self._clock = clock
        # Primary-key versions are immutable once written, so their unsealed bytes can be kept
        # (per app: two apps' keys of one name are different keys).
        self._primaries: dict[tuple[str, str, int], bytes] = {}
        self._lock = threading.Lock()

    def _now(self) -> str:
        return self._clock().isoformat(timespec="seconds")

    def _run(
        self,
        op: str,
        who: Principal,
        name: str | None,
        request_id: str,
        action: Callable[[Outcome], T],
    ) -> T:
        """``action`` audited as ``op`` by ``who`` on key ``name`` (see :class:`Recorder`)."""
        return self._recorder.run(
            op,
            app=who.audit_app,
            credential=who.credential_id,
            key=None if name is None else key_label(name),
            request_id=request_id,
            action=action,
            detail={"app_id": app_label(who.app_id) or ""} if who.role is Role.OPERATOR else None,
        )

    def _purge_if_due(self, record: KeyRecord) -> KeyRecord | None:
        if record.deletion_date is not None and record.deletion_date <= self._now():
            if self._storage.in_transaction:
                # Inside a state-changing operation (a re-create): its entry covers this.
                self._storage.delete_key(record.app_id, record.name)
            else:
                # A state change of its own, audited in its own transaction.
                self._recorder.run(
                    "key.purge",
                    app=record.app_id,
                    credential=None,
                    key=record.name,
                    request_id="purge",
                    action=lambda out: self._storage.delete_key(record.app_id, record.name),
                )
            with self._lock:
                for cached in [k for k in self._primaries if k[:2] == (record.app_id, record.name)]:
                    del self._primaries[cached]
            return None
        return record

    def purge_due_keys(self) -> list[str]:
        """Delete every key whose scheduled deletion date has passed; their names."""
        purged = []
        for app_id, name in self._storage.keys_due_for_deletion(self._now()):
            record = self._storage.get_key(app_id, name)
            if record is not None and self._purge_if_due(record) is None:
                purged.append(name)
        return purged

    def _key(
        self, who: Principal, name: str, access: Access, out: Outcome, *, usable: bool = True
    ) -> KeyRecord:
        """The caller's key ``name`` once ``who`` may have ``access`` to it.

        Looked up in the caller's namespace only: another app's key answers exactly like a
        missing one. Then the permission table, then (``usable``) the key's state.
        """
        validate_key_name(name)
        record = self._storage.get_key(who.app_id, name)
        if record is not None:
            record = self._purge_if_due(record)
        if record is None:
            raise KeyNotFoundError(f"no primary key named {name!r}")
        check(who.role, access, has_policy=record.has_policy, name=name)
        if access is Access.RELEASE and record.has_policy:
            out.detail.update(OWNER_RELEASE)
        if usable and record.deletion_date is not None:
            raise KeyStateError(
                f"primary key {name!r} is scheduled for deletion on "
                f"{record.deletion_date}; cancel the deletion to use it"
            )
        if usable and not record.enabled:
            raise KeyStateError(f"primary key {name!r} is disabled")
        return record

    def _primary(self, record: KeyRecord, version: int) -> bytes:
        cache_key = (record.app_id, record.name, version)
        cached = self._primaries.get(cache_key)
        if cached is not None:
            return cached
        sealed = self._storage.get_version(record.app_id, record.name, version)
        if sealed is None:
            raise IntegrityError(f"primary key {record.name!r} has no version {version}")
        primary = keyring.unseal_primary(self._root, record.app_id, record.name, version, sealed)
        with self._lock:
            self._primaries[cache_key] = primary
        return primary

    def _decryptable(self, record: KeyRecord, version: int) -> bytes:
        if version > record.current_version:
            raise IntegrityError(f"primary key {record.name!r} has no version {version}")
        if version < record.min_decryption_version:
            raise KeyStateError(
                f"version {version} of {record.name!r} is retired (minimum decryption version "
                f"is {record.min_decryption_version}); it can no longer be unwrapped"
            )
        return self._primary(record, version)

    @staticmethod
    def _view(record: KeyRecord) -> KeyView:
        return KeyView(
            record.name,
            record.current_version,
            record.created,
            record.min_decryption_version,
            record.enabled,
            record.deletion_date,
        )
