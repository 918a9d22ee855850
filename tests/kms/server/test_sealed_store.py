"""The sealed store, played by a storage attacker: every edit of ``kms.db`` (or of a backup)
that would move ownership, add or revive a credential, replace the admin hash, remove or loosen
a policy, re-enable a key, trust a platform, delete or roll back a row is refused at start (and
by ``kms restore``) with one line naming what failed, and nothing is changed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cipherspark.kms.server import verify_audit

from .conftest import cli, free_port, serving, start_server, stop_server

pytestmark = [pytest.mark.servers, pytest.mark.timeout(300)]

STRICT = {"sgx": {"mr_enclave": ["22" * 32]}}
PLATFORM = "ab" * 32


@dataclass(frozen=True)
class Pristine:
    """A stopped data directory built through a real server, and a backup taken before the
    workload credential ``revoked`` was revoked."""

    data: Path
    older: Path
    app_a: str
    app_b: str
    active: str
    revoked: str
    owner_a: dict[str, str] = field(repr=False)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Pristine:
    base = tmp_path_factory.mktemp("sealed")
    older = base / "older.db"
    with serving(base) as setup:
        a, b = setup.app_a, setup.app_b
        with setup.http() as http:
            for name in ("guarded", "shared", "off"):
                assert (
                    http.post("/v1/keys", json={"name": name}, headers=setup.headers(a)).status_code
                    == 201
                )
            assert (
                http.post("/v1/keys", json={"name": "shared"}, headers=setup.headers(b)).status_code
                == 201
            )
            assert (
                http.put(
                    "/v1/keys/guarded/policy", json={"policy": STRICT}, headers=setup.headers(a)
                ).status_code
                == 200
            )
            assert http.post("/v1/keys/off/disable", headers=setup.headers(a)).status_code == 200
        revoked = setup.workload(a, "to revoke")["credential_id"]
        active = setup.workload(a, "active")["credential_id"]
        with setup.admin() as admin:
            admin.register_simulated_platform(PLATFORM, "laptop")
        cli("kms", "backup", "--data", str(setup.server.data), str(older))
        with setup.admin() as admin:
            admin.revoke_credential(a["app_id"], revoked)
        data = setup.server.data
    return Pristine(data, older, a["app_id"], b["app_id"], active, revoked, a)


def copy_of(pristine: Pristine, tmp_path: Path) -> Path:
    """A copy of the pristine data directory to attack."""
    data = tmp_path / "data"
    shutil.copytree(pristine.data, data, ignore=shutil.ignore_patterns("server.lock"))
    return data


def edit(database: Path, sql: str, params: dict[str, str], attach: Path | None = None) -> None:
    """What someone with write access to the file does (foreign keys off, as sqlite3 opens)."""
    db = sqlite3.connect(database, isolation_level=None)
    try:
        if attach is not None:
            db.execute("ATTACH DATABASE ? AS old", (str(attach),))
        changed = db.execute(sql, params).rowcount
        assert changed == 1, sql
    finally:
        db.close()


def refused_start(data: Path) -> str:
    """Start ``kms serve`` on ``data``; it must exit non-zero with one line on stderr."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cipherspark",
            "kms",
            "serve",
            "--data",
            str(data),
            "--host",
            "127.0.0.1",
            "--port",
            str(free_port()),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError("the server started on an edited database") from None
    assert proc.returncode != 0, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# (what the attacker does, the SQL, what the refusal names)
EDITS = {
    "credential hash replaced": (
        "UPDATE credentials SET key_hash = randomblob(32) WHERE credential_id = :active",
        "credentials row cred-",
    ),
    "credential un-revoked": (
        "UPDATE credentials SET revoked = NULL WHERE credential_id = :revoked",
        "credentials row cred-",
    ),
    "credential added": (
        "INSERT INTO credentials(credential_id, app_id, role, label, key_salt, key_hash, "
        "created, seal) SELECT 'cred-00000000000000ff', app_id, 'owner', '', key_salt, "
        "key_hash, created, seal FROM credentials WHERE credential_id = :active",
        "credentials row cred-00000000000000ff",
    ),
    "admin hash replaced": (
        "UPDATE settings SET value = randomblob(48) WHERE name = 'admin_token'",
        "settings row admin_token",
    ),
    "key moved to another app": (
        "UPDATE keys SET app_id = :b WHERE app_id = :a AND name = 'off'",
        "keys row app-",
    ),
    "sealed primary copied across apps": (
        "UPDATE key_versions SET sealed = (SELECT sealed FROM key_versions WHERE app_id = :a "
        "AND key_name = 'shared') WHERE app_id = :b AND key_name = 'shared'",
        "key_versions row app-",
    ),
    "policy row deleted": (
        "DELETE FROM key_policies WHERE app_id = :a AND key_name = 'guarded'",
        "keys row app-",
    ),
    "policy loosened to {}": (
        "UPDATE key_policies SET policy = '{}' WHERE app_id = :a AND key_name = 'guarded'",
        "/guarded fails its seal",
    ),
    "key re-enabled": (
        "UPDATE keys SET enabled = 1 WHERE app_id = :a AND name = 'off'",
        "keys row app-",
    ),
    "platform row inserted": (
        "INSERT INTO simulated_platforms(public_key, label, created, seal) SELECT "
        "'" + "cd" * 32 + "', label, created, seal FROM simulated_platforms",
        "simulated_platforms row " + "cd" * 32,
    ),
    "a row deleted": (
        "DELETE FROM credentials WHERE credential_id = :active",
        "the store seal does not match its rows",
    ),
    "a row rolled back to an older backup's value": (
        "UPDATE credentials SET revoked = NULL, seal = (SELECT seal FROM old.credentials "
        "WHERE credential_id = :revoked) WHERE credential_id = :revoked",
        "the store seal does not match its rows",
    ),
}


@pytest.mark.parametrize("attack", list(EDITS))
def test_an_edited_database_is_refused_at_start(
    pristine: Pristine, tmp_path: Path, attack: str
) -> None:
    data = copy_of(pristine, tmp_path)
    sql, named = EDITS[attack]
    params = {
        "a": pristine.app_a,
        "b": pristine.app_b,
        "active": pristine.active,
        "revoked": pristine.revoked,
    }
    edit(data / "kms.db", sql, params, attach=pristine.older)
    before = {p.name: _digest(p) for p in (data / "kms.db", data / "audit.log")}
    message = refused_start(data)
    assert "the KMS database was changed outside the server" in message, message
    assert named in message, message
    # Nothing changed: no line appended, no row re-sealed.
    assert {p.name: _digest(p) for p in (data / "kms.db", data / "audit.log")} == before


def test_the_unedited_copy_starts(pristine: Pristine, tmp_path: Path) -> None:
    # The control of the test above: the same copy, not edited, serves.
    data = copy_of(pristine, tmp_path)
    stop_server(start_server(data, free_port(), tmp_path))


def test_an_edited_backup_is_refused_by_restore(pristine: Pristine, tmp_path: Path) -> None:
    data = copy_of(pristine, tmp_path)
    backup = tmp_path / "kms.backup"
    cli("kms", "backup", "--data", str(data), str(backup))
    edit(
        backup,
        "UPDATE credentials SET revoked = NULL WHERE credential_id = :revoked",
        {"revoked": pristine.revoked},
    )
    before = {p.name: _digest(p) for p in (data / "kms.db", data / "audit.log")}
    refused = cli("kms", "restore", "--data", str(data), "--from", str(backup), check=False)
    assert refused.returncode != 0
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert f"credentials row {pristine.revoked} fails its seal" in refused.stderr
    assert {p.name: _digest(p) for p in (data / "kms.db", data / "audit.log")} == before
    assert not list(data.glob("kms.db.*")), "nothing partial is left behind"
    # The unedited older backup restores (and the restore is audited).
    cli("kms", "restore", "--data", str(data), "--from", str(pristine.older))
    lines = [json.loads(line) for line in (data / "audit.log").read_text().splitlines()]
    assert lines[-1]["op"] == "restore" and verify_audit(data).entries == len(lines)


def test_a_database_rolled_back_behind_its_audit_log_is_refused(
    pristine: Pristine, tmp_path: Path
) -> None:
    # The older backup put in place by hand (not through 'kms restore'): the log records the
    # revocation the database lacks.
    data = copy_of(pristine, tmp_path)
    for stale in ("kms.db-wal", "kms.db-shm"):
        (data / stale).unlink(missing_ok=True)
    shutil.copy(pristine.older, data / "kms.db")
    message = refused_start(data)
    assert "older than its audit log" in message and "credential.revoke" in message, message


def test_an_audit_log_truncated_below_the_database_is_refused(
    pristine: Pristine, tmp_path: Path
) -> None:
    data = copy_of(pristine, tmp_path)
    lines = (data / "audit.log").read_bytes().splitlines(keepends=True)
    (data / "audit.log").write_bytes(b"".join(lines[:3]))
    message = refused_start(data)
    assert "the audit log ends at entry 3, before the KMS database's" in message, message


def test_a_row_edited_while_the_server_runs_is_refused_when_read(tmp_path: Path) -> None:
    with serving(tmp_path) as setup:
        workload = setup.workload(setup.app_a, "w")
        name_ok = "/v1/keys"
        with setup.http() as http:
            assert http.get(name_ok, headers=setup.headers(workload)).status_code == 200
            db = sqlite3.connect(setup.server.data / "kms.db", isolation_level=None, timeout=10)
            try:
                old = db.execute(
                    "SELECT revoked, seal FROM credentials WHERE credential_id = ?",
                    (workload["credential_id"],),
                ).fetchone()
                with setup.admin() as admin:
                    admin.revoke_credential(setup.app_a["app_id"], workload["credential_id"])
                assert http.get(name_ok, headers=setup.headers(workload)).status_code == 401
                # Roll the row back to its validly sealed, unrevoked value.
                db.execute(
                    "UPDATE credentials SET revoked = ?, seal = ? WHERE credential_id = ?",
                    (old[0], old[1], workload["credential_id"]),
                )
            finally:
                db.close()
            answer = http.get(name_ok, headers=setup.headers(workload))
            # Fail closed: the row is not the one the server sealed last.
            assert answer.status_code == 500 and answer.json()["code"] == "internal"
            # The owner's other rows are untouched and keep working.
            assert http.get(name_ok, headers=setup.headers(setup.app_a)).status_code == 200
        log = (setup.server.data / "audit.log").read_text()
    assert verify_audit(setup.server.data).entries == len(log.splitlines())
    # And the edit is refused at the next start.
    message = refused_start(setup.server.data)
    assert "the store seal does not match its rows" in message, message


@pytest.fixture()
def torn(pristine: Pristine, tmp_path: Path) -> Path:
    return copy_of(pristine, tmp_path)


def test_a_torn_last_audit_line_is_repaired_and_the_server_starts(
    torn: Path, tmp_path: Path
) -> None:
    entries = verify_audit(torn).entries
    with open(torn / "audit.log", "ab") as log:
        log.write(b'{"app":"admin","credential":null,"detail":null,"key":nu')
    server = start_server(torn, free_port(), tmp_path)
    stop_server(server)
    lines = [json.loads(line) for line in (torn / "audit.log").read_text().splitlines()]
    repair = [entry for entry in lines if entry["op"] == "audit_repair"]
    assert len(repair) == 1 and repair[0]["seq"] == entries + 1
    assert repair[0]["detail"]["torn_bytes"] == "55"
    assert verify_audit(torn).entries == len(lines)


def test_a_damaged_line_before_a_torn_tail_still_refuses(torn: Path) -> None:
    raw = (torn / "audit.log").read_bytes().splitlines(keepends=True)
    raw[2] = raw[2].replace(b'"result":"ok"', b'"result":"no"')
    (torn / "audit.log").write_bytes(b"".join(raw) + b'{"torn')
    message = refused_start(torn)
    assert "line 3 (seq 3) fails its MAC" in message, message
