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
    assert any(json.loads(line)["op"] == "kms.restore" for line in lines)


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
