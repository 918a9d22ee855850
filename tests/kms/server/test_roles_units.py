"""In process: the schema migration of a database from before roles and namespaces, the
permission table, the failed-login throttle and the per-app nonce bound."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from cipherspark.errors import (
    AttestationError,
    CredentialsError,
    KeyNotFoundError,
    PermissionDeniedError,
)
from cipherspark.kms.server import init_data_dir, keyring, open_service
from cipherspark.kms.server._schema import MIGRATIONS
from cipherspark.kms.server._throttle import LoginThrottle, ThrottleLimit
from cipherspark.kms.server.audit import AuditLog
from cipherspark.kms.server.nonces import NonceStore
from cipherspark.kms.server.permissions import PERMISSIONS, Access, Role, Rule, check
from cipherspark.kms.server.sqlite import SqliteStorage

from .conftest import legacy_sealed

# -- the migration --------------------------------------------------------------------------------


def _pre_roles_database(data: Path) -> tuple[str, str, bytes, bytes]:
    """Rewrite ``data``'s database as a build before migration 4 left it: one app with its API
    key's hash in ``apps``, a key (globally named) with a sealed version and a policy, another
    key without. Answers (app id, API key, a wrapped data key of 'legacy', its plaintext)."""
    root = keyring.load_root_key(data / "root.key")
    (data / "kms.db").unlink()
    # The audit log goes too: that build's log never recorded a sealed store.
    for extra in ("kms.db-wal", "kms.db-shm", "audit.log"):
        (data / extra).unlink(missing_ok=True)
    db = sqlite3.connect(data / "kms.db", isolation_level=None)
    db.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
               "applied TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)")
    for version, statements in MIGRATIONS[:3]:
        for statement in statements:
            db.execute(statement)
        db.execute("INSERT INTO schema_migrations(version) VALUES (?)", (version,))
    hasher = keyring.SecretHasher()
    api_key = keyring.new_secret()  # what 'kms app create' printed then: no credential id
    salt, hashed = hasher.hash(api_key)
    db.execute("INSERT INTO apps VALUES ('app-00000000000000aa', 'old', ?, ?, '2030-01-01')",
               (salt, hashed))
    primary = os.urandom(32)
    data_key = os.urandom(32)
    for name in ("legacy", "plain"):
        db.execute("INSERT INTO keys(name, app_id, created, current_version) "
                   "VALUES (?, 'app-00000000000000aa', '2030-01-01', 1)", (name,))
        db.execute("INSERT INTO key_versions VALUES (?, 1, ?, '2030-01-01')",
                   (name, legacy_sealed(root, name, 1, primary)))
    db.execute("INSERT INTO key_policies VALUES ('legacy', '{}', '2030-01-01')")
    db.execute("INSERT INTO settings VALUES ('admin_token', x'00')")
    db.close()
    return "app-00000000000000aa", api_key, keyring.wrap(primary, "legacy", 1, data_key), data_key


def test_an_api_key_from_before_roles_becomes_its_apps_owner_credential(tmp_path: Path) -> None:
    data = init_data_dir(tmp_path / "d").data_dir
    app_id, api_key, wrapped, data_key = _pre_roles_database(data)
    with open_service(data) as opened:
        service = opened.service
        assert opened.storage.schema_version == MIGRATIONS[-1][0]
        owner = service.authenticate(app_id, api_key)
        assert owner.role is Role.OWNER and owner.credential_id is not None
        # Keys, versions and policies moved into the app's namespace.
        assert [k.name for k in service.list_keys(owner)] == ["legacy", "plain"]
        assert service.get_policy(owner, "legacy") is not None
        assert service.get_policy(owner, "plain") is None
        # The owner still unwraps the attested-only key (audited as such), ...
        assert service.unwrap(owner, "legacy", wrapped, "r1") == (1, data_key)
        # ... a workload credential of the same app does not, and unwraps the other key.
        new = service.accounts.create_credential(None, app_id, Role.WORKLOAD, "", "r2")
        workload = service.authenticate(app_id, new.api_key)
        with pytest.raises(PermissionDeniedError, match="attested workers"):
            service.unwrap(workload, "legacy", wrapped, "r3")
        _, plain_key, plain_wrapped = service.generate_data_key(workload, "plain", "r4")
        assert service.unwrap(workload, "plain", plain_wrapped, "r5")[1] == plain_key
        listed = service.accounts.list_credentials(None, app_id, "r6")
        legacy = [c for c in listed if c.legacy]
        assert len(legacy) == 1 and legacy[0].credential_id == owner.credential_id
        assert legacy[0].role is Role.OWNER
        # The old key can be retired like any credential, and is refused from then on.
        service.accounts.revoke_credential(None, app_id, owner.credential_id, "r7")
        with pytest.raises(CredentialsError):
            service.authenticate(app_id, api_key)
    db = sqlite3.connect(data / "kms.db")
    try:
        columns = {row[1] for row in db.execute("PRAGMA table_info(apps)")}
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        db.close()
    assert columns == {"app_id", "name", "created", "enabled", "seal"}  # no hash left in apps


def test_legacy_lookup_scrypts_once_and_credential_ids_scope_to_their_app(
        tmp_path: Path) -> None:
    data = init_data_dir(tmp_path / "d").data_dir
    with open_service(data) as opened:
        service = opened.service
        a, b = service.create_app("a", "-"), service.create_app("b", "-")
        # B's credential id with A's app id, and vice versa: refused.
        with pytest.raises(CredentialsError):
            service.authenticate(a.app_id, b.api_key)
        calls = []
        real = service.accounts._hasher.verify  # type: ignore[attr-defined]

        def counting(*args: object) -> bool:
            calls.append(args)
            return real(*args)  # type: ignore[arg-type]

        service.accounts._hasher.verify = counting  # type: ignore[attr-defined, method-assign, assignment]
        for _ in range(5):
            service.accounts.create_credential(None, a.app_id, Role.WORKLOAD, "", "-")
        new = service.accounts.create_credential(None, a.app_id, Role.WORKLOAD, "", "-")
        assert service.authenticate(a.app_id, new.api_key).credential_id == new.credential_id
        assert len(calls) == 1  # one scrypt, whatever the number of credentials
        assert service.authenticate(a.app_id, new.api_key).role is Role.WORKLOAD
        assert len(calls) == 1  # cached: none


# -- the permission table -------------------------------------------------------------------------


def test_the_permission_table() -> None:
    assert set(PERMISSIONS) == {(role, access) for role in Role for access in Access}
    assert {a for a in Access if PERMISSIONS[(Role.OWNER, a)] is not Rule.ALLOW} == set()
    assert {a: PERMISSIONS[(Role.WORKLOAD, a)] for a in Access} == {
        Access.READ: Rule.ALLOW, Access.WRAP: Rule.ALLOW, Access.ATTEST: Rule.ALLOW,
        Access.SEAL: Rule.UNLESS_POLICY, Access.RELEASE: Rule.UNLESS_POLICY,
        Access.MANAGE: Rule.DENY, Access.POLICY: Rule.DENY}
    assert {a for a in Access if PERMISSIONS[(Role.OPERATOR, a)] is Rule.ALLOW} == \
        {Access.READ, Access.POLICY}
    check(Role.WORKLOAD, Access.RELEASE, has_policy=False)
    with pytest.raises(PermissionDeniedError, match="attested workers"):
        check(Role.WORKLOAD, Access.RELEASE, has_policy=True, name="k")
    check(Role.WORKLOAD, Access.SEAL, has_policy=False)
    with pytest.raises(PermissionDeniedError, match="cannot forge data the key vouches for"):
        check(Role.WORKLOAD, Access.SEAL, has_policy=True, name="k")
    with pytest.raises(PermissionDeniedError, match="owner credential"):
        check(Role.WORKLOAD, Access.MANAGE, has_policy=False, name="k")
    with pytest.raises(PermissionDeniedError, match="admin token"):
        check(Role.OPERATOR, Access.RELEASE, has_policy=False, name="k")


# -- the throttle and the nonces ------------------------------------------------------------------


def test_the_throttle_counts_failures_only_and_drains() -> None:
    now = [0.0]
    throttle = LoginThrottle(per_source=ThrottleLimit(3, 30.0), per_app=ThrottleLimit(2, 60.0),
                             clock=lambda: now[0], max_entries=4)
    assert throttle.retry_after("s", "a") is None
    throttle.failed("s", "a")
    assert throttle.retry_after("s", "a") is None
    throttle.failed("s", "a")
    assert throttle.retry_after("s", "a") == 30  # app 'a': full; drains 1 per 30 s
    assert throttle.retry_after("s", "b") is None  # another app id, same source: one left
    throttle.failed("s", "b")
    assert throttle.retry_after("s", None) == 10  # source 's': full; drains 1 per 10 s
    assert throttle.retry_after("t", "b") is None
    now[0] += 10.0
    assert throttle.retry_after("s", None) is None
    assert throttle.retry_after("t", "a") == 20
    assert throttle.note("s", "a") and not throttle.note("s", "a")
    now[0] += 60.0
    assert throttle.note("s", "a")
    # Bounded: many app ids evict the least recently touched, not grow the table.
    for i in range(100):
        throttle.failed(None, f"app-{i}")
    assert throttle.retry_after(None, "a") is None


def test_nonces_are_bounded_per_app() -> None:
    now = [0.0]
    store = NonceStore(clock=lambda: now[0], per_app=3)
    kept = store.issue("b", "k")
    first = store.issue("a", "k")
    for _ in range(5):
        last = store.issue("a", "k")
    assert store.outstanding("a") == 3 and store.outstanding("b") == 1
    with pytest.raises(AttestationError) as info:
        store.take(first, "a", "k")
    assert info.value.reason == "nonce"
    assert store.take(last, "a", "k") == 0.0
    # Another app's nonce is unknown to this one, and stays usable by its owner.
    with pytest.raises(AttestationError, match="another app"):
        store.take(kept, "a", "k")
    with pytest.raises(AttestationError, match="another key"):
        store.take(kept, "b", "other")
    with pytest.raises(AttestationError, match="already used"):
        store.take(kept, "b", "k")
    late = store.issue("b", "k")
    now[0] += 301.0
    with pytest.raises(AttestationError, match="expired"):
        store.take(late, "b", "k")


def test_an_operator_principal_may_only_touch_policies(tmp_path: Path) -> None:
    from cipherspark.attestation import AttestationPolicy
    from cipherspark.kms.server.permissions import Principal

    data = init_data_dir(tmp_path / "d").data_dir
    with open_service(data) as opened:
        service = opened.service
        creds = service.create_app("a", "-")
        owner = service.authenticate(creds.app_id, creds.api_key)
        service.create_key(owner, "k", "-")
        operator = Principal.operator(creds.app_id)
        policy = AttestationPolicy.from_dict({"sgx": {"mr_enclave": ["22" * 32]}})
        assert service.set_policy(operator, "k", policy, "-") == policy
        assert service.get_policy(operator, "k") == policy
        for action in (lambda: service.generate_data_key(operator, "k", "-"),
                       lambda: service.rotate(operator, "k", "-")):
            with pytest.raises(PermissionDeniedError, match="admin token"):
                action()
        # An app that does not exist has no keys.
        with pytest.raises(KeyNotFoundError):
            service.set_policy(Principal.operator("app-0000000000000000"), "k", policy, "-")
    root = keyring.load_root_key(data / "root.key")
    audit = AuditLog(data / "audit.log", root)
    SqliteStorage(data / "kms.db", root, audit).close()
    audit.close()
