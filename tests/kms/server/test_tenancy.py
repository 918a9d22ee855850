"""Tenancy against a real TLS server: key namespaces without an existence oracle, nonces bounded
per app, failed logins throttled per source and per app id, ``/metrics`` behind the admin token,
the API documentation off by default, and the audit of logins, reads and nonces.

Throttling, the nonce bound and the documentation use a server of their own (``quiet``, served
with ``--api-docs``), so that what they fill up touches no other test; other client sources are
other loopback addresses (127.0.0.x).
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from cipherspark.attestation import EphemeralKey
from tests.kms.server.conftest import KmsSetup, serving, unique

pytestmark = pytest.mark.servers


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def audit(setup: KmsSetup) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (setup.server.data / "audit.log").read_text().splitlines()]


def by_request(setup: KmsSetup, response: httpx.Response) -> dict[str, Any]:
    found = [e for e in audit(setup) if e["request_id"] == response.headers["x-request-id"]]
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="module")
def quiet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KmsSetup]:
    with serving(tmp_path_factory.mktemp("kms-quiet"), "--api-docs") as fresh:
        yield fresh


# -- namespaces ----------------------------------------------------------------------------------


def test_two_apps_own_the_same_name_and_cannot_tell_each_others_keys(setup: KmsSetup) -> None:
    name, only_a, absent = unique("shared"), unique("only-a"), unique("absent")
    a, b = setup.headers(), setup.headers(setup.app_b)
    with setup.http() as http:
        for headers in (a, b):
            assert http.post("/v1/keys", json={"name": name}, headers=headers).status_code == 201
        assert http.post("/v1/keys", json={"name": only_a}, headers=a).status_code == 201
        made_a = http.post(f"/v1/keys/{name}/datakey/plaintext", headers=a).json()
        made_b = http.post(f"/v1/keys/{name}/datakey/plaintext", headers=b).json()
        # Each app's key is its own: each blob opens under its own app's key only.
        for headers, made in ((a, made_a), (b, made_b)):
            back = http.post(f"/v1/keys/{name}/unwrap", json={"wrapped": made["wrapped"]},
                             headers=headers)
            assert back.json()["plaintext"] == made["plaintext"]
        crossed = http.post(f"/v1/keys/{name}/unwrap", json={"wrapped": made_a["wrapped"]},
                            headers=b)
        assert (crossed.status_code, crossed.json()["code"]) == (400, "integrity")
        # A policy on A's key does nothing to B's key of the same name.
        assert http.put(f"/v1/keys/{name}/policy", json={"policy": {}},
                        headers=a).status_code == 200
        assert http.get(f"/v1/keys/{name}/policy", headers=b).json()["policy"] is None
        # A name only A has is, to B, exactly a name nobody has: on the lean route (warm),
        # on FastAPI routes, and on Transit.
        vault = {"X-Vault-Token": setup.app_b["vault_token"]}
        cases: list[tuple[str, str, dict[str, Any] | None, dict[str, str]]] = [
            ("POST", "/v1/keys/{}/unwrap", {"wrapped": made_a["wrapped"]}, b),
            ("POST", "/v1/keys/{}/datakey/wrapped", None, b),
            ("GET", "/v1/keys/{}", None, b),
            ("GET", "/v1/keys/{}/policy", None, b),
            ("POST", "/v1/keys/{}/attest/nonce", None, b),
            ("PUT", "/v1/keys/{}/policy", {"policy": {}}, b),
            ("POST", "/v1/transit/decrypt/{}", {"ciphertext": "vault:v1:AAAA"}, vault),
            ("GET", "/v1/transit/keys/{}", None, vault),
        ]
        for method, path, body, headers in cases:
            foreign = http.request(method, path.format(only_a), json=body, headers=headers)
            missing = http.request(method, path.format(absent), json=body, headers=headers)
            assert foreign.status_code == missing.status_code == 404, path
            assert foreign.content.replace(only_a.encode(), b"N") == \
                missing.content.replace(absent.encode(), b"N"), path
        listed = {k["name"] for k in http.get("/v1/keys", headers=b).json()["keys"]}
    assert name in listed and only_a not in listed


# -- nonces --------------------------------------------------------------------------------------


def test_one_app_cannot_evict_another_apps_nonces(quiet: KmsSetup) -> None:
    name_a, name_b = unique("nonce-a"), unique("nonce-b")
    a, b = quiet.headers(), quiet.headers(quiet.app_b)

    def unwrap(headers: dict[str, str], name: str, nonce: str) -> str:
        # Keys without a policy: a nonce that is still held gets as far as 'no_policy'; one
        # that was dropped is refused as 'nonce'.
        response = http.post(f"/v1/keys/{name}/attest/unwrap", headers=headers, json={
            "nonce": nonce, "tee": "simulated", "evidence": b64(b"x"),
            "public_key": b64(EphemeralKey.generate().public_bytes),
            "wrapped": b64(bytes(65))})
        assert response.status_code == 403, response.text
        return str(response.json()["reason"])

    with quiet.http() as http:
        for headers, name in ((a, name_a), (b, name_b)):
            assert http.post("/v1/keys", json={"name": name}, headers=headers).status_code == 201

        def nonce(headers: dict[str, str], name: str) -> str:
            response = http.post(f"/v1/keys/{name}/attest/nonce", headers=headers)
            assert response.status_code == 200
            return str(response.json()["nonce"])

        kept_b = nonce(b, name_b)
        first_a = nonce(a, name_a)
        for _ in range(1024):
            last_a = nonce(a, name_a)
        assert unwrap(a, name_a, first_a) == "nonce"  # A's own oldest went
        assert unwrap(a, name_a, last_a) == "no_policy"
        assert unwrap(b, name_b, kept_b) == "no_policy"  # B's was not touched
    issued = [e for e in audit(quiet) if e["op"] == "attest.nonce" and e["key"] == name_a]
    assert len(issued) == 1025 and {e["credential"] for e in issued} == \
        {quiet.app_a["credential_id"]}


# -- throttling ----------------------------------------------------------------------------------


def wrong(creds: dict[str, str]) -> dict[str, str]:
    return {"X-App-Id": creds["app_id"], "X-Api-Key": creds["api_key"][:-4] + "XXXX"}


def fail_until_refused(http: httpx.Client, headers: Any, capacity: int) -> httpx.Response:
    """Fail logins until one is refused with 429; at least ``capacity`` failures must pass
    first (a few more while the bucket drains during a slow burst), and it must come."""
    for attempt in range(capacity + 10):
        response = http.get("/v1/keys", headers=headers() if callable(headers) else headers)
        if response.status_code == 429:
            assert attempt >= capacity, f"refused after {attempt} failures"
            return response
        assert response.status_code == 401
    raise AssertionError(f"no 429 after {capacity + 10} failed logins")


def test_failed_logins_are_throttled_per_app_id_before_any_scrypt(quiet: KmsSetup) -> None:
    target = quiet.new_app(unique("victim"))
    fresh = quiet.workload(target, "never used yet")
    with quiet.http() as working:
        # A client verified before the attack keeps working through it.
        assert working.get("/v1/keys", headers=quiet.headers(target)).status_code == 200
        with quiet.http(source="127.0.0.5") as attacker:
            refused = fail_until_refused(attacker, wrong(target), 10)
        assert refused.json() == {"error": refused.json()["error"], "code": "throttled"}
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        with quiet.http(source="127.0.0.6") as elsewhere:
            # The app id's bucket is full: a right but unverified login waits too ...
            blocked = elsewhere.get("/v1/keys", headers=quiet.headers(fresh))
            assert blocked.status_code == 429 and "retry-after" in blocked.headers
            # ... another app's is not.
            assert elsewhere.get("/v1/keys", headers=quiet.headers(quiet.app_b)
                                 ).status_code == 200
        assert working.get("/v1/keys", headers=quiet.headers(target)).status_code == 200
    lines = audit(quiet)
    failed = [e for e in lines if e["op"] == "auth.failed" and e["app"] == target["app_id"]]
    # The failures were checked (and audited); the refused attempts never reached scrypt.
    assert 10 <= len(failed) < 20
    assert {e["detail"]["source"] for e in failed} == {"127.0.0.5"}
    assert {e["credential"] for e in failed} == {target["credential_id"]}
    throttled = [e for e in lines if e["op"] == "auth.throttled" and e["app"] == target["app_id"]]
    assert [e["detail"]["source"] for e in throttled] == ["127.0.0.5", "127.0.0.6"]
    text = (quiet.server.data / "audit.log").read_text()
    assert target["api_key"][:-4] not in text


def test_failed_logins_are_throttled_per_source(quiet: KmsSetup) -> None:
    fresh = quiet.workload(quiet.app_b, "per-source")
    with quiet.http(source="127.0.0.7") as attacker:
        # 30 failures, each for another app id (no app id's bucket fills): the source's does.
        fail_until_refused(attacker, lambda: {"X-App-Id": f"app-{uuid.uuid4().hex[:16]}",
                                              "X-Api-Key": "guess"}, 30)
        assert attacker.get("/v1/keys", headers=quiet.headers(fresh)).status_code == 429
        assert attacker.get("/metrics", headers={"X-Admin-Token": quiet.admin_token}
                            ).status_code == 429
        wait = attacker.get("/v1/keys", headers=quiet.headers(fresh)).headers["retry-after"]
        assert 1 <= int(wait) <= 60
    with quiet.http(source="127.0.0.8") as other:
        assert other.get("/v1/keys", headers=quiet.headers(fresh)).status_code == 200


def test_successful_logins_within_the_limits_are_unaffected(quiet: KmsSetup) -> None:
    owner = quiet.new_app(unique("clumsy"))
    with quiet.http(source="127.0.0.9") as http:
        for _ in range(5):
            assert http.get("/v1/keys", headers=wrong(owner)).status_code == 401
        workload = quiet.workload(owner, "clumsy cluster")
        assert http.get("/v1/keys", headers=quiet.headers(workload)).status_code == 200
        assert http.get("/v1/keys", headers=quiet.headers(owner)).status_code == 200


# -- /metrics and the API documentation ----------------------------------------------------------


def test_metrics_need_the_admin_token_and_docs_are_opt_in(quiet: KmsSetup,
                                                         setup: KmsSetup) -> None:
    with quiet.http() as http:
        for headers in ({}, quiet.headers(), {"X-Admin-Token": "wrong"}):
            assert http.get("/metrics", headers=headers).status_code == 401
        text = http.get("/metrics", headers={"X-Admin-Token": quiet.admin_token}).text
        assert "# TYPE cipherspark_kms_operations_total counter" in text
        # Served with --api-docs:
        openapi = http.get("/openapi.json").json()
        assert "/v1/keys/{name}/unwrap" in openapi["paths"]
        assert "/v1/transit/encrypt/{name}" in openapi["paths"]
        assert "/v1/admin/apps/{app_id}/credentials" in openapi["paths"]
        assert http.get("/docs").status_code == 200 and http.get("/redoc").status_code == 200
    with setup.http() as http:  # the session's server: served without it
        for path in ("/openapi.json", "/docs", "/redoc"):
            assert http.get(path).status_code == 404


# -- the audit of logins, reads and nonces -----------------------------------------------------


def test_failed_logins_reads_and_nonces_are_audited_without_secrets(setup: KmsSetup) -> None:
    owner = setup.new_app(unique("audited"))
    workload = setup.workload(owner, "audited")
    name = unique("audited")
    pasted = workload["api_key"]  # a secret sent in the wrong header
    with setup.http() as http:
        assert http.post("/v1/keys", json={"name": name},
                         headers=setup.headers(owner)).status_code == 201
        w = setup.headers(workload)
        reads = [http.get("/v1/keys", headers=w), http.get(f"/v1/keys/{name}", headers=w),
                 http.get(f"/v1/keys/{name}/policy", headers=w),
                 http.post(f"/v1/keys/{name}/attest/nonce", headers=w)]
        failures = [
            http.get("/v1/keys", headers=wrong(workload)),
            http.get("/v1/keys", headers={"X-App-Id": pasted, "X-Api-Key": "x"}),
            http.get("/v1/keys", headers={"X-Api-Key": "only a key"}),
            http.get("/metrics", headers={"X-Admin-Token": "not the token"}),
        ]
    for response, op in zip(reads, ["key.list", "key.describe", "key.get_policy",
                                    "attest.nonce"], strict=True):
        entry = by_request(setup, response)
        assert (entry["op"], entry["app"], entry["credential"], entry["result"]) == \
            (op, owner["app_id"], workload["credential_id"], "ok")
    entries = [by_request(setup, r) for r in failures]
    assert [r.status_code for r in failures] == [401] * 4
    assert [(e["op"], e["result"]) for e in entries] == [
        ("auth.failed", "CredentialsError")] * 3 + [("auth.admin_failed", "CredentialsError")]
    assert entries[0]["app"] == owner["app_id"]
    assert entries[0]["credential"] == workload["credential_id"]
    # An app id of the wrong form is recorded as its digest; none at all as null.
    assert entries[1]["app"] == "sha256:" + hashlib.sha256(pasted.encode()).hexdigest()
    assert entries[2]["app"] is None and entries[3]["app"] == "admin"
    assert all(e["detail"] == {"source": "127.0.0.1"} for e in entries)
    text = (setup.server.data / "audit.log").read_text()
    for secret in (pasted, pasted[:-4], "not the token", setup.admin_token, owner["api_key"]):
        assert secret not in text


def test_key_names_that_fail_validation_are_audited_as_a_digest(setup: KmsSetup) -> None:
    bad = "x" * 200 + "'; DROP TABLE keys;--"
    with setup.http() as http:
        responses = [
            http.get(f"/v1/keys/{bad}", headers=setup.headers()),
            http.post("/v1/keys", json={"name": "bad name!"}, headers=setup.headers()),
            http.post(f"/v1/keys/{bad}/unwrap", json={"wrapped": b64(bytes(65))},
                      headers=setup.headers()),
        ]
    for response, sent in zip(responses, [bad, "bad name!", bad], strict=True):
        assert response.status_code in (400, 404), response.text
        entry = by_request(setup, response)
        assert entry["key"] == "sha256:" + hashlib.sha256(sent.encode()).hexdigest()
        assert entry["result"] == "UsageError"
    text = (setup.server.data / "audit.log").read_text()
    assert "DROP TABLE" not in text and "bad name!" not in text
