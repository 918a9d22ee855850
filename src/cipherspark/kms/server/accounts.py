"""Apps, their credentials, the admin token, and authentication.

* An **app** has credentials (owner or workload, see :mod:`.permissions`) and can be disabled,
  which refuses all of them.
* A **credential** is an id (``cred-`` and 16 hex digits, not secret) and an API key that
  starts with that id: ``cred-0123456789abcdef_SECRET``. The id tells the server which one
  stored hash to check, so a login costs one scrypt whatever the number of credentials. API keys
  of apps created before roles carry no id; they are their app's *legacy* owner credential (one
  per app, found by app id). Only salted scrypt hashes are stored.
* **Authentication** checks the hash once, then keeps the verified login in memory under an
  HMAC with a per-process secret (never the API key), so later requests skip scrypt. Every
  request, cached or not, re-reads the credential's and the app's current state (one indexed
  read): a revoked credential, a disabled app, or a row deleted by hand is refused on its very
  next request.
* Failed logins are audited (never the secret; an app id of the wrong form as a digest) and
  counted by :class:`~cipherspark.kms.server._throttle.LoginThrottle`, which the HTTP layer asks
  before any scrypt work.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from cipherspark.errors import CredentialsError, KeyNotFoundError, PermissionDeniedError, UsageError
from cipherspark.kms.server import keyring
from cipherspark.kms.server._audited import APP_ID, Outcome, Recorder, app_label
from cipherspark.kms.server._throttle import LoginThrottle
from cipherspark.kms.server.permissions import (
    CREDENTIAL_ROLES,
    OPERATOR_AUDIT_NAME,
    Principal,
    Role,
)
from cipherspark.kms.server.records import AppRecord, CredentialRecord
from cipherspark.kms.server.storage import Storage

__all__ = [
    "ADMIN_TOKEN_SETTING",
    "Accounts",
    "AppCredentials",
    "validate_app_name",
    "validate_label",
]

ADMIN_TOKEN_SETTING = "admin_token"
_APP_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,128}")
_LABEL = re.compile(r"[^\x00-\x1f\x7f]{0,128}")
_CREDENTIAL_ID = re.compile(r"cred-[0-9a-f]{16}")
# A credential's API key: its id, '_', and a 256-bit secret (keyring.new_secret: 43 characters).
_API_KEY = re.compile(r"(cred-[0-9a-f]{16})_[A-Za-z0-9_-]{43}")
_AUTH_CACHE_SECONDS = 300.0
_AUTH_CACHE_MAX = 10_000
T = TypeVar("T")


def validate_app_name(name: str) -> str:
    """Return ``name`` if it is 1-128 printable characters, else raise :class:`UsageError`."""
    if not _APP_NAME.fullmatch(name):
        raise UsageError("app names are 1 to 128 printable characters")
    return name


def validate_label(label: str, what: str = "labels") -> str:
    """Return ``label`` if it is 0-128 printable characters, else raise :class:`UsageError`."""
    if not _LABEL.fullmatch(label):
        raise UsageError(f"{what} are up to 128 printable characters")
    return label


@dataclass(frozen=True)
class AppCredentials:
    """A new credential (of a new app, or a new one of an existing app): APP ID, API KEY (shown
    once, never stored), its id, role, label and creation time."""

    app_id: str
    api_key: str = field(repr=False)
    credential_id: str
    role: Role
    label: str
    created: str

    @property
    def vault_token(self) -> str:
        """The ``X-Vault-Token`` for Transit clients: APP ID and API KEY joined by '.'."""
        return f"{self.app_id}.{self.api_key}"


class Accounts:
    """Apps, credentials, the admin token and logins, over a :class:`Storage`."""

    def __init__(
        self,
        storage: Storage,
        recorder: Recorder,
        *,
        hasher: keyring.SecretHasher,
        clock: Callable[[], datetime],
        throttle: LoginThrottle | None = None,
    ) -> None:
        self._storage = storage
        self._recorder = recorder
        self._hasher = hasher
        self._clock = clock
        self.throttle = throttle or LoginThrottle()
        # Verified logins, keyed by an HMAC under a per-process secret: the cache never holds
        # API keys, and dict lookup timing reveals nothing about them.
        self._auth_secret = os.urandom(32)
        self._cache: dict[bytes, tuple[Principal, float]] = {}
        self._lock = threading.Lock()

    def _now(self) -> str:
        return self._clock().isoformat(timespec="seconds")

    # -- the admin token -----------------------------------------------------------------------

    def set_admin_token(self, token: str) -> None:
        """Store the admin token's salted hash (the token itself is never stored)."""
        salt, hashed = self._hasher.hash(token)
        self._storage.put_setting(ADMIN_TOKEN_SETTING, salt + hashed)

    def check_admin(self, token: str, *, source: str | None = None, request_id: str = "-") -> None:
        """:class:`CredentialsError` unless ``token`` is the admin token (failures audited)."""
        stored = self._storage.get_setting(ADMIN_TOKEN_SETTING)
        salt, hashed = (stored[:16], stored[16:]) if stored else (None, None)
        if token and self._hasher.verify(token, salt, hashed):
            return
        self.throttle.failed(source, None)
        self._failed("auth.admin_failed", OPERATOR_AUDIT_NAME, None, source, request_id)
        raise CredentialsError("invalid credentials")

    def rotate_admin_token(self, request_id: str) -> str:
        """A new admin token (returned once); the old one is refused from the next request."""

        def run(out: Outcome) -> str:
            token = keyring.new_secret()
            self.set_admin_token(token)
            return token

        return self._as_operator("admin_token.rotate", request_id, run)

    # -- apps ----------------------------------------------------------------------------------

    def create_app(self, name: str, request_id: str) -> AppCredentials:
        """Register an app and its owner credential; the API KEY is returned once."""

        def run(out: Outcome) -> AppCredentials:
            validate_app_name(name)
            app = AppRecord("app-" + os.urandom(8).hex(), name, self._now())
            new, record = self._new_credential(app.app_id, Role.OWNER, "owner")
            self._storage.create_app(app, record)
            out.detail.update(app_id=app.app_id, credential_id=new.credential_id)
            return new

        return self._as_operator("app.create", request_id, run)

    def get_app(self, app_id: str) -> AppRecord:
        """App ``app_id``; :class:`KeyNotFoundError` if there is none (404)."""
        found = self._storage.get_app(app_id) if APP_ID.fullmatch(app_id) else None
        if found is None:
            raise KeyNotFoundError(f"no app {app_id!r} is registered")
        return found

    def set_app_enabled(self, app_id: str, enabled: bool, request_id: str) -> AppRecord:
        """Disable an app (every credential of it is refused from its next request) or enable
        it again (operator)."""

        def run(out: Outcome) -> AppRecord:
            self.get_app(app_id)
            updated = self._storage.set_app_enabled(app_id, enabled)
            if updated is None:
                raise KeyNotFoundError(f"no app {app_id!r} is registered")
            return updated

        op = "app.enable" if enabled else "app.disable"
        return self._as_operator(op, request_id, run, target=app_id)

    # -- credentials ---------------------------------------------------------------------------

    def _new_credential(
        self, app_id: str, role: Role, label: str
    ) -> tuple[AppCredentials, CredentialRecord]:
        credential_id = "cred-" + os.urandom(8).hex()
        api_key = f"{credential_id}_{keyring.new_secret()}"
        salt, hashed = self._hasher.hash(api_key)
        created = self._now()
        record = CredentialRecord(credential_id, app_id, role, label, salt, hashed, created)
        return AppCredentials(app_id, api_key, credential_id, role, label, created), record

    @staticmethod
    def _may_manage(by: Principal | None, app_id: str, role: Role | None) -> None:
        # by None: the operator. An app's owner credential manages its own app's workload
        # credentials; nobody else does.
        if by is None:
            return
        if by.role is not Role.OWNER or by.app_id != app_id:
            raise PermissionDeniedError(
                "only the app's owner credential or the admin token manages its credentials"
            )
        if role is not None and role is not Role.WORKLOAD:
            raise PermissionDeniedError(
                "an owner credential manages workload credentials only; owner credentials "
                "are minted and revoked with the admin token"
            )

    def create_credential(
        self, by: Principal | None, app_id: str, role: Role, label: str, request_id: str
    ) -> AppCredentials:
        """A new credential of ``app_id`` (API KEY returned once). ``by``: the owner credential
        asking (workload credentials only), or ``None`` for the operator (any role)."""

        def run(out: Outcome) -> AppCredentials:
            if role not in CREDENTIAL_ROLES:
                raise UsageError("a credential's role is 'owner' or 'workload'")
            self._may_manage(by, app_id, role)
            validate_label(label, "credential labels")
            self.get_app(app_id)
            new, record = self._new_credential(app_id, role, label)
            self._storage.add_credential(record)
            out.detail.update(credential_id=new.credential_id, role=role.value)
            return new

        return self._by("credential.create", by, app_id, request_id, run)

    def list_credentials(
        self, by: Principal | None, app_id: str, request_id: str
    ) -> list[CredentialRecord]:
        """The app's credentials (revoked ones too), oldest first."""

        def run(out: Outcome) -> list[CredentialRecord]:
            self._may_manage(by, app_id, None)
            self.get_app(app_id)
            return self._storage.list_credentials(app_id)

        return self._by("credential.list", by, app_id, request_id, run)

    def revoke_credential(
        self, by: Principal | None, app_id: str, credential_id: str, request_id: str
    ) -> CredentialRecord:
        """Revoke a credential: refused from its next request on (even if its login is
        cached). An owner credential revokes its app's workload credentials only."""

        def run(out: Outcome) -> CredentialRecord:
            self.get_app(app_id)
            found = (
                self._storage.get_credential(credential_id)
                if _CREDENTIAL_ID.fullmatch(credential_id)
                else None
            )
            if found is None or found.app_id != app_id:
                raise KeyNotFoundError(f"app {app_id!r} has no credential {credential_id!r}")
            self._may_manage(by, app_id, found.role)
            out.detail["credential_id"] = credential_id
            revoked = self._storage.revoke_credential(app_id, credential_id, self._now())
            if revoked is None:
                raise KeyNotFoundError(f"app {app_id!r} has no credential {credential_id!r}")
            self._forget(credential_id)
            return revoked

        return self._by("credential.revoke", by, app_id, request_id, run)

    # -- logins --------------------------------------------------------------------------------

    def _cache_key(self, app_id: str, api_key: str) -> bytes:
        return hmac.new(
            self._auth_secret, app_id.encode() + b"\x00" + api_key.encode(), hashlib.sha256
        ).digest()

    def _forget(self, credential_id: str) -> None:
        with self._lock:
            for key in [k for k, v in self._cache.items() if v[0].credential_id == credential_id]:
                del self._cache[key]

    def cached_caller(self, app_id: str, api_key: str) -> Principal | None:
        """The caller if these credentials were verified recently *and* their credential and
        app are still active (no scrypt; one indexed read), else ``None``."""
        if not app_id or not api_key:
            return None
        key = self._cache_key(app_id, api_key)
        hit = self._cache.get(key)
        if hit is None:
            return None
        principal, expiry = hit
        now = time.monotonic()
        assert principal.credential_id is not None
        if expiry <= now or self._storage.active_role(app_id, principal.credential_id) is None:
            self._cache.pop(key, None)
            return None
        # Sliding: a client in use keeps its entry (the state is re-read on every use anyway),
        # so one that works is not pushed back into scrypt, and the throttle, by an attacker.
        self._cache[key] = (principal, now + _AUTH_CACHE_SECONDS)
        return principal

    def authenticate(
        self, app_id: str, api_key: str, *, source: str | None = None, request_id: str = "-"
    ) -> Principal:
        """The caller, if the credentials are right and active; one :class:`CredentialsError`
        (the same for every cause) otherwise, audited and counted by the throttle."""
        cached = self.cached_caller(app_id, api_key)
        if cached is not None:
            return cached
        claimed = _API_KEY.fullmatch(api_key) if api_key else None
        candidate = None
        if app_id and api_key and APP_ID.fullmatch(app_id):
            candidate = (
                self._storage.get_credential(claimed.group(1))
                if claimed
                else self._storage.legacy_credential(app_id)
            )
            if candidate is not None and candidate.app_id != app_id:
                candidate = None
        ok = False
        if app_id and api_key:
            # An unknown app or credential burns the same scrypt time as a wrong API key.
            ok = self._hasher.verify(
                api_key,
                candidate.key_salt if candidate else None,
                candidate.key_hash if candidate else None,
            )
        role = None
        if ok and candidate is not None:
            role = self._storage.active_role(app_id, candidate.credential_id)
        if role is None or candidate is None:
            label = app_label(app_id)
            self.throttle.failed(source, label)
            credential = claimed.group(1) if claimed else None
            if credential is None and candidate is not None:
                credential = candidate.credential_id
            self._failed("auth.failed", label, credential, source, request_id)
            # Deliberately the same message whatever was wrong.
            raise CredentialsError("invalid credentials")
        principal = Principal(app_id, candidate.credential_id, role)
        with self._lock:
            if len(self._cache) >= _AUTH_CACHE_MAX:
                self._cache.clear()
            self._cache[self._cache_key(app_id, api_key)] = (
                principal,
                time.monotonic() + _AUTH_CACHE_SECONDS,
            )
        return principal

    def throttled(self, source: str | None, app_id: str | None, request_id: str) -> int | None:
        """Seconds a login from ``source`` for ``app_id`` (``None``: the admin token) must wait,
        or ``None``. Asked before any scrypt; refusals are audited at most once a minute."""
        label = app_label(app_id) if app_id else None
        wait = self.throttle.retry_after(source, label)
        if wait is not None and self.throttle.note(source, label):
            self._failed(
                "auth.throttled",
                OPERATOR_AUDIT_NAME if app_id is None else label,
                None,
                source,
                request_id,
                result="throttled",
            )
        return wait

    # -- audit ---------------------------------------------------------------------------------

    def _failed(
        self,
        op: str,
        app: str | None,
        credential: str | None,
        source: str | None,
        request_id: str,
        *,
        result: str = "CredentialsError",
    ) -> None:
        detail = {} if source is None else {"source": source[:64]}
        self._recorder.record(op, app, credential, None, request_id, result, Outcome(None, detail))

    def _as_operator(
        self, op: str, request_id: str, run: Callable[[Outcome], T], *, target: str | None = None
    ) -> T:
        return self._by(op, None, target, request_id, run)

    def _by(
        self,
        op: str,
        by: Principal | None,
        app_id: str | None,
        request_id: str,
        run: Callable[[Outcome], T],
    ) -> T:
        detail = {} if app_id is None else {"app_id": app_label(app_id) or ""}
        return self._recorder.run(
            op,
            app=OPERATOR_AUDIT_NAME if by is None else by.audit_app,
            credential=None if by is None else by.credential_id,
            key=None,
            request_id=request_id,
            action=run,
            detail=detail,
        )
