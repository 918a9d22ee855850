"""The audit outbox: a state change and its audit entry commit together, so a process that dies
between the commit and the log write (or in the middle of it) leaves an entry the next open
appends; a torn last line is repaired; failures are audited after the rollback."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cipherspark.errors import KmsError
from cipherspark.kms.server import init_data_dir, open_service, verify_audit


def _ops(data: Path) -> list[str]:
    """The operations of the complete lines of the audit log."""
    complete = (data / "audit.log").read_text().split("\n")[:-1]
    return [json.loads(line)["op"] for line in complete]


def _die_in_the_log_write(data: Path, keep: int) -> None:
    """Create key 'k' in a separate process that dies (os._exit, no clean-up: what SIGKILL
    leaves) when it writes the audit line, after writing ``keep`` bytes of it."""
    script = textwrap.dedent(f"""
        import os
        from cipherspark.kms.server import open_service
        from cipherspark.kms.server.audit import AuditLog

        opened = open_service({str(data)!r})
        creds = opened.service.create_app("a", "-")
        owner = opened.service.authenticate(creds.app_id, creds.api_key)

        def crash(self, seq, mac, line):
            os.write(self._fd, line[:{keep}])
            os._exit(9)

        AuditLog.append_line = crash
        opened.service.create_key(owner, "k", "req-k")
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 9, done.stderr


@pytest.mark.parametrize("keep", [0, 37])
def test_a_change_committed_before_a_crash_in_its_log_write_gets_its_line(
    tmp_path: Path, keep: int
) -> None:
    data = init_data_dir(tmp_path / "d").data_dir
    _die_in_the_log_write(data, keep)
    assert _ops(data)[-1] == "app.create"  # the line of the committed key is missing
    with open_service(data) as opened:
        assert opened.storage.get_key(_app(data), "k") is not None
    ops = _ops(data)
    # The torn part (if any) was cut off and audited; the entry came back from the outbox.
    expected = ["app.create", "key.create"] + (["audit_repair"] if keep else [])
    assert ops[-len(expected) :] == expected
    assert verify_audit(data).entries == len(ops)


def _app(data: Path) -> str:
    for line in (data / "audit.log").read_text().splitlines():
        entry = json.loads(line)
        if entry["op"] == "app.create":
            return str(entry["detail"]["app_id"])
    raise AssertionError("no app.create line")


def test_a_failed_change_is_audited_after_its_rollback(tmp_path: Path) -> None:
    data = init_data_dir(tmp_path / "d").data_dir
    with open_service(data) as opened:
        creds = opened.service.create_app("a", "-")
        owner = opened.service.authenticate(creds.app_id, creds.api_key)
        opened.service.create_key(owner, "k", "-")
        with pytest.raises(KmsError):
            opened.service.create_key(owner, "k", "-")
        outbox = opened.storage._db.execute("SELECT count(*) FROM audit_outbox").fetchone()[0]
    lines = [json.loads(line) for line in (data / "audit.log").read_text().splitlines()]
    assert [(e["op"], e["result"]) for e in lines[-2:]] == [
        ("key.create", "ok"),
        ("key.create", "KeyExistsError"),
    ]
    assert outbox <= 1  # at most the last committed entry, until the next transaction
    # Reopening appends nothing twice.
    with open_service(data):
        pass
    assert verify_audit(data).entries == len(lines)


def test_a_damaged_outbox_entry_is_refused(tmp_path: Path) -> None:
    import sqlite3

    data = init_data_dir(tmp_path / "d").data_dir
    _die_in_the_log_write(data, 0)
    db = sqlite3.connect(data / "kms.db", isolation_level=None)
    try:
        db.execute("UPDATE audit_outbox SET line = replace(line, 'key.create', 'key.cre8e')")
    finally:
        db.close()
    before = (data / "audit.log").read_bytes()
    with pytest.raises(KmsError, match="does not continue the audit log"):
        open_service(data)
    assert (data / "audit.log").read_bytes() == before
