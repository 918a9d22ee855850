"""``kms backup`` / ``kms restore`` against a real server process, and their refusals."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import httpx
import pytest

from cipherspark.errors import KmsError
from cipherspark.kms.remote import KmsAdmin
from cipherspark.kms.server import (
    backup_data_dir,
    init_data_dir,
    open_service,
    restore_data_dir,
    verify_audit,
)

from .conftest import cli, free_port, pinned, start_server, stop_server

pytestmark = [pytest.mark.servers, pytest.mark.timeout(180)]


def test_restore_brings_back_the_backed_up_state(tmp_path: Path) -> None:
    data = tmp_path / "data"
    token = json.loads(cli("kms", "init", "--data", str(data), "--json").stdout)["admin_token"]
    server = start_server(data, free_port(), tmp_path)
    try:
        admin = KmsAdmin(server.url, token, ca_file=server.ca)
        app = admin.create_app("restore")
        admin.close()
        headers = {"X-App-Id": app.app_id, "X-Api-Key": app.api_key}
        with httpx.Client(base_url=server.url, verify=pinned(server.ca), headers=headers,
                          timeout=10) as http:
            assert http.post("/v1/keys", json={"name": "kept"}).status_code == 201
            made = http.post("/v1/keys/kept/datakey/plaintext").json()
            backup = tmp_path / "kms.backup"
            cli("kms", "backup", "--data", str(data), str(backup))
            # After the backup: a rotation and a new key, which the restore must undo.
            assert http.post("/v1/keys/kept/rotate").json()["version"] == 2
            assert http.post("/v1/keys", json={"name": "later"}).status_code == 201
            refused = cli("kms", "restore", "--data", str(data), "--from", str(backup),
                          check=False)
            assert refused.returncode != 0
            assert "a KMS server is running" in refused.stderr + refused.stdout
    finally:
        stop_server(server)

    done = cli("kms", "restore", "--data", str(data), "--from", str(backup))
    assert "restored the KMS database" in done.stdout
    assert list(data.glob("kms.db.pre-restore-*"))
    server = start_server(data, free_port(), tmp_path, tag="restored")
    try:
        with httpx.Client(base_url=server.url, verify=pinned(server.ca), headers=headers,
                          timeout=10) as http:
            assert http.get("/v1/keys/kept").json()["version"] == 1
            assert http.get("/v1/keys/later").status_code == 404
            unwrapped = http.post("/v1/keys/kept/unwrap", json={"wrapped": made["wrapped"]})
            assert unwrapped.json()["plaintext"] == made["plaintext"]
    finally:
        stop_server(server)
    report = verify_audit(data)
    lines = (data / "audit.log").read_text().splitlines()
    assert report.entries == len(lines)
    ops = [json.loads(line) for line in lines]
    (backed,) = [e for e in ops if e["op"] == "backup"]
    (restored,) = [e for e in ops if e["op"] == "restore"]
    # Both name the file's digest and the store-seal head the backup carried, never a secret.
    assert backed["detail"]["destination_digest"] == restored["detail"]["source_digest"]
    assert backed["detail"]["store_seq"] == restored["detail"]["store_seq"]


def test_restore_refuses_bad_backups(tmp_path: Path) -> None:
    first = init_data_dir(tmp_path / "one").data_dir
    other = init_data_dir(tmp_path / "two").data_dir
    # A backup sealed under another root key.
    with open_service(other) as opened:
        creds = opened.service.create_app("x", "-")
        owner = opened.service.authenticate(creds.app_id, creds.api_key)
        opened.service.create_key(owner, "k", "-")
    foreign = tmp_path / "foreign.db"
    backup_data_dir(other, foreign)
    with pytest.raises(KmsError, match="root key"):
        restore_data_dir(first, foreign)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not sqlite" * 100)
    with pytest.raises(KmsError, match="not a KMS database"):
        restore_data_dir(first, garbage)
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).execute("CREATE TABLE schema_migrations(version INTEGER)").connection \
        .close()
    with pytest.raises(KmsError):
        restore_data_dir(first, empty)
    with pytest.raises(KmsError, match="does not exist"):
        restore_data_dir(first, tmp_path / "missing.db")


def test_a_backup_is_a_new_file_mode_0600_from_its_creation(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import stat

    from cipherspark.kms.server import datadir

    data = init_data_dir(tmp_path / "d").data_dir
    seen: list[tuple[Path, int, int]] = []
    copy = datadir._copy_database

    def observed(source: Path, destination: Path, *, read_only: bool) -> None:
        # The file as it is before a byte of the database is in it.
        st = os.lstat(destination)
        seen.append((destination, stat.S_IMODE(st.st_mode), st.st_size))
        copy(source, destination, read_only=read_only)

    monkeypatch.setattr(datadir, "_copy_database", observed)
    umask = os.umask(0)  # the mode must come from the creation itself, not from the umask
    try:
        report = backup_data_dir(data, tmp_path / "kms.backup")
    finally:
        os.umask(umask)
    assert seen == [(tmp_path / "kms.backup", 0o600, 0)]
    assert stat.S_IMODE((tmp_path / "kms.backup").stat().st_mode) == 0o600
    assert report.digest.startswith("sha256:") and report.audit_seq >= 1
    # Never written into a file that exists, nor through a link to someone else's file.
    existing = tmp_path / "exists.db"
    existing.write_bytes(b"theirs")
    victim = tmp_path / "victim"
    victim.write_bytes(b"theirs")
    (tmp_path / "link.db").symlink_to(victim)
    for target in (existing, tmp_path / "link.db"):
        with pytest.raises(KmsError, match="exists already"):
            backup_data_dir(data, target)
    assert existing.read_bytes() == victim.read_bytes() == b"theirs"
    assert len(seen) == 1
    lines = [json.loads(x) for x in (data / "audit.log").read_text().splitlines()]
    assert [e["op"] for e in lines].count("backup") == 1
    assert lines[-1]["detail"] == {"destination_digest": report.digest,
                                   "store_seq": str(report.audit_seq),
                                   "store_mac": report.audit_mac}


def test_a_lost_data_directory_is_rebuilt_from_a_backup_and_its_root_key(tmp_path: Path) -> None:
    import shutil

    data = init_data_dir(tmp_path / "d").data_dir
    with open_service(data) as opened:
        creds = opened.service.create_app("x", "-")
        owner = opened.service.authenticate(creds.app_id, creds.api_key)
        opened.service.create_key(owner, "k", "-")
        _, data_key, wrapped = opened.service.generate_data_key(owner, "k", "-")
    backup_data_dir(data, tmp_path / "kms.backup")
    fresh = tmp_path / "fresh"
    fresh.mkdir(mode=0o700)
    shutil.copy(data / "root.key", fresh / "root.key")
    assert restore_data_dir(fresh, tmp_path / "kms.backup") is None
    with open_service(fresh) as opened:
        owner = opened.service.authenticate(creds.app_id, creds.api_key)
        assert opened.service.unwrap(owner, "k", wrapped, "-")[1] == data_key
        opened.service.rotate(owner, "k", "-")
    lines = [json.loads(x) for x in (fresh / "audit.log").read_text().splitlines()]
    assert lines[0]["op"] == "restore" and lines[0]["detail"]["audit_log"] == "new"
    assert [e["op"] for e in lines] == ["restore", "datakey.unwrap", "key.rotate"]
    # A directory that has its database but lost its log is refused, as a truncated log is.
    (fresh / "audit.log").unlink()
    with pytest.raises(KmsError, match="the audit log ends at entry 0"):
        open_service(fresh)
