"""The KMS server's logic, independent of HTTP: apps, auth, keys, data keys, Transit, audit,
attested key release and the simulated TEE platforms the operator registers.

The HTTP layer (:mod:`cipherspark.kms.server.api`) only parses requests and maps the errors
raised here to status codes. Every key operation goes through :meth:`KeyService._audited`, so
each one leaves exactly one audit line, whether it succeeds or fails.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from cipherspark.attestation.dcap import DcapVerifier
from cipherspark.attestation.evidence import Evidence
from cipherspark.attestation.policy import DEFAULT_MAX_EVIDENCE_AGE, AttestationPolicy
from cipherspark.attestation.protocol import check_binding, seal_to
from cipherspark.attestation.simulated import validate_platform_key
from cipherspark.attestation.verify import verify_evidence
from cipherspark.errors import (
    AttestationError,
    CipherSparkError,
    CredentialsError,
    IntegrityError,
    KeyNotFoundError,
    KeyStateError,
    PermissionDeniedError,
    UsageError,
)
from cipherspark.kms.base import validate_key_name
from cipherspark.kms.server import keyring
from cipherspark.kms.server.audit import AuditLog
from cipherspark.kms.server.nonces import NonceStore
from cipherspark.kms.server.storage import (
    AppRecord,
    KeyRecord,
    SimulatedPlatformRecord,
    Storage,
)

__all__ = [
    "ADMIN_TOKEN_SETTING",
    "AppCredentials",
    "KeyService",
    "KeyView",
    "SimulatedPlatformRecord",
    "validate_app_name",
    "validate_platform_label",
]

ADMIN_TOKEN_SETTING = "admin_token"
_APP_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,128}")
_LABEL = re.compile(r"[^\x00-\x1f\x7f]{0,128}")
_AUTH_CACHE_SECONDS = 300.0
_AUTH_CACHE_MAX = 10_000
T = TypeVar("T")


def validate_app_name(name: str) -> str:
    """Return ``name`` if it is 1-128 printable characters, else raise :class:`UsageError`."""
    if not _APP_NAME.fullmatch(name):
        raise UsageError("app names are 1 to 128 printable characters")
    return name


def validate_platform_label(label: str) -> str:
    """Return ``label`` if it is 0-128 printable characters, else raise :class:`UsageError`."""
    if not _LABEL.fullmatch(label):
        raise UsageError("simulated-platform labels are up to 128 printable characters")
    return label


def _platform_key_or_none(value: str) -> str | None:
    # What the audit line names: the normalised key, or nothing when the input is not a key
    # (the line must not repeat arbitrary request bytes).
    try:
        return validate_platform_key(value)
    except UsageError:
        return None


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


@dataclass(frozen=True)
class KeyView:
    """What clients may learn about a key (never its bytes)."""

    name: str
    version: int
    created: str
    min_decryption_version: int
    enabled: bool
    deletion_date: str | None


@dataclass(frozen=True)
class AppCredentials:
    """A new app's APP ID and API KEY, and the equivalent Vault token (shown once)."""

    app_id: str
    api_key: str

    @property
    def vault_token(self) -> str:
        """The ``X-Vault-Token`` for Transit clients: APP ID and API KEY joined by '.'."""
        return f"{self.app_id}.{self.api_key}"


@dataclass
class _Outcome:
    version: int | None = None


class KeyService:
    """Key operations for authenticated apps, over a :class:`Storage` and the root key."""

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
    ) -> None:
        self._storage = storage
        # Attested release: DCAP collateral source and the time evidence is judged at.
        self._dcap = dcap or DcapVerifier(clock=attestation_clock)
        self._attestation_clock = attestation_clock
        self._nonces = nonces or NonceStore()
        self._root = root
        self._audit = audit
        self._hasher = hasher or keyring.SecretHasher()
        self._clock = clock
        # Primary-key versions are immutable once written, so their unsealed bytes can be kept.
        self._primaries: dict[tuple[str, int], bytes] = {}
        # Verified credentials, keyed by an HMAC under a per-process secret: the cache never
        # holds API keys, and dict lookup timing reveals nothing about them.
        self._auth_secret = os.urandom(32)
        self._auth_cache: dict[bytes, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self.metrics: Counter[tuple[str, str]] = Counter()

    # -- apps and authentication ---------------------------------------------------------------

    def set_admin_token(self, token: str) -> None:
        """Store the admin token's salted hash (the token itself is never stored)."""
        salt, digest = self._hasher.hash(token)
        self._storage.put_setting(ADMIN_TOKEN_SETTING, salt + digest)

    def check_admin(self, token: str) -> None:
        """:class:`CredentialsError` unless ``token`` is the admin token."""
        stored = self._storage.get_setting(ADMIN_TOKEN_SETTING)
        salt, digest = (stored[:16], stored[16:]) if stored else (None, None)
        if not self._hasher.verify(token, salt, digest):
            raise CredentialsError("invalid credentials")

    def create_app(self, name: str, request_id: str) -> AppCredentials:
        """Register an app; its API KEY is returned once and stored only as a hash."""
        validate_app_name(name)
        creds = AppCredentials(app_id="app-" + os.urandom(8).hex(), api_key=keyring.new_secret())
        salt, digest = self._hasher.hash(creds.api_key)
        self._storage.create_app(AppRecord(creds.app_id, name, salt, digest, _iso(self._clock())))
        self._audit.record(
            request_id=request_id, app="admin", op="app.create", key=None, version=None, result="ok"
        )
        return creds

    # -- simulated TEE platforms (admin) -------------------------------------------------------

    def register_simulated_platform(
        self, public_key_hex: str, label: str, request_id: str
    ) -> tuple[SimulatedPlatformRecord, bool]:
        """Trust the simulated platform ``public_key_hex`` (64 hex digits) for attested release.

        Idempotent: registering a key again keeps its first ``created`` and only replaces the
        label. Answers the stored record and whether it is new. Audited as
        ``simulated_platform.add`` (``key`` = the public key, which is not secret).
        """

        def run(out: _Outcome) -> tuple[SimulatedPlatformRecord, bool]:
            key = validate_platform_key(public_key_hex)
            validate_platform_label(label)
            return self._storage.add_simulated_platform(
                SimulatedPlatformRecord(key, label, _iso(self._clock()))
            )

        return self._audited(
            "simulated_platform.add",
            "admin",
            _platform_key_or_none(public_key_hex),
            request_id,
            run,
        )

    def remove_simulated_platform(
        self, public_key_hex: str, request_id: str
    ) -> SimulatedPlatformRecord:
        """Stop trusting a simulated platform; the record removed. Evidence it signs is denied
        from the next request on. :class:`KeyNotFoundError` if it is not registered."""

        def run(out: _Outcome) -> SimulatedPlatformRecord:
            key = validate_platform_key(public_key_hex)
            removed = self._storage.remove_simulated_platform(key)
            if removed is None:
                raise KeyNotFoundError(f"no simulated platform {key} is registered")
            return removed

        return self._audited(
            "simulated_platform.remove",
            "admin",
            _platform_key_or_none(public_key_hex),
            request_id,
            run,
        )

    def simulated_platforms(self) -> list[SimulatedPlatformRecord]:
        """The registered simulated platforms, oldest first (not audited: nothing changes)."""
        return self._storage.list_simulated_platforms()

    def _cache_key(self, app_id: str, api_key: str) -> bytes:
        return hmac.new(
            self._auth_secret, app_id.encode() + b"\x00" + api_key.encode(), hashlib.sha256
        ).digest()

    def cached_app(self, app_id: str, api_key: str) -> str | None:
        """The app id if these credentials were verified recently (fast path, no scrypt)."""
        hit = self._auth_cache.get(self._cache_key(app_id, api_key))
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        return None

    def authenticate(self, app_id: str, api_key: str) -> str:
        """The app id if the credentials are right; one :class:`CredentialsError` otherwise."""
        cached = self.cached_app(app_id, api_key)
        if cached is not None:
            return cached
        app = self._storage.get_app(app_id) if len(app_id) <= 64 else None
        ok = self._hasher.verify(
            api_key, app.key_salt if app else None, app.key_hash if app else None
        )
        if not ok or app is None:
            # Deliberately the same message for an unknown APP ID and a wrong API KEY.
            raise CredentialsError("invalid credentials")
        with self._lock:
            if len(self._auth_cache) >= _AUTH_CACHE_MAX:
                self._auth_cache.clear()
            self._auth_cache[self._cache_key(app_id, api_key)] = (
                app.app_id,
                time.monotonic() + _AUTH_CACHE_SECONDS,
            )
        return app.app_id

    # -- helpers -------------------------------------------------------------------------------

    def _audited(
        self, op: str, app: str, key: str | None, request_id: str, action: Callable[[_Outcome], T]
    ) -> T:
        outcome = _Outcome()
        try:
            result = action(outcome)
        except CipherSparkError as exc:
            failure = (
                f"denied:{exc.reason}" if isinstance(exc, AttestationError) else type(exc).__name__
            )
            self._audit.record(
                request_id=request_id,
                app=app,
                op=op,
                key=key,
                version=outcome.version,
                result=failure,
            )
            self.metrics[(op, "error")] += 1
            raise
        self._audit.record(
            request_id=request_id, app=app, op=op, key=key, version=outcome.version, result="ok"
        )
        self.metrics[(op, "ok")] += 1
        return result

    def _purge_if_due(self, record: KeyRecord) -> KeyRecord | None:
        if record.deletion_date is not None and record.deletion_date <= _iso(self._clock()):
            self._storage.delete_key(record.name)
            with self._lock:
                for cached in [k for k in self._primaries if k[0] == record.name]:
                    del self._primaries[cached]
            return None
        return record

    def purge_due_keys(self) -> list[str]:
        """Delete every key whose scheduled deletion date has passed; their names."""
        purged = []
        for name in self._storage.keys_due_for_deletion(_iso(self._clock())):
            record = self._storage.get_key(name)
            if record is not None and self._purge_if_due(record) is None:
                purged.append(name)
        return purged

    def _owned(self, app: str, name: str, *, usable: bool = True) -> KeyRecord:
        validate_key_name(name)
        record = self._storage.get_key(name)
        if record is not None:
            record = self._purge_if_due(record)
        if record is None:
            raise KeyNotFoundError(f"no primary key named {name!r}")
        if record.app_id != app:
            raise PermissionDeniedError(f"primary key {name!r} belongs to another application")
        if usable and record.deletion_date is not None:
            raise KeyStateError(
                f"primary key {name!r} is scheduled for deletion on "
                f"{record.deletion_date}; cancel the deletion to use it"
            )
        if usable and not record.enabled:
            raise KeyStateError(f"primary key {name!r} is disabled")
        return record

    def _primary(self, name: str, version: int) -> bytes:
        cached = self._primaries.get((name, version))
        if cached is not None:
            return cached
        sealed = self._storage.get_version(name, version)
        if sealed is None:
            raise IntegrityError(f"primary key {name!r} has no version {version}")
        primary = keyring.unseal_primary(self._root, name, version, sealed)
        with self._lock:
            self._primaries[(name, version)] = primary
        return primary

    def _decryptable(self, record: KeyRecord, version: int) -> bytes:
        if version > record.current_version:
            raise IntegrityError(f"primary key {record.name!r} has no version {version}")
        if version < record.min_decryption_version:
            raise KeyStateError(
                f"version {version} of {record.name!r} is retired (minimum decryption version "
                f"is {record.min_decryption_version}); it can no longer be unwrapped"
            )
        return self._primary(record.name, version)

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

    # -- keys ----------------------------------------------------------------------------------

    def create_key(self, app: str, name: str, request_id: str) -> KeyView:
        """Create primary key ``name`` (version 1) owned by ``app``."""

        def run(out: _Outcome) -> KeyView:
            validate_key_name(name)
            existing = self._storage.get_key(name)
            if existing is not None:
                self._purge_if_due(existing)
            created = _iso(self._clock())
            record = KeyRecord(name, app, created, 1, 1, True, None)
            sealed = keyring.seal_primary(self._root, name, 1, os.urandom(keyring.KEY_BYTES))
            self._storage.create_key(record, sealed)
            out.version = 1
            return self._view(record)

        return self._audited("key.create", app, name, request_id, run)

    def list_keys(self, app: str) -> list[KeyView]:
        """The caller's keys (not audited: it touches no key material)."""
        return [self._view(r) for r in self._storage.list_keys(app)]

    def describe_key(self, app: str, name: str) -> KeyView:
        """One of the caller's keys."""
        return self._view(self._owned(app, name, usable=False))

    def generate_data_key(
        self, app: str, name: str, request_id: str, *, with_plaintext: bool = True
    ) -> tuple[int, bytes | None, bytes]:
        """(version, plaintext or None, wrapped) of a fresh 256-bit data key."""

        def run(out: _Outcome) -> tuple[int, bytes | None, bytes]:
            record = self._owned(app, name)
            out.version = version = record.current_version
            data_key = os.urandom(keyring.KEY_BYTES)
            wrapped = keyring.wrap(self._primary(name, version), name, version, data_key)
            return version, (data_key if with_plaintext else None), wrapped

        op = "datakey.plaintext" if with_plaintext else "datakey.wrapped"
        return self._audited(op, app, name, request_id, run)

    def unwrap(self, app: str, name: str, wrapped: bytes, request_id: str) -> tuple[int, bytes]:
        """(version, data key) inside ``wrapped``."""

        def run(out: _Outcome) -> tuple[int, bytes]:
            record = self._owned(app, name)
            out.version = version = keyring.wrapped_version(name, wrapped)
            primary = self._decryptable(record, version)
            return version, keyring.open_wrapped(primary, name, version, wrapped)

        return self._audited("datakey.unwrap", app, name, request_id, run)

    def rewrap(self, app: str, name: str, wrapped: bytes, request_id: str) -> tuple[int, bytes]:
        """(current version, ``wrapped``'s data key re-wrapped under the current version)."""

        def run(out: _Outcome) -> tuple[int, bytes]:
            record = self._owned(app, name)
            old = keyring.wrapped_version(name, wrapped)
            data_key = keyring.open_wrapped(self._decryptable(record, old), name, old, wrapped)
            out.version = version = record.current_version
            return version, keyring.wrap(self._primary(name, version), name, version, data_key)

        return self._audited("datakey.rewrap", app, name, request_id, run)

    def rotate(self, app: str, name: str, request_id: str) -> KeyView:
        """Add a new version and make it current; older versions still decrypt."""

        def run(out: _Outcome) -> KeyView:
            record = self._owned(app, name)
            version = record.current_version + 1
            sealed = keyring.seal_primary(self._root, name, version, os.urandom(keyring.KEY_BYTES))
            self._storage.add_version(name, version, sealed, _iso(self._clock()))
            out.version = version
            return self.describe_key(app, name)

        return self._audited("key.rotate", app, name, request_id, run)

    def set_min_decryption_version(
        self, app: str, name: str, version: int, request_id: str
    ) -> KeyView:
        """Retire versions below ``version`` (they no longer unwrap)."""

        def run(out: _Outcome) -> KeyView:
            record = self._owned(app, name, usable=False)
            if not 1 <= version <= record.current_version:
                raise UsageError(
                    f"min_decryption_version must be 1 to {record.current_version} for {name!r}"
                )
            self._storage.update_key(name, min_decryption_version=version)
            out.version = version
            return self.describe_key(app, name)

        return self._audited("key.config", app, name, request_id, run)

    def set_enabled(self, app: str, name: str, enabled: bool, request_id: str) -> KeyView:
        """Disable (no operation uses the key) or re-enable it."""

        def run(out: _Outcome) -> KeyView:
            self._owned(app, name, usable=False)
            self._storage.update_key(name, enabled=enabled)
            return self.describe_key(app, name)

        return self._audited("key.enable" if enabled else "key.disable", app, name, request_id, run)

    def schedule_deletion(self, app: str, name: str, pending_days: int, request_id: str) -> KeyView:
        """Make the key unusable now and delete it after ``pending_days`` (1-30)."""

        def run(out: _Outcome) -> KeyView:
            if not 1 <= pending_days <= 30:
                raise UsageError("pending_days must be 1 to 30")
            self._owned(app, name, usable=False)
            when = _iso(self._clock() + timedelta(days=pending_days))
            self._storage.update_key(name, deletion_date=when)
            return self.describe_key(app, name)

        return self._audited("key.schedule_deletion", app, name, request_id, run)

    def cancel_deletion(self, app: str, name: str, request_id: str) -> KeyView:
        """Cancel a scheduled deletion."""

        def run(out: _Outcome) -> KeyView:
            self._owned(app, name, usable=False)
            self._storage.update_key(name, clear_deletion=True)
            return self.describe_key(app, name)

        return self._audited("key.cancel_deletion", app, name, request_id, run)

    # -- Vault Transit -------------------------------------------------------------------------

    def transit_encrypt(
        self, app: str, name: str, plaintext: bytes, request_id: str
    ) -> tuple[str, int]:
        """(``vault:vN:...`` ciphertext, N) of ``plaintext`` under the current version."""

        def run(out: _Outcome) -> tuple[str, int]:
            if len(plaintext) > keyring.MAX_TRANSIT_PLAINTEXT:
                raise UsageError(f"plaintext is larger than {keyring.MAX_TRANSIT_PLAINTEXT} bytes")
            record = self._owned(app, name)
            out.version = version = record.current_version
            return keyring.vault_ciphertext(
                self._primary(name, version), name, version, plaintext
            ), version

        return self._audited("transit.encrypt", app, name, request_id, run)

    def _transit_open(self, record: KeyRecord, ciphertext: str, out: _Outcome) -> bytes:
        try:
            version, raw = keyring.parse_vault_ciphertext(ciphertext)
        except ValueError as exc:
            raise UsageError(f"invalid ciphertext: {exc}") from exc
        out.version = version
        return keyring.open_vault(self._decryptable(record, version), record.name, version, raw)

    def transit_decrypt(self, app: str, name: str, ciphertext: str, request_id: str) -> bytes:
        """The plaintext of a ``vault:vN:...`` ciphertext."""

        def run(out: _Outcome) -> bytes:
            return self._transit_open(self._owned(app, name), ciphertext, out)

        return self._audited("transit.decrypt", app, name, request_id, run)

    def transit_rewrap(
        self, app: str, name: str, ciphertext: str, request_id: str
    ) -> tuple[str, int]:
        """The ciphertext re-encrypted under the current version."""

        def run(out: _Outcome) -> tuple[str, int]:
            record = self._owned(app, name)
            plaintext = self._transit_open(record, ciphertext, out)
            out.version = version = record.current_version
            return keyring.vault_ciphertext(
                self._primary(name, version), name, version, plaintext
            ), version

        return self._audited("transit.rewrap", app, name, request_id, run)

    def transit_datakey(
        self, app: str, name: str, bits: int, request_id: str
    ) -> tuple[bytes, str, int]:
        """(data key, its Transit ciphertext, version) of a fresh ``bits``-bit key."""

        def run(out: _Outcome) -> tuple[bytes, str, int]:
            if bits not in (128, 256, 512):
                raise UsageError("bits must be 128, 256 or 512")
            record = self._owned(app, name)
            out.version = version = record.current_version
            data_key = os.urandom(bits // 8)
            return (
                data_key,
                keyring.vault_ciphertext(self._primary(name, version), name, version, data_key),
                version,
            )

        return self._audited("transit.datakey", app, name, request_id, run)

    # -- attested key release ------------------------------------------------------------------

    def set_policy(
        self, app: str, name: str, policy: AttestationPolicy, request_id: str
    ) -> AttestationPolicy:
        """Store ``policy`` as key ``name``'s release policy (replacing any previous one)."""

        def run(out: _Outcome) -> AttestationPolicy:
            self._owned(app, name, usable=False)
            self._storage.put_policy(name, policy.to_json(), _iso(self._clock()))
            return policy

        return self._audited("key.policy", app, name, request_id, run)

    def get_policy(self, app: str, name: str) -> AttestationPolicy | None:
        """Key ``name``'s release policy, or ``None`` (which denies every attested unwrap)."""
        self._owned(app, name, usable=False)
        stored = self._storage.get_policy(name)
        return None if stored is None else AttestationPolicy.from_json(stored)

    def attestation_nonce(self, app: str, name: str) -> tuple[bytes, int]:
        """(a fresh single-use nonce for ``name``, seconds it stays valid)."""
        self._owned(app, name)
        policy = self.get_policy(app, name)
        lifetime = policy.max_evidence_age_seconds if policy else DEFAULT_MAX_EVIDENCE_AGE
        self.metrics[("attest.nonce", "ok")] += 1
        return self._nonces.issue(app, name), lifetime

    def attested_unwrap(
        self,
        app: str,
        name: str,
        *,
        nonce: bytes,
        tee: str,
        quote: bytes,
        public_key: bytes,
        wrapped: bytes,
        collateral: str | None,
        request_id: str,
    ) -> tuple[int, str]:
        """(version, JWE of the data key to ``public_key``) once evidence, policy, nonce and
        binding all check; otherwise :class:`AttestationError` with its reason (audited)."""

        def run(out: _Outcome) -> tuple[int, str]:
            record = self._owned(app, name)
            age = self._nonces.take(nonce, app, name)
            evidence = Evidence(tee, quote)
            stored = self._storage.get_policy(name)
            policy = None if stored is None else AttestationPolicy.from_json(stored)
            if policy is None or policy.empty:
                raise AttestationError(
                    f"primary key {name!r} has no release policy; an absent or empty policy denies",
                    "no_policy",
                )
            if age > policy.max_evidence_age_seconds:
                raise AttestationError(
                    f"the nonce is {age:.0f} s old, more than the policy's "
                    f"{policy.max_evidence_age_seconds} s",
                    "expired",
                )
            # Simulated evidence counts only if the operator registered its platform: the key's
            # owner alone must not be able to make this server trust a software "TEE". (Read for
            # every TEE type, so no spelling of ``tee`` can reach the simulated verifier without
            # it; DCAP verification ignores it.)
            operator_keys = [p.public_key for p in self._storage.list_simulated_platforms()]
            report = verify_evidence(
                evidence,
                policy=policy,
                dcap=self._dcap,
                collateral=collateral,
                clock=self._attestation_clock,
                operator_platform_keys=operator_keys,
            )
            check_binding(report.report_data, nonce, public_key)
            out.version = version = keyring.wrapped_version(name, wrapped)
            data_key = keyring.open_wrapped(
                self._decryptable(record, version), name, version, wrapped
            )
            return version, seal_to(public_key, data_key)

        return self._audited("datakey.attested_unwrap", app, name, request_id, run)
