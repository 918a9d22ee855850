"""The HTTP surface: the auth matrix, bad input, body limits, SQL in names, health, docs."""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import Iterator

import pytest

from tests.kms.server.conftest import KmsSetup, unique

pytestmark = pytest.mark.servers


@pytest.fixture(scope="module")
def owned_key(setup: KmsSetup) -> str:
    """A key of app A, with one data key generated."""
    name = unique("http")
    with setup.http() as http:
        assert http.post("/v1/keys", json={"name": name},
                         headers=setup.headers()).status_code == 201
    return name


def _wrapped(setup: KmsSetup, name: str) -> str:
    with setup.http() as http:
        response = http.post(f"/v1/keys/{name}/datakey/wrapped", headers=setup.headers())
        assert response.status_code == 200 and "plaintext" not in response.json()
        return str(response.json()["wrapped"])


def test_missing_or_wrong_credentials_are_401_without_a_hint(setup: KmsSetup,
                                                             owned_key: str) -> None:
    app = setup.app_a
    attempts = {
        "none": {},
        "no key": {"X-App-Id": app["app_id"]},
        "no id": {"X-Api-Key": app["api_key"]},
        "wrong key": {"X-App-Id": app["app_id"], "X-Api-Key": app["api_key"][:-2] + "xx"},
        "unknown id": {"X-App-Id": "app-0000000000000000", "X-Api-Key": app["api_key"]},
        "other app's key": {"X-App-Id": app["app_id"], "X-Api-Key": setup.app_b["api_key"]},
    }
    bodies = set()
    with setup.http() as http:
        for label, headers in attempts.items():
            response = http.get(f"/v1/keys/{owned_key}", headers=headers)
            assert response.status_code == 401, label
            bodies.add(response.text)
        # The API key in a URL query is ignored, never accepted.
        response = http.get(f"/v1/keys/{owned_key}", params={"api_key": app["api_key"],
                                                             "app_id": app["app_id"]})
        assert response.status_code == 401
    assert bodies == {'{"error":"invalid credentials","code":"unauthorized"}'}


def test_another_apps_key_answers_as_a_missing_one(setup: KmsSetup, owned_key: str) -> None:
    # Key names live in each app's namespace: app B cannot tell app A's key from no key (same
    # status, code and message), so no 403/404 difference tells it a name exists.
    wrapped = _wrapped(setup, owned_key)
    other = setup.headers(setup.app_b)
    absent = unique("nobody")
    with setup.http() as http:
        for method, suffix, body in [
            ("GET", "", None),
            ("POST", "/datakey/plaintext", None),
            ("POST", "/unwrap", {"wrapped": wrapped}),
            ("POST", "/rotate", None),
            ("POST", "/disable", None),
        ]:
            foreign = http.request(method, f"/v1/keys/{owned_key}{suffix}", json=body,
                                   headers=other)
            missing = http.request(method, f"/v1/keys/{absent}{suffix}", json=body,
                                   headers=other)
            assert foreign.status_code == missing.status_code == 404, suffix
            assert foreign.json()["code"] == "key_not_found"
            assert foreign.text.replace(owned_key, "NAME") == missing.text.replace(absent, "NAME")
        response = http.get(f"/v1/keys/{unique('nobody')}", headers=setup.headers())
        assert response.status_code == 404
        assert response.json()["code"] == "key_not_found"
        assert http.get(f"/v1/keys/{owned_key}", headers=setup.headers()).status_code == 200


def test_admin_endpoint_needs_the_admin_token(setup: KmsSetup) -> None:
    with setup.http() as http:
        for headers in ({}, {"X-Admin-Token": "wrong"}, setup.headers()):
            assert http.post("/v1/apps", json={"name": "x"}, headers=headers).status_code == 401


@pytest.mark.parametrize(("body", "status", "needle"), [
    (b"{not json", 400, "not valid JSON"),
    (b'{"name": 5}', 422, "name"),
    (b'{"name": "ok-name", "extra": 1}', 422, "extra"),
    (b"[]", 422, "body"),
    (b'{"name": "' + b"a" * 300 + b'"}', 422, "name"),
    (b'{"name": "x\'; DROP TABLE keys;--"}', 400, "invalid key name"),
    (b'{"name": ""}', 400, "invalid key name"),
])
def test_bad_create_bodies_are_4xx_with_a_message(setup: KmsSetup, body: bytes, status: int,
                                                   needle: str) -> None:
    with setup.http() as http:
        response = http.post("/v1/keys", content=body,
                             headers={**setup.headers(), "Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert needle in response.json()["error"]


def test_bad_unwrap_bodies(setup: KmsSetup, owned_key: str) -> None:
    wrapped = base64.b64decode(_wrapped(setup, owned_key))
    tampered = base64.b64encode(wrapped[:-1] + bytes([wrapped[-1] ^ 1])).decode()
    with setup.http() as http:
        path = f"/v1/keys/{owned_key}/unwrap"
        cases = [({"wrapped": "%%%"}, 400, "base64"),
                 ({"wrapped": 12}, 422, "wrapped"),
                 ({"wrapped": base64.b64encode(b"short").decode()}, 400, "malformed"),
                 ({"wrapped": tampered}, 400, "authenticate")]
        for body, status, needle in cases:
            response = http.post(path, json=body, headers=setup.headers())
            assert response.status_code == status, body
            assert needle in response.json()["error"]
        response = http.post(f"/v1/keys/{owned_key}/config", json={"min_decryption_version": 9},
                             headers=setup.headers())
        assert response.status_code == 400 and "min_decryption_version" in response.text


def test_oversized_bodies_are_413(setup: KmsSetup, owned_key: str) -> None:
    big = b'{"wrapped": "' + b"A" * 100_000 + b'"}'

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(big), 8192):
            yield big[start:start + 8192]

    with setup.http() as http:
        path = f"/v1/keys/{owned_key}/unwrap"
        declared = http.post(path, content=big, headers=setup.headers())
        assert declared.status_code == 413
        assert "larger than" in declared.json()["error"]
        # Chunked, without Content-Length: counted as it arrives.
        streamed = http.post(path, content=chunks(), headers=setup.headers())
        assert streamed.status_code == 413
        assert http.get("/healthz").json() == {"status": "ok"}


def test_sql_in_app_names_is_stored_literally(setup: KmsSetup) -> None:
    name = "Robert'); DROP TABLE apps; --"
    with setup.http() as http:
        response = http.post("/v1/apps", json={"name": name},
                             headers={"X-Admin-Token": setup.admin_token})
        assert response.status_code == 201
        app_id = response.json()["app_id"]
        # The new app works: the apps table survived.
        assert http.get("/v1/keys", headers={"X-App-Id": app_id,
                                             "X-Api-Key": response.json()["api_key"]}
                        ).status_code == 200
    db = sqlite3.connect(f"file:{setup.server.data / 'kms.db'}?mode=ro", uri=True)
    try:
        stored = db.execute("SELECT a.name, c.key_hash FROM apps a JOIN credentials c "
                            "ON c.app_id = a.app_id WHERE a.app_id = ?", (app_id,)).fetchone()
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        db.close()
    assert stored[0] == name
    assert response.json()["api_key"].encode() not in stored[1]
    assert {"apps", "credentials", "keys", "key_versions", "key_policies", "simulated_platforms",
            "settings", "schema_migrations"} <= tables


def test_health_metrics_docs_and_request_ids(setup: KmsSetup, owned_key: str) -> None:
    with setup.http() as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        first = http.get(f"/v1/keys/{owned_key}", headers=setup.headers())
        second = http.get(f"/v1/keys/{owned_key}", headers=setup.headers())
        assert first.headers["x-request-id"] != second.headers["x-request-id"]
        assert "server" not in first.headers
        # /metrics needs the admin token; the API documentation is off unless served with
        # --api-docs (test_authorization.py starts such a server).
        assert http.get("/metrics").status_code == 401
        assert http.get("/metrics", headers=setup.headers()).status_code == 401
        metrics = http.get("/metrics", headers={"X-Admin-Token": setup.admin_token}).text
        assert 'cipherspark_kms_operations_total{op="key.create",result="ok"}' in metrics
        for path in ("/openapi.json", "/docs", "/redoc"):
            assert http.get(path).status_code == 404, path
