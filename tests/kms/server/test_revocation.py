"""Revocation takes effect at once, against a real TLS server.

A revoked credential, a disabled app, a credential or app row deleted by hand in SQLite, and the
old admin token after a rotation are each refused on their very next request, although the
credential's login was verified and cached just before: the cache skips scrypt, never the check
of the credential's and the app's current state. Each case is tried on the lean route (unwrap
with a warm login cache), on a FastAPI route with a cached login (describe), and on Transit.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator

import httpx
import pytest

from tests.kms.server.conftest import KmsSetup, cli, pinned, serving, unique

pytestmark = pytest.mark.servers


class Probe:
    """A credential's three kinds of request on one key of its app, from one client."""

    def __init__(self, setup: KmsSetup, creds: dict[str, str], name: str, wrapped: str) -> None:
        self.http = setup.http()
        self.creds, self.name, self.wrapped = creds, name, wrapped
        self.native = {"X-App-Id": creds["app_id"], "X-Api-Key": creds["api_key"]}

    def statuses(self) -> tuple[int, int, int]:
        """(lean unwrap, describe, Transit read) statuses."""
        unwrap = self.http.post(f"/v1/keys/{self.name}/unwrap", headers=self.native,
                                json={"wrapped": self.wrapped})
        describe = self.http.get(f"/v1/keys/{self.name}", headers=self.native)
        transit = self.http.get(f"/v1/transit/keys/{self.name}",
                                headers={"X-Vault-Token": self.creds["vault_token"]})
        return unwrap.status_code, describe.status_code, transit.status_code

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def app(setup: KmsSetup) -> dict[str, str]:
    """A fresh app of its own (its state changes touch no other test): its owner credential."""
    return setup.new_app(unique("revocation"))


def probe(setup: KmsSetup, creds: dict[str, str], owner: dict[str, str]) -> Probe:
    """A probe on a new key of ``owner``'s app (no policy: a workload may unwrap), warm."""
    name = unique("revoke")
    with setup.http() as http:
        assert http.post("/v1/keys", json={"name": name},
                         headers=setup.headers(owner)).status_code == 201
        wrapped = http.post(f"/v1/keys/{name}/datakey/wrapped",
                            headers=setup.headers(owner)).json()["wrapped"]
    found = Probe(setup, creds, name, wrapped)
    assert found.statuses() == (200, 200, 200)  # verified and cached now
    return found


def database(setup: KmsSetup) -> sqlite3.Connection:
    """The server's database, as someone with a shell on the server would open it (foreign
    keys off: deleting an app row by hand leaves its credentials and keys behind)."""
    return sqlite3.connect(setup.server.data / "kms.db", timeout=10, isolation_level=None)


def test_a_revoked_credential_is_refused_on_its_next_request(setup: KmsSetup,
                                                             app: dict[str, str]) -> None:
    workload = setup.workload(app)
    probe_w, probe_o = probe(setup, workload, app), probe(setup, app, app)
    try:
        with setup.admin() as admin:
            revoked = admin.revoke_credential(app["app_id"], workload["credential_id"])
        assert revoked.revoked is not None and revoked.role == "workload"
        assert probe_w.statuses() == (401, 401, 401)
        assert probe_o.statuses() == (200, 200, 200)  # the app's other credential is untouched
        # The owner credential can be revoked too (after minting a new one with the admin
        # token): its old API key is refused at once.
        with setup.admin() as admin:
            new_owner = admin.create_credential(app["app_id"], "owner", "rotated owner")
            admin.revoke_credential(app["app_id"], app["credential_id"])
            listed = {c.credential_id: c for c in admin.credentials(app["app_id"])}
        assert probe_o.statuses() == (401, 401, 401)
        assert listed[app["credential_id"]].revoked and listed[new_owner.credential_id].role \
            == "owner"
        rotated = {**app, "api_key": new_owner.api_key, "vault_token": new_owner.vault_token}
        fresh = probe(setup, rotated, rotated)
        fresh.close()
    finally:
        probe_w.close()
        probe_o.close()
    lines = [json.loads(x) for x in (setup.server.data / "audit.log").read_text().splitlines()]
    revocations = [e for e in lines if e["op"] == "credential.revoke"
                   and e["detail"] and e["detail"].get("app_id") == app["app_id"]]
    assert [(e["app"], e["detail"]["credential_id"], e["result"]) for e in revocations] == [
        ("admin", workload["credential_id"], "ok"), ("admin", app["credential_id"], "ok")]


def test_a_disabled_app_is_refused_on_its_next_request(setup: KmsSetup,
                                                       app: dict[str, str]) -> None:
    workload = setup.workload(app)
    probes = [probe(setup, workload, app), probe(setup, app, app)]
    other = probe(setup, setup.app_b, setup.app_b)
    flags = ["--kms", setup.server.url, "--kms-ca", str(setup.server.ca)]
    token = {"CIPHERSPARK_KMS_ADMIN_TOKEN": setup.admin_token}
    try:
        disabled = cli("kms", "app", "disable", app["app_id"], *flags, env=token)
        assert f"disabled the app {app['app_id']}" in disabled.stdout
        assert [p.statuses() for p in probes] == [(401, 401, 401)] * 2
        assert other.statuses() == (200, 200, 200)
        # Enabled again, its (unrevoked) credentials work again.
        enabled = cli("kms", "app", "enable", app["app_id"], *flags, env=token)
        assert f"enabled the app {app['app_id']}" in enabled.stdout
        assert [p.statuses() for p in probes] == [(200, 200, 200)] * 2
        unknown = cli("kms", "app", "disable", "app-0000000000000000", *flags, env=token,
                      check=False)
        assert unknown.returncode == 1 and "no app" in unknown.stderr
    finally:
        for p in [*probes, other]:
            p.close()


def test_rows_deleted_by_hand_are_refused_on_the_next_request(setup: KmsSetup,
                                                              app: dict[str, str]) -> None:
    workload = setup.workload(app)
    by_credential, by_app = probe(setup, workload, app), probe(setup, app, app)
    try:
        db = database(setup)
        try:
            db.execute("DELETE FROM credentials WHERE credential_id = ?",
                       (workload["credential_id"],))
            assert by_credential.statuses() == (401, 401, 401)
            assert by_app.statuses() == (200, 200, 200)
            db.execute("DELETE FROM apps WHERE app_id = ?", (app["app_id"],))
            assert by_app.statuses() == (401, 401, 401)
        finally:
            db.close()
    finally:
        by_credential.close()
        by_app.close()


# -- the admin token ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rotating(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KmsSetup]:
    """A server of its own: rotating the session server's token would lock the others out."""
    with serving(tmp_path_factory.mktemp("kms-rotate")) as fresh:
        yield fresh


def test_the_old_admin_token_is_refused_after_rotation(rotating: KmsSetup) -> None:
    flags = ["--kms", rotating.server.url, "--kms-ca", str(rotating.server.ca)]
    old = {"CIPHERSPARK_KMS_ADMIN_TOKEN": rotating.admin_token}
    listed = cli("kms", "simulated-platform", "list", *flags, env=old)
    assert listed.returncode == 0
    with httpx.Client(base_url=rotating.server.url, verify=pinned(rotating.server.ca)) as http:
        # A client that keeps its connection open is refused on its next request too.
        assert http.get("/metrics", headers={"X-Admin-Token": rotating.admin_token}
                        ).status_code == 200
        rotated = json.loads(cli("kms", "admin-token", "rotate", "--json", *flags,
                                 env=old).stdout)
        token = rotated["admin_token"]
        assert token and token != rotating.admin_token
        assert http.get("/metrics", headers={"X-Admin-Token": rotating.admin_token}
                        ).status_code == 401
        assert http.get("/metrics", headers={"X-Admin-Token": token}).status_code == 200
    refused = cli("kms", "simulated-platform", "list", *flags, env=old, check=False)
    assert refused.returncode == 1 and "rejected the credentials" in refused.stderr
    new = {"CIPHERSPARK_KMS_ADMIN_TOKEN": token}
    again = cli("kms", "admin-token", "rotate", *flags, env=new)
    assert again.stdout.startswith("ADMIN TOKEN: ") and token not in again.stdout
    assert "old one is refused" in again.stdout
    lines = (rotating.server.data / "audit.log").read_text()
    assert token not in lines and rotating.admin_token not in lines
    # (kms init's first token is audited as a rotation too, request id "init")
    rotations = [json.loads(x) for x in lines.splitlines()
                 if json.loads(x)["op"] == "admin_token.rotate"
                 and json.loads(x)["request_id"] != "init"]
    assert [(e["app"], e["result"]) for e in rotations] == [("admin", "ok")] * 2
    db = sqlite3.connect(f"file:{rotating.server.data / 'kms.db'}?mode=ro", uri=True)
    try:
        stored = bytes(db.execute("SELECT value FROM settings WHERE name = 'admin_token'"
                                  ).fetchone()[0])
    finally:
        db.close()
    assert token.encode() not in stored and len(stored) == 16 + 32  # salt, scrypt hash
