"""The KMS server's logic, independent of HTTP: keys and data keys, and the assembly of the rest
(apps and credentials in :mod:`.accounts`, Transit in :mod:`.transit`, attested release in
:mod:`.release`, the dataset registry in :mod:`.registry`, who may do what in
:mod:`.permissions`).

The HTTP layer (:mod:`cipherspark.kms.server.api`) only authenticates, parses requests and maps
the errors raised here to status codes. Every operation goes through the audited run
(:class:`~cipherspark.kms.server._audited.Recorder`), so each one leaves exactly one audit line,
whether it succeeds or fails. Operations take the caller as a
:class:`~cipherspark.kms.server.permissions.Principal` (what :meth:`KeyService.authenticate`
answers) and act on keys of the caller's app only.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from cipherspark.attestation.dcap import DcapVerifier
from cipherspark.attestation.simulated import validate_platform_key
from cipherspark.errors import KeyNotFoundError, UsageError
from cipherspark.kms.base import validate_key_name
from cipherspark.kms.server import keyring
from cipherspark.kms.server._audited import Outcome, Recorder
from cipherspark.kms.server._core import KeyView
from cipherspark.kms.server._throttle import LoginThrottle
from cipherspark.kms.server.accounts import (
    ADMIN_TOKEN_SETTING,
    Accounts,
    AppCredentials,
    validate_app_name,
    validate_label,
)
from cipherspark.kms.server.audit import AuditLog
from cipherspark.kms.server.nonces import NonceStore
from cipherspark.kms.server.permissions import Access, Principal, check
from cipherspark.kms.server.records import KeyRecord, SimulatedPlatformRecord
from cipherspark.kms.server.registry import DatasetOperations
from cipherspark.kms.server.release import ReleaseOperations
from cipherspark.kms.server.storage import Storage
from cipherspark.kms.server.transit import TransitOperations

__all__ = [
    "ADMIN_TOKEN_SETTING",
    "AppCredentials",
    "KeyService",
    "KeyView",
    "Principal",
    "SimulatedPlatformRecord",
    "validate_app_name",
    "validate_platform_label",
]

T = TypeVar("T")


def validate_platform_label(label: str) -> str:
    """Return ``label`` if it is 0-128 printable characters, else raise :class:`UsageError`."""
    return validate_label(label, "simulated-platform labels")


def _platform_key_or_none(value: str) -> str | None:
    # What the audit line names: the normalised key, or nothing when the input is not a key
    # (the line must not repeat arbitrary request bytes).
    try:
        return validate_platform_key(value)
    except UsageError:
        return None


def _now() -> datetime:
    return datetime.now(UTC)


class KeyService(TransitOperations, ReleaseOperations, DatasetOperations):
    """Key operations for authenticated callers, over a :class:`Storage` and the root key."""

    def __init__(
        self,
        storage: Storage,
        root: bytes,
        audit: AuditLog,
        *,
        hasher: keyring.SecretHasher | None = None,
        clock: Callable[[], datetime] = _now,
        dcap: DcapVerifier | None = None,
        attestation_clock: Callable[[], float] = time.time,
        nonces: NonceStore | None = None,
        throttle: LoginThrottle | None = None,
    ) -> None:
        super().__init__(storage, root, Recorder(audit, storage), clock)
        self._init_release(dcap, attestation_clock, nonces)
        #: Apps, credentials, the admin token and logins.
        self.accounts = Accounts(
            storage,
            self._recorder,
            hasher=hasher or keyring.SecretHasher(),
            clock=clock,
            throttle=throttle,
        )

    @property
    def metrics(self) -> Counter[tuple[str, str]]:
        """Operations counted by (operation, ``ok`` / ``error``), for ``/metrics``."""
        return self._recorder.metrics

    # -- apps and authentication (see Accounts) ------------------------------------------------

    def set_admin_token(self, token: str) -> None:
        """Store the admin token's salted hash (the token itself is never stored)."""
        self.accounts.set_admin_token(token)

    def check_admin(self, token: str, *, source: str | None = None, request_id: str = "-") -> None:
        """:class:`CredentialsError` unless ``token`` is the admin token."""
        self.accounts.check_admin(token, source=source, request_id=request_id)

    def create_app(self, name: str, request_id: str) -> AppCredentials:
        """Register an app; its owner credential's API KEY is returned once."""
        return self.accounts.create_app(name, request_id)

    def cached_caller(self, app_id: str, api_key: str) -> Principal | None:
        """The caller if verified recently and still active (no scrypt), else ``None``."""
        return self.accounts.cached_caller(app_id, api_key)

    def authenticate(
        self, app_id: str, api_key: str, *, source: str | None = None, request_id: str = "-"
    ) -> Principal:
        """The caller if the credentials are right and active; :class:`CredentialsError`."""
        return self.accounts.authenticate(app_id, api_key, source=source, request_id=request_id)

    # -- simulated TEE platforms (admin) -------------------------------------------------------

    def register_simulated_platform(
        self, public_key_hex: str, label: str, request_id: str
    ) -> tuple[SimulatedPlatformRecord, bool]:
        """Trust the simulated platform ``public_key_hex`` (64 hex digits) for attested release.

        Idempotent: registering a key again keeps its first ``created`` and only replaces the
        label. Answers the stored record and whether it is new. Audited as
        ``simulated_platform.add`` (``key`` = the public key, which is not secret).
        """

        def run(out: Outcome) -> tuple[SimulatedPlatformRecord, bool]:
            key = validate_platform_key(public_key_hex)
            validate_platform_label(label)
            return self._storage.add_simulated_platform(
                SimulatedPlatformRecord(key, label, self._now())
            )

        return self._platform_op("simulated_platform.add", public_key_hex, request_id, run)

    def remove_simulated_platform(
        self, public_key_hex: str, request_id: str
    ) -> SimulatedPlatformRecord:
        """Stop trusting a simulated platform; the record removed. Evidence it signs is denied
        from the next request on. :class:`KeyNotFoundError` if it is not registered."""

        def run(out: Outcome) -> SimulatedPlatformRecord:
            key = validate_platform_key(public_key_hex)
            removed = self._storage.remove_simulated_platform(key)
            if removed is None:
                raise KeyNotFoundError(f"no simulated platform {key} is registered")
            return removed

        return self._platform_op("simulated_platform.remove", public_key_hex, request_id, run)

    def _platform_op(
        self, op: str, public_key_hex: str, request_id: str, run: Callable[[Outcome], T]
    ) -> T:
        return self._recorder.run(
            op,
            app="admin",
            credential=None,
            key=_platform_key_or_none(public_key_hex),
            request_id=request_id,
            action=run,
        )

    def simulated_platforms(self) -> list[SimulatedPlatformRecord]:
        """The registered simulated platforms, oldest first (not audited: nothing changes)."""
        return self._storage.list_simulated_platforms()

    # -- keys ----------------------------------------------------------------------------------

    def create_key(self, who: Principal, name: str, request_id: str) -> KeyView:
        """Create primary key ``name`` (version 1) in the caller's app (owner credential)."""

        def run(out: Outcome) -> KeyView:
            check(who.role, Access.MANAGE, has_policy=False)
            validate_key_name(name)
            existing = self._storage.get_key(who.app_id, name)
            if existing is not None:
                self._purge_if_due(existing)
            record = KeyRecord(name, who.app_id, self._now(), 1, 1, True, None)
            sealed = keyring.seal_primary(
                self._root, who.app_id, name, 1, os.urandom(keyring.KEY_BYTES)
            )
            self._storage.create_key(record, sealed)
            out.version = 1
            return self._view(record)

        return self._run("key.create", who, name, request_id, run)

    def list_keys(self, who: Principal, request_id: str = "-") -> list[KeyView]:
        """The caller's app's keys."""

        def run(out: Outcome) -> list[KeyView]:
            check(who.role, Access.READ, has_policy=False)
            return [self._view(r) for r in self._storage.list_keys(who.app_id)]

        return self._run("key.list", who, None, request_id, run)

    def describe_key(self, who: Principal, name: str, request_id: str = "-") -> KeyView:
        """One of the caller's app's keys."""

        def run(out: Outcome) -> KeyView:
            return self._view(self._key(who, name, Access.READ, out, usable=False))

        return self._run("key.describe", who, name, request_id, run)

    def generate_data_key(
        self, who: Principal, name: str, request_id: str, *, with_plaintext: bool = True
    ) -> tuple[int, bytes | None, bytes]:
        """(version, plaintext or None, wrapped) of a fresh 256-bit data key (the plaintext is
        key material; the wrapped-only variant is not)."""

        def run(out: Outcome) -> tuple[int, bytes | None, bytes]:
            access = Access.RELEASE if with_plaintext else Access.WRAP
            record = self._key(who, name, access, out)
            out.version = version = record.current_version
            data_key = os.urandom(keyring.KEY_BYTES)
            wrapped = keyring.wrap(self._primary(record, version), name, version, data_key)
            return version, (data_key if with_plaintext else None), wrapped

        op = "datakey.plaintext" if with_plaintext else "datakey.wrapped"
        return self._run(op, who, name, request_id, run)

    def unwrap(
        self, who: Principal, name: str, wrapped: bytes, request_id: str
    ) -> tuple[int, bytes]:
        """(version, data key) inside ``wrapped``."""

        def run(out: Outcome) -> tuple[int, bytes]:
            record = self._key(who, name, Access.RELEASE, out)
            out.version = version = keyring.wrapped_version(name, wrapped)
            primary = self._decryptable(record, version)
            return version, keyring.open_wrapped(primary, name, version, wrapped)

        return self._run("datakey.unwrap", who, name, request_id, run)

    def rewrap(
        self, who: Principal, name: str, wrapped: bytes, request_id: str
    ) -> tuple[int, bytes]:
        """(current version, ``wrapped``'s data key re-wrapped under the current version): key
        maintenance after a rotation, owner credential only."""

        def run(out: Outcome) -> tuple[int, bytes]:
            record = self._key(who, name, Access.MANAGE, out)
            old = keyring.wrapped_version(name, wrapped)
            data_key = keyring.open_wrapped(self._decryptable(record, old), name, old, wrapped)
            out.version = version = record.current_version
            return version, keyring.wrap(self._primary(record, version), name, version, data_key)

        return self._run("datakey.rewrap", who, name, request_id, run)

    def _changed(self, who: Principal, name: str) -> KeyView:
        record = self._storage.get_key(who.app_id, name)
        if record is None:
            raise KeyNotFoundError(f"no primary key named {name!r}")
        return self._view(record)

    def rotate(self, who: Principal, name: str, request_id: str) -> KeyView:
        """Add a new version and make it current; older versions still decrypt."""

        def run(out: Outcome) -> KeyView:
            record = self._key(who, name, Access.MANAGE, out)
            version = record.current_version + 1
            sealed = keyring.seal_primary(
                self._root, who.app_id, name, version, os.urandom(keyring.KEY_BYTES)
            )
            self._storage.add_version(who.app_id, name, version, sealed, self._now())
            out.version = version
            return self._changed(who, name)

        return self._run("key.rotate", who, name, request_id, run)

    def set_min_decryption_version(
        self, who: Principal, name: str, version: int, request_id: str
    ) -> KeyView:
        """Retire versions below ``version`` (they no longer unwrap)."""

        def run(out: Outcome) -> KeyView:
            record = self._key(who, name, Access.MANAGE, out, usable=False)
            if not 1 <= version <= record.current_version:
                raise UsageError(
                    f"min_decryption_version must be 1 to {record.current_version} for {name!r}"
                )
            self._storage.update_key(who.app_id, name, min_decryption_version=version)
            out.version = version
            return self._changed(who, name)

        return self._run("key.config", who, name, request_id, run)

    def set_enabled(self, who: Principal, name: str, enabled: bool, request_id: str) -> KeyView:
        """Disable (no operation uses the key) or re-enable it."""

        def run(out: Outcome) -> KeyView:
            self._key(who, name, Access.MANAGE, out, usable=False)
            self._storage.update_key(who.app_id, name, enabled=enabled)
            return self._changed(who, name)

        return self._run("key.enable" if enabled else "key.disable", who, name, request_id, run)

    def schedule_deletion(
        self, who: Principal, name: str, pending_days: int, request_id: str
    ) -> KeyView:
        """Make the key unusable now and delete it after ``pending_days`` (1-30)."""

        def run(out: Outcome) -> KeyView:
            self._key(who, name, Access.MANAGE, out, usable=False)
            if not 1 <= pending_days <= 30:
                raise UsageError("pending_days must be 1 to 30")
            when = (self._clock() + timedelta(days=pending_days)).isoformat(timespec="seconds")
            self._storage.update_key(who.app_id, name, deletion_date=when)
            return self._changed(who, name)

        return self._run("key.schedule_deletion", who, name, request_id, run)

    def cancel_deletion(self, who: Principal, name: str, request_id: str) -> KeyView:
        """Cancel a scheduled deletion."""

        def run(out: Outcome) -> KeyView:
            self._key(who, name, Access.MANAGE, out, usable=False)
            self._storage.update_key(who.app_id, name, clear_deletion=True)
            return self._changed(who, name)

        return self._run("key.cancel_deletion", who, name, request_id, run)
