"""In-process checks of the storage, keyring and service rules (no server needed)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cipherspark.errors import IntegrityError, KeyNotFoundError, KmsError, UsageError
from cipherspark.kms.server import init_data_dir, keyring, open_service, plan_server
from cipherspark.kms.server.audit import AuditLog
from cipherspark.kms.server.service import KeyService
from cipherspark.kms.server.sqlite import SqliteStorage
from cipherspark.kms.server.storage import MIGRATIONS, SimulatedPlatformRecord

from .conftest import legacy_sealed

ROOT = bytes(range(32))


def sqlite_storage(path: Path) -> SqliteStorage:
    """The storage of ``path`` under a fixed root key, its audit log beside it (left open: the
    test process ends soon)."""
    return SqliteStorage(path, ROOT, AuditLog(path.parent / "audit.log", ROOT))


def test_migrations_are_recorded_and_idempotent(tmp_path: Path) -> None:
    store = sqlite_storage(tmp_path / "kms.db")
    assert store.schema_version == MIGRATIONS[-1][0]
    store.close()
    again = sqlite_storage(tmp_path / "kms.db")
    assert again.schema_version == MIGRATIONS[-1][0]
    assert again.integrity_check() == "ok"
    again.close()
    db = sqlite3.connect(tmp_path / "kms.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.execute("INSERT INTO schema_migrations(version) VALUES (999)")
    db.commit()
    db.close()
    with pytest.raises(KmsError, match="newer than this build"):
        sqlite_storage(tmp_path / "kms.db")


def test_a_version_2_database_upgrades_and_keeps_its_data(tmp_path: Path) -> None:
    # What a build from before migration 3 left behind: migrations 1 and 2, some rows.
    path = tmp_path / "kms.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
               "applied TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)")
    for version, statements in MIGRATIONS:
        if version > 2:
            break
        for statement in statements:
            db.execute(statement)
        db.execute("INSERT INTO schema_migrations(version) VALUES (?)", (version,))
    db.execute("INSERT INTO apps VALUES ('app-1', 'a', x'00', x'01', '2030-01-01')")
    db.execute("INSERT INTO keys(name, app_id, created, current_version) "
               "VALUES ('k', 'app-1', '2030-01-01', 1)")
    primary = bytes(32)
    db.execute("INSERT INTO key_versions VALUES ('k', 1, ?, '2030-01-01')",
               (legacy_sealed(ROOT, "k", 1, primary),))
    db.execute("INSERT INTO key_policies VALUES ('k', '{}', '2030-01-01')")
    db.close()

    store = sqlite_storage(path)
    try:
        assert store.schema_version == MIGRATIONS[-1][0]
        assert store.get_key("app-1", "k") is not None and store.get_policy("app-1", "k") == "{}"
        # Re-sealed once with the app id bound; the primary key itself is unchanged.
        sealed = store.get_version("app-1", "k", 1)
        assert sealed is not None
        assert keyring.unseal_primary(ROOT, "app-1", "k", 1, sealed) == primary
        assert store.list_simulated_platforms() == []
        record = SimulatedPlatformRecord("ab" * 32, "laptop", "2030-01-02T00:00:00+00:00")
        assert store.add_simulated_platform(record) == (record, True)
        relabelled = SimulatedPlatformRecord("ab" * 32, "renamed", "2030-02-01T00:00:00+00:00")
        # Registering again keeps the first registration time and takes the new label.
        assert store.add_simulated_platform(relabelled) == (
            SimulatedPlatformRecord("ab" * 32, "renamed", record.created), False)
        assert store.list_simulated_platforms() == [
            SimulatedPlatformRecord("ab" * 32, "renamed", record.created)]
        assert store.remove_simulated_platform("ab" * 32) is not None
        assert store.remove_simulated_platform("ab" * 32) is None
        assert store.list_simulated_platforms() == []
        # The table refuses what is not a 32-byte key in hex, whatever calls it.
        with pytest.raises(KmsError, match="refused a write"):
            store.add_simulated_platform(SimulatedPlatformRecord("ab", "short", "2030"))
        assert store.integrity_check() == "ok"
    finally:
        store.close()


def test_sealed_versions_are_bound_to_app_name_and_version() -> None:
    root, primary = bytes(32), bytes(range(32))
    sealed = keyring.seal_primary(root, "app-a", "k", 1, primary)
    assert keyring.unseal_primary(root, "app-a", "k", 1, sealed) == primary
    for app, name, version in (("app-a", "k", 2), ("app-a", "other", 1), ("app-b", "k", 1),
                               ("app-", "ak", 1)):
        with pytest.raises(KmsError, match="does not unseal"):
            keyring.unseal_primary(root, app, name, version, sealed)
    # The form from before the app id was bound opens only through the one-time re-seal.
    old = legacy_sealed(root, "k", 1, primary)
    with pytest.raises(KmsError, match="does not unseal"):
        keyring.unseal_primary(root, "app-a", "k", 1, old)
    resealed = keyring.reseal_legacy_primary(root, "app-a", "k", 1, old)
    assert keyring.unseal_primary(root, "app-a", "k", 1, resealed) == primary
    wrapped = keyring.wrap(primary, "k", 3, b"d" * 32)
    assert keyring.wrapped_version("k", wrapped) == 3
    with pytest.raises(IntegrityError):
        keyring.open_wrapped(primary, "k", 2, wrapped)
    # The embedded keystore's blobs (formats 1 and 3) are named as such, not as malformed.
    for local in (b"\x01" + bytes(60), b"\x03" + bytes(68)):
        with pytest.raises(IntegrityError, match="wrapped by an embedded keystore"):
            keyring.wrapped_version("k", local)


def test_root_key_must_be_private(tmp_path: Path) -> None:
    init_data_dir(tmp_path / "d")
    root = tmp_path / "d" / "root.key"
    assert root.stat().st_mode & 0o777 == 0o600
    root.chmod(0o644)
    with pytest.raises(KmsError, match="chmod 600"):
        keyring.load_root_key(root)
    with pytest.raises(KmsError, match="already a KMS data directory"):
        init_data_dir(tmp_path / "d")


def test_scheduled_deletion_purges_after_the_grace_period(tmp_path: Path) -> None:
    init_data_dir(tmp_path / "d")
    opened = open_service(tmp_path / "d")
    storage, audit = opened.storage, opened.audit
    now = [datetime(2030, 1, 1, tzinfo=UTC)]
    clocked = KeyService(storage, keyring.load_root_key(tmp_path / "d" / "root.key"), audit,
                         hasher=keyring.SecretHasher(n=1 << 10), clock=lambda: now[0])
    creds = clocked.create_app("a", "r0")
    app = clocked.authenticate(creds.app_id, creds.api_key)
    clocked.create_key(app, "doomed", "r1")
    with pytest.raises(UsageError):
        clocked.schedule_deletion(app, "doomed", 0, "r2")
    clocked.schedule_deletion(app, "doomed", 7, "r3")
    now[0] += timedelta(days=6)
    assert clocked.purge_due_keys() == []
    assert clocked.describe_key(app, "doomed").deletion_date is not None
    now[0] += timedelta(days=2)
    assert clocked.purge_due_keys() == ["doomed"]
    with pytest.raises(KeyNotFoundError):
        clocked.describe_key(app, "doomed")
    assert storage.get_version(app.app_id, "doomed", 1) is None
    opened.close()


def test_tls_plan(tmp_path: Path) -> None:
    init_data_dir(tmp_path / "d")
    with pytest.raises(UsageError, match="go together"):
        plan_server(tmp_path / "d", tls_cert=tmp_path / "c.pem")
    plain = plan_server(tmp_path / "d", unsafe_plaintext=True)
    assert plain.url.startswith("http://") and plain.fingerprint is None
    plan = plan_server(tmp_path / "d", port=9443)
    assert plan.created_certificate and plan.url == "https://127.0.0.1:9443"
    assert plan.fingerprint is not None and len(plan.fingerprint.split(":")) == 32
    assert (tmp_path / "d" / "tls" / "key.pem").stat().st_mode & 0o777 == 0o600
    again = plan_server(tmp_path / "d")
    assert not again.created_certificate and again.fingerprint == plan.fingerprint


def test_failed_writes_leave_no_rows_and_no_open_transaction(tmp_path: Path) -> None:
    import dataclasses

    from cipherspark.errors import KeyExistsError
    from cipherspark.kms.server.permissions import Role
    from cipherspark.kms.server.storage import AppRecord, CredentialRecord, KeyRecord

    storage = sqlite_storage(tmp_path / "kms.db")
    try:
        for app in ("a", "b"):
            owner = CredentialRecord(f"cred-{app}", app, Role.OWNER, "", b"salt", b"hash",
                                     "2030-01-01T00:00:00Z")
            storage.create_app(AppRecord(app, app, "2030-01-01T00:00:00Z"), owner)
        # An app whose owner credential cannot be stored is not stored either (one transaction).
        with pytest.raises(KmsError, match="refused a write"):
            storage.create_app(AppRecord("c", "c", "2030"), dataclasses.replace(owner, app_id="c"))
        assert storage.get_app("c") is None
        record = KeyRecord(name="k", app_id="a", created="2030-01-01T00:00:00Z",
                           current_version=1, min_decryption_version=1, enabled=True,
                           deletion_date=None)
        storage.create_key(record, b"sealed-1")
        with pytest.raises(KeyExistsError):
            storage.create_key(record, b"other")
        # Names live in each app's namespace: app b may have its own "k".
        storage.create_key(dataclasses.replace(record, app_id="b"), b"other")
        assert storage.get_version("b", "k", 1) == b"other"
        # A rotation racing another one: the version row is not left behind.
        with pytest.raises(KmsError, match="changed during rotation"):
            storage.add_version("a", "k", 3, b"sealed-3", "2030-01-02T00:00:00Z")
        assert storage.get_version("a", "k", 3) is None
        assert storage.get_version("a", "k", 1) == b"sealed-1"
        key = storage.get_key("a", "k")
        assert key is not None and key.app_id == "a" and key.current_version == 1
        storage.add_version("a", "k", 2, b"sealed-2", "2030-01-02T00:00:00Z")
        assert storage.get_version("a", "k", 2) == b"sealed-2"
        assert storage.get_key("b", "k").current_version == 1  # type: ignore[union-attr]
    finally:
        storage.close()
