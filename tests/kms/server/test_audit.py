"""The audit log: chained, verifiable, one line per operation, and free of secrets."""

from __future__ import annotations

import base64
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from cipherspark.errors import VerificationError
from cipherspark.kms.server import keyring, verify_audit
from cipherspark.kms.server.audit import verify_audit_log
from tests.kms.server.conftest import KmsSetup, cli, unique

pytestmark = pytest.mark.servers


def _lines(setup: KmsSetup) -> list[dict[str, object]]:
    text = (setup.server.data / "audit.log").read_text()
    return [json.loads(line) for line in text.splitlines()]


def test_one_line_per_operation_with_request_id(setup: KmsSetup) -> None:
    name = unique("audit")
    with setup.http() as http:
        http.post("/v1/keys", json={"name": name}, headers=setup.headers())
        before = len(_lines(setup))
        response = http.post(f"/v1/keys/{name}/datakey/plaintext", headers=setup.headers())
        denied = http.post(f"/v1/keys/{name}/rotate", headers=setup.headers(setup.app_b))
    after = _lines(setup)
    assert len(after) == before + 2
    ok, refused = after[-2], after[-1]
    assert ok["request_id"] == response.headers["x-request-id"]
    assert (ok["op"], ok["key"], ok["version"], ok["result"], ok["app"]) == \
        ("datakey.plaintext", name, 1, "ok", setup.app_a["app_id"])
    assert refused["request_id"] == denied.headers["x-request-id"]
    # Another app's key is a missing key to app B (its own namespace).
    assert (refused["result"], refused["app"]) == ("KeyNotFoundError",
                                                   setup.app_b["app_id"])


def test_chain_verifies_and_detects_edits_and_deletions(setup: KmsSetup,
                                                         tmp_path: Path) -> None:
    with setup.kms() as kms:
        name = unique("chain")
        kms.create_key(name)
        for _ in range(3):
            kms.generate_data_key(name)
    report = verify_audit(setup.server.data)
    assert report.entries == len(_lines(setup)) >= 5
    verified = cli("kms", "audit", "verify", "--data", str(setup.server.data))
    assert f"{report.entries} entries" in verified.stdout

    root = keyring.load_root_key(setup.server.data / "root.key")
    copy = tmp_path / "audit.log"
    shutil.copy(setup.server.data / "audit.log", copy)
    lines = copy.read_text().splitlines(keepends=True)

    edited = list(lines)
    edited[2] = edited[2].replace('"result":"ok"', '"result":"denied"')
    assert edited[2] != lines[2]
    copy.write_text("".join(edited))
    with pytest.raises(VerificationError, match=r"line 3 .* fails its MAC"):
        verify_audit_log(copy, root)

    # Editing the last line is caught too: its MAC needs the root key.
    last = json.loads(lines[-1])
    last["result"] = "ok" if last["result"] != "ok" else "refused"
    copy.write_text("".join([*lines[:-1], json.dumps(last, sort_keys=True) + "\n"]))
    with pytest.raises(VerificationError):
        verify_audit_log(copy, root)

    copy.write_text("".join(lines[:3] + lines[4:]))
    with pytest.raises(VerificationError, match="line 4: sequence"):
        verify_audit_log(copy, root)

    copy.write_text("".join([*lines[:3], "{broken\n", *lines[3:]]))
    with pytest.raises(VerificationError, match="line 4 is not a valid entry"):
        verify_audit_log(copy, root)

    # The CLI reports a broken chain as one error line and exit 1.
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(setup.server.data / "root.key", data / "root.key")
    (data / "audit.log").write_text("".join(lines[:3] + lines[4:]))
    failed = cli("kms", "audit", "verify", "--data", str(data), check=False)
    assert failed.returncode == 1 and "sequence" in failed.stderr


def test_no_key_material_or_api_keys_in_logs(setup: KmsSetup) -> None:
    secrets: list[bytes] = [setup.app_a["api_key"].encode(), setup.app_b["api_key"].encode(),
                            setup.admin_token.encode()]
    with setup.kms() as kms:
        name = unique("secrets")
        kms.create_key(name)
        for _ in range(3):
            data_key = kms.generate_data_key(name)
            unwrapped = kms.unwrap_data_key(name, data_key.wrapped)
            secrets += [data_key.plaintext, base64.b64encode(unwrapped),
                        data_key.plaintext.hex().encode()]
    root = keyring.load_root_key(setup.server.data / "root.key")
    sealed = []
    db = sqlite3.connect(f"file:{setup.server.data / 'kms.db'}?mode=ro", uri=True)
    try:
        for app_id, key_name, version, blob in db.execute(
                "SELECT app_id, key_name, version, sealed FROM key_versions"):
            sealed.append(keyring.unseal_primary(root, app_id, key_name, version, bytes(blob)))
        db_bytes = b"".join(bytes(r[0]) for r in db.execute("SELECT key_hash FROM credentials"))
    finally:
        db.close()
    assert sealed, "the database should hold sealed primary keys"
    for primary in sealed:
        secrets += [primary, base64.b64encode(primary), primary.hex().encode()]
    secrets += [root, base64.b64encode(root), root.hex().encode()]
    logs = [setup.server.data / "audit.log", setup.server.stdout, setup.server.stderr]
    contents = b"".join(path.read_bytes() for path in logs)
    assert len(contents) > 1000
    for secret in secrets:
        assert secret not in contents
    database = b"".join(p.read_bytes() for p in setup.server.data.glob("kms.db*"))
    for primary in sealed:
        assert primary not in database
    assert setup.app_a["api_key"].encode() not in database + db_bytes
