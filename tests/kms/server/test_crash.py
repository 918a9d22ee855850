"""Crash safety: SIGKILL during a stream of writes loses nothing that was acknowledged, and
leaves no state change without its audit line."""

from __future__ import annotations

import itertools
import json
import signal
import sqlite3
import threading
import time
from collections import Counter
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


def _audited_versions(log: Path) -> Counter[tuple[str, str]]:
    """(app, key) -> how many versions the audit log says were made: one per ``key.create``
    and ``key.rotate`` that succeeded."""
    made: Counter[tuple[str, str]] = Counter()
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        if entry["op"] in ("key.create", "key.rotate") and entry["result"] == "ok":
            made[(entry["app"], entry["key"])] += 1
    return made


def test_sigkill_under_rotation_load_leaves_no_state_without_its_audit_line(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    token = json.loads(cli("kms", "init", "--data", str(data), "--json").stdout)["admin_token"]
    server = start_server(data, free_port(), tmp_path, "round-0")
    with KmsAdmin(server.url, token, ca_file=server.ca) as admin:
        app = admin.create_app("rotations")
    creds = Credentials(app.app_id, app.api_key)
    acknowledged: dict[str, int] = {}

    def writer(tag: str, url: str, ca: Path) -> None:
        with RemoteKms(url, creds, ca_file=ca) as kms:
            for i in itertools.count():
                name = f"{tag}-{i}"
                try:
                    acknowledged[name] = kms.create_key(name).version
                    for _ in range(3):
                        acknowledged[name] = kms.rotate_key(name).version
                except KmsError:
                    return

    kills = 5
    for round_ in range(kills):
        if round_:
            server = start_server(data, free_port(), tmp_path, f"round-{round_}")
        threads = [threading.Thread(target=writer, args=(f"r{round_}t{t}", server.url, server.ca))
                   for t in range(2)]
        for thread in threads:
            thread.start()
        time.sleep(0.8 + 0.3 * round_)
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()
        for thread in threads:
            thread.join(timeout=20)
            assert not thread.is_alive()
    # One more start: it appends what the outbox holds and repairs a torn last line.
    stop_server(start_server(data, free_port(), tmp_path, "after"))
    assert len(acknowledged) >= kills * 2, "every round should have made progress"

    db = sqlite3.connect(f"file:{data / 'kms.db'}?mode=ro", uri=True)
    try:
        stored = {(str(a), str(n)): int(v) for a, n, v in db.execute(
            "SELECT app_id, name, current_version FROM keys")}
    finally:
        db.close()
    for name, version in acknowledged.items():
        assert stored[(app.app_id, name)] >= version, name
    # Every version in the database has its line, and every line its version: no state
    # without its audit line, no line for a change that was rolled back.
    assert _audited_versions(data / "audit.log") == Counter(stored)
    assert verify_audit(data).entries == len((data / "audit.log").read_text().splitlines())
