"""Simulated TEE platforms are registered by the KMS operator, not by key owners.

Through a real server (TLS, subprocess): the admin API and its checks (token, hex, body), the
audit lines, the CLI, and what attested release does with the registrations: a policy's
``simulated.platform_keys`` count only where the operator registered them too.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cipherspark.attestation import (
    AttestationPolicy,
    SimulatedProvider,
    code_measurement,
    load_simulated_platform_key,
    simulated_platform_public_key,
)
from cipherspark.errors import PolicyDeniedError
from cipherspark.kms.remote import RemoteKms
from cipherspark.kms.server import verify_audit
from tests.kms.server.conftest import KmsSetup, cli, serving, unique

pytestmark = pytest.mark.servers

ADMIN_PATH = "/v1/admin/simulated-platforms"


def new_platform(tmp_path: Path) -> tuple[SimulatedProvider, str]:
    """A fresh simulated platform (its own key file) and its public key."""
    path = tmp_path / f"platform-{uuid.uuid4().hex[:8]}.key"
    public = simulated_platform_public_key(load_simulated_platform_key(path))
    return SimulatedProvider(key_path=path), public


def policy_for(*platform_keys: str) -> AttestationPolicy:
    return AttestationPolicy.from_dict({
        "tee_types": ["simulated"],
        "simulated": {"platform_keys": list(platform_keys),
                      "measurements": [code_measurement()]}})


def key_with(kms: RemoteKms, policy: AttestationPolicy) -> str:
    name = unique("simplat")
    kms.create_key(name)
    kms.set_policy(name, policy)
    return name


def audit(setup: KmsSetup) -> list[dict[str, Any]]:
    text = (setup.server.data / "audit.log").read_text()
    return [json.loads(line) for line in text.splitlines()]


def unwrap_results(setup: KmsSetup, name: str) -> list[str]:
    return [e["result"] for e in audit(setup)
            if e["key"] == name and e["op"] == "datakey.attested_unwrap"]


def stored_keys(setup: KmsSetup) -> set[str]:
    """What the database holds, read directly (not through the API under test)."""
    db = sqlite3.connect(f"file:{setup.server.data / 'kms.db'}?mode=ro", uri=True)
    try:
        return {str(r[0]) for r in db.execute("SELECT public_key FROM simulated_platforms")}
    finally:
        db.close()


def admin_headers(setup: KmsSetup, token: str | None = None) -> dict[str, str]:
    return {"X-Admin-Token": setup.admin_token if token is None else token}


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KmsSetup]:
    """A server of its own, so that no test can have registered a platform there."""
    with serving(tmp_path_factory.mktemp("kms-bare")) as fresh:
        yield fresh


# -- attested release -----------------------------------------------------------------------------


def test_no_registered_platform_denies_with_the_fix(bare: KmsSetup, tmp_path: Path) -> None:
    provider, public = new_platform(tmp_path)
    with bare.admin() as admin:
        assert admin.simulated_platforms() == []
    with bare.kms() as kms:
        name = key_with(kms, policy_for(public))
        data_key = kms.generate_data_key(name)
        with pytest.raises(PolicyDeniedError) as info:
            kms.attested_unwrap(name, data_key.wrapped, provider)
        assert info.value.reason == "signature"
        assert "no simulated platform is registered at this KMS" in str(info.value)
        assert "cipherspark kms simulated-platform add KEY" in str(info.value)
        # The policy alone was the problem's other half: once the operator registers the
        # platform, the same key and evidence source are released.
        with bare.admin() as admin:
            admin.register_simulated_platform(public, "bare")
        try:
            assert kms.attested_unwrap(name, data_key.wrapped, provider) == data_key.plaintext
        finally:
            with bare.admin() as admin:
                admin.remove_simulated_platform(public)
    assert unwrap_results(bare, name) == ["denied:signature", "ok"]


def test_a_policy_cannot_add_a_platform_the_operator_did_not_register(
        setup: KmsSetup, tmp_path: Path) -> None:
    registered, registered_key = new_platform(tmp_path)
    stranger, stranger_key = new_platform(tmp_path)
    with setup.admin() as admin:
        admin.register_simulated_platform(registered_key, "operator's")
    try:
        with setup.kms() as kms:
            # The key's owner lists both platforms; only the registered one is trusted.
            name = key_with(kms, policy_for(registered_key, stranger_key))
            data_key = kms.generate_data_key(name)
            with pytest.raises(PolicyDeniedError) as info:
                kms.attested_unwrap(name, data_key.wrapped, stranger)
            assert info.value.reason == "signature"
            assert f"{stranger_key} is not registered at this KMS" in str(info.value)
            assert f"simulated-platform add {stranger_key}" in str(info.value)
            assert kms.attested_unwrap(name, data_key.wrapped, registered) == data_key.plaintext
    finally:
        with setup.admin() as admin:
            admin.remove_simulated_platform(registered_key)
    assert unwrap_results(setup, name) == ["denied:signature", "ok"]


def test_a_removed_platform_is_denied_from_the_next_request(setup: KmsSetup,
                                                           tmp_path: Path) -> None:
    provider, public = new_platform(tmp_path)
    with setup.admin() as admin:
        admin.register_simulated_platform(public, "soon gone")
    with setup.kms() as kms:
        name = key_with(kms, policy_for(public))
        data_key = kms.generate_data_key(name)
        assert kms.attested_unwrap(name, data_key.wrapped, provider) == data_key.plaintext
        with setup.admin() as admin:
            removed = admin.remove_simulated_platform(public)
        assert (removed.public_key, removed.label) == (public, "soon gone")
        with pytest.raises(PolicyDeniedError) as info:
            kms.attested_unwrap(name, data_key.wrapped, provider)
        assert info.value.reason == "signature"
    assert unwrap_results(setup, name) == ["ok", "denied:signature"]
    assert public not in stored_keys(setup)


# -- the admin API --------------------------------------------------------------------------------


def test_wrong_or_missing_admin_token_is_401_and_stores_nothing(setup: KmsSetup,
                                                                tmp_path: Path) -> None:
    _, public = new_platform(tmp_path)
    before = len(audit(setup))
    with setup.http() as http:
        for headers in ({}, admin_headers(setup, "wrong-token"), setup.headers()):
            added = http.post(ADMIN_PATH, json={"public_key": public, "label": "x"},
                              headers=headers)
            assert (added.status_code, added.json()["code"]) == (401, "unauthorized")
            assert http.get(ADMIN_PATH, headers=headers).status_code == 401
        assert public not in stored_keys(setup)
        # A registered platform cannot be removed without the token either.
        assert http.post(ADMIN_PATH, json={"public_key": public},
                         headers=admin_headers(setup)).status_code == 201
        try:
            refused = http.delete(f"{ADMIN_PATH}/{public}",
                                  headers=admin_headers(setup, "wrong-token"))
            assert refused.status_code == 401
            assert public in stored_keys(setup)
        finally:
            assert http.delete(f"{ADMIN_PATH}/{public}",
                               headers=admin_headers(setup)).status_code == 200
    # Only the two admitted calls were audited; the refused ones never reached the service.
    ops = [e["op"] for e in audit(setup)[before:] if e["key"] == public]
    assert ops == ["simulated_platform.add", "simulated_platform.remove"]


@pytest.mark.parametrize("bad", ["", "ab" * 31, "ab" * 33, "zz" * 32, "ab" * 31 + " a",
                                 "0x" + "ab" * 31])
def test_a_malformed_public_key_is_400(setup: KmsSetup, bad: str) -> None:
    before = stored_keys(setup)
    with setup.http() as http:
        response = http.post(ADMIN_PATH, json={"public_key": bad, "label": "bad"},
                             headers=admin_headers(setup))
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "bad_request"
    assert "64 hex digits" in response.json()["error"]
    assert stored_keys(setup) == before


def test_bodies_are_strict_and_removal_checks_its_key(setup: KmsSetup, tmp_path: Path) -> None:
    _, public = new_platform(tmp_path)
    before = stored_keys(setup)
    with setup.http() as http:
        def post(body: object) -> tuple[int, str]:
            response = http.post(ADMIN_PATH, json=body, headers=admin_headers(setup))
            return response.status_code, response.json()["code"]

        assert post({"public_key": public, "label": "x", "admin": True}) == \
            (422, "invalid_field")
        assert post({"public_key": public, "label": 7}) == (422, "invalid_field")
        assert post({"public_key": "ab" * 200}) == (422, "invalid_field")
        assert post({"public_key": public, "label": "line\nbreak"}) == (400, "bad_request")
        assert post({"public_key": public, "label": "x" * 129}) == (400, "bad_request")
        malformed = http.delete(f"{ADMIN_PATH}/not-a-key", headers=admin_headers(setup))
        assert (malformed.status_code, malformed.json()["code"]) == (400, "bad_request")
        unknown = http.delete(f"{ADMIN_PATH}/{public}", headers=admin_headers(setup))
        assert unknown.status_code == 404
        assert "is registered" in unknown.json()["error"]
    assert stored_keys(setup) == before


def test_adding_twice_is_idempotent_and_keys_are_lowercased(setup: KmsSetup,
                                                            tmp_path: Path) -> None:
    _, public = new_platform(tmp_path)
    with setup.http() as http:
        first = http.post(ADMIN_PATH, json={"public_key": public.upper(), "label": "first"},
                          headers=admin_headers(setup))
        again = http.post(ADMIN_PATH, json={"public_key": public, "label": "renamed"},
                          headers=admin_headers(setup))
        listed = http.get(ADMIN_PATH, headers=admin_headers(setup)).json()["platforms"]
        http.delete(f"{ADMIN_PATH}/{public.upper()}", headers=admin_headers(setup))
    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["public_key"] == public
    assert again.json() == {"public_key": public, "label": "renamed",
                            "created": first.json()["created"]}
    assert [p for p in listed if p["public_key"] == public] == [again.json()]
    assert public not in stored_keys(setup)


def test_add_and_remove_are_audited(setup: KmsSetup, tmp_path: Path) -> None:
    _, public = new_platform(tmp_path)
    with setup.http() as http:
        added = http.post(ADMIN_PATH, json={"public_key": public, "label": "audited"},
                          headers=admin_headers(setup))
        removed = http.delete(f"{ADMIN_PATH}/{public}", headers=admin_headers(setup))
        missing = http.delete(f"{ADMIN_PATH}/{public}", headers=admin_headers(setup))
        bad = http.post(ADMIN_PATH, json={"public_key": "nothex"}, headers=admin_headers(setup))
    assert (added.status_code, removed.status_code, missing.status_code, bad.status_code) == \
        (201, 200, 404, 400)
    by_request = {e["request_id"]: e for e in audit(setup)}
    expected = [(added, "simulated_platform.add", public, "ok"),
                (removed, "simulated_platform.remove", public, "ok"),
                (missing, "simulated_platform.remove", public, "KeyNotFoundError"),
                # A value that is not a key is not copied into the log.
                (bad, "simulated_platform.add", None, "UsageError")]
    for response, op, key, result in expected:
        entry = by_request[response.headers["x-request-id"]]
        assert (entry["app"], entry["op"], entry["key"], entry["result"]) == \
            ("admin", op, key, result)
    assert "audited" not in (setup.server.data / "audit.log").read_text()
    assert verify_audit(setup.server.data).entries == len(audit(setup))


# -- the CLI --------------------------------------------------------------------------------------


def test_cli_add_list_remove(setup: KmsSetup, tmp_path: Path) -> None:
    _, public = new_platform(tmp_path)
    flags = ["--kms", setup.server.url, "--kms-ca", str(setup.server.ca)]
    token = {"CIPHERSPARK_KMS_ADMIN_TOKEN": setup.admin_token}
    added = cli("kms", "simulated-platform", "add", public, "--label", "ci runner", *flags,
                env=token)
    assert f"simulated platform {public} (ci runner) is registered" in added.stdout
    # The flags default from the environment, like 'kms app create'.
    env = {**token, "CIPHERSPARK_KMS": setup.server.url,
           "CIPHERSPARK_KMS_CA": str(setup.server.ca)}
    listed = json.loads(cli("kms", "simulated-platform", "list", "--json", env=env).stdout)
    mine = [p for p in listed if p["public_key"] == public]
    assert len(mine) == 1 and mine[0]["label"] == "ci runner"
    text = cli("kms", "simulated-platform", "list", env=env).stdout
    assert any(line.startswith(public) and line.endswith("ci runner")
               for line in text.splitlines())
    removed = cli("kms", "simulated-platform", "remove", public, *flags, env=token)
    assert f"removed the simulated platform {public} (ci runner)" in removed.stdout
    listed = json.loads(cli("kms", "simulated-platform", "list", "--json", env=env).stdout)
    assert public not in {p["public_key"] for p in listed}


@pytest.mark.parametrize("args, token, expected", [
    (["add", "nothex"], "ADMIN", "is not a simulated-platform public key"),
    (["remove", "ab" * 32], "ADMIN", "no simulated platform " + "ab" * 32 + " is registered"),
    (["add", "ab" * 32], "", "the admin token is missing"),
    (["list"], "wrong-token", "rejected the credentials"),
])
def test_cli_errors_are_one_line(setup: KmsSetup, args: list[str], token: str,
                                 expected: str) -> None:
    token = setup.admin_token if token == "ADMIN" else token
    result = cli("kms", "simulated-platform", *args, "--kms", setup.server.url,
                 "--kms-ca", str(setup.server.ca),
                 env={"CIPHERSPARK_KMS_ADMIN_TOKEN": token}, check=False)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cipherspark: error: "), result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert "ab" * 32 not in stored_keys(setup)
