"""Crash safety: SIGKILL during a stream of writes loses nothing that was acknowledged."""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from cipherspark.errors import KmsError
from cipherspark.kms import Credentials
from cipherspark.kms.remote import KmsAdmin, RemoteKms
from cipherspark.kms.server import verify_audit
from tests.kms.server.conftest import cli, free_port, start_server, stop_server

pytestmark = pytest.mark.servers


def test_sigkill_keeps_every_acknowledged_key_and_version(tmp_path: Path) -> None:
    data = tmp_path / "data"
    token = json.loads(cli("kms", "init", "--data", str(data), "--json").stdout)["admin_token"]
    server = start_server(data, free_port(), tmp_path, "before")
    admin = KmsAdmin(server.url, token, ca_file=server.ca)
    app = admin.create_app("crash")
    admin.close()
    creds = Credentials(app.app_id, app.api_key)

    versions: dict[str, int] = {}
    data_keys: list[tuple[str, bytes, bytes]] = []
    stop = threading.Event()

    def writer() -> None:
        with RemoteKms(server.url, creds, ca_file=server.ca) as kms:
            i = 0
            while not stop.is_set():
                name = f"crash-{i}"
                try:
                    versions[name] = kms.create_key(name).version
                    versions[name] = kms.rotate_key(name).version
                    dk = kms.generate_data_key(name)
                    data_keys.append((name, dk.wrapped, dk.plaintext))
                except KmsError:
                    return
                i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(1.5)
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait()
    stop.set()
    thread.join(timeout=20)
    assert not thread.is_alive()
    assert len(versions) >= 5, "the stream should have made progress before the kill"

    db = sqlite3.connect(data / "kms.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        db.close()

    restarted = start_server(data, free_port(), tmp_path, "after")
    try:
        with RemoteKms(restarted.url, creds, ca_file=restarted.ca) as kms:
            stored = {k.name: k.version for k in kms.list_keys()}
            for name, version in versions.items():
                assert stored[name] >= version, name
            for name, wrapped, plaintext in data_keys:
                assert kms.unwrap_data_key(name, wrapped) == plaintext
        assert verify_audit(data).entries >= len(versions) + len(data_keys)
    finally:
        stop_server(restarted)
