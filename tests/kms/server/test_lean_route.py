"""The lean route of the hot endpoints answers exactly as the FastAPI routes do (in-process)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from cipherspark.kms.server import init_data_dir, open_service
from cipherspark.kms.server.app import create_app

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
Clients = tuple[TestClient, TestClient, dict[str, str]]


@pytest.fixture()
def clients(tmp_path: Path) -> Iterator[Clients]:
    """One service; a client of its application with and one without the lean route."""
    data = init_data_dir(tmp_path / "data")
    with open_service(data.data_dir) as opened:
        service = opened.service
        creds = service.create_app("lean", "-")
        headers = {"X-App-Id": creds.app_id, "X-Api-Key": creds.api_key}
        with TestClient(create_app(service), base_url="https://testserver") as lean, \
                TestClient(create_app(service, lean=False), base_url="https://testserver") as ref:
            yield lean, ref, headers


def _strip(response: object) -> tuple[int, object]:
    status = response.status_code  # type: ignore[attr-defined]
    return status, response.json()  # type: ignore[attr-defined]


def test_lean_and_fastapi_answers_match(clients: Clients) -> None:
    test, ref, headers = clients
    assert test.post("/v1/keys", json={"name": "k"}, headers=headers).status_code == 201
    made = test.post("/v1/keys/k/datakey/plaintext", headers=headers)
    assert made.status_code == 200 and set(made.json()) == {"key_id", "version", "plaintext",
                                                            "wrapped"}
    wrapped_only = test.post("/v1/keys/k/datakey/wrapped", headers=headers)
    assert set(wrapped_only.json()) == {"key_id", "version", "wrapped"}
    wrapped = made.json()["wrapped"]
    cases = [
        ("/v1/keys/k/unwrap", {"wrapped": wrapped}),
        ("/v1/keys/k/rewrap", {"wrapped": wrapped}),
        ("/v1/keys/k/unwrap", {"wrapped": "not base64!"}),
        ("/v1/keys/k/unwrap", {"wrapped": wrapped[:-8] + "AAAAAAA="}),
        ("/v1/keys/missing/unwrap", {"wrapped": wrapped}),
        ("/v1/keys/bad%20name!/unwrap", {"wrapped": wrapped}),
    ]
    for path, body in cases:
        lean = test.post(path, json=body, headers=headers)
        slow = ref.post(path, json=body, headers=headers)
        assert lean.headers["x-request-id"] != slow.headers["x-request-id"]
        if path.endswith("/rewrap") and lean.status_code == 200:
            assert lean.json()["version"] == slow.json()["version"]
            continue
        assert _strip(lean) == _strip(slow), path
        assert lean.content == slow.content, path
    assert test.post("/v1/keys/k/unwrap", json={"wrapped": wrapped},
                     headers=headers).json()["plaintext"] == made.json()["plaintext"]
    # Off the happy path the lean route steps aside: FastAPI's validation answers.
    assert test.post("/v1/keys/k/unwrap", json={"wrapped": 1},
                     headers=headers).status_code == 422
    assert test.post("/v1/keys/k/unwrap", json={"wrapped": wrapped, "x": 1},
                     headers=headers).status_code == 422
    assert test.post("/v1/keys/k/unwrap", content=b"{", headers={
        **headers, "Content-Type": "application/json"}).json()["code"] == "malformed_json"
    wrong = {**headers, "X-Api-Key": "wrong"}
    assert test.post("/v1/keys/k/unwrap", json={"wrapped": wrapped},
                     headers=wrong).status_code == 401
    # The API documentation is opt-in (create_app(api_docs=True), 'kms serve --api-docs').
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert test.get(path).status_code == 404 and ref.get(path).status_code == 404


def test_disabling_a_key_takes_effect_on_the_lean_route(clients: Clients) -> None:
    test, _, headers = clients
    test.post("/v1/keys", json={"name": "d"}, headers=headers)
    wrapped = test.post("/v1/keys/d/datakey/wrapped", headers=headers).json()["wrapped"]
    assert test.post("/v1/keys/d/unwrap", json={"wrapped": wrapped},
                     headers=headers).status_code == 200
    test.post("/v1/keys/d/disable", headers=headers)
    denied = test.post("/v1/keys/d/unwrap", json={"wrapped": wrapped}, headers=headers)
    assert denied.status_code == 409 and denied.json()["code"] == "key_state"


# -- authorisation on the lean route itself -------------------------------------------------------


class _Captured:
    """The ASGI messages the lean route sends."""

    def __init__(self) -> None:
        self.messages: list[dict[str, object]] = []

    async def __call__(self, message: dict[str, object]) -> None:
        self.messages.append(message)

    @property
    def status(self) -> object:
        return self.messages[0]["status"] if self.messages else None


def _lean(service: object, path: str, creds: dict[str, str], body: bytes) -> _Captured:
    import anyio

    from cipherspark.kms.server.api.lean import lean_routes

    fast = lean_routes(service)  # type: ignore[arg-type]
    scope: dict[str, Any] = {"type": "http", "method": "POST", "path": path, "headers": [
        (b"x-app-id", creds["app_id"].encode()), (b"x-api-key", creds["api_key"].encode()),
        (b"content-type", b"application/json")]}
    sent = _Captured()
    answered = anyio.run(fast, scope, body, "req", sent)  # type: ignore[arg-type]
    if not answered:
        sent.messages.clear()
    return sent


def test_the_lean_route_itself_refuses_and_steps_aside_for_revoked_logins(
        tmp_path: Path) -> None:
    import json

    from cipherspark.attestation import AttestationPolicy
    from cipherspark.kms.server.permissions import Role

    data = init_data_dir(tmp_path / "data")
    with open_service(data.data_dir) as opened:
        service = opened.service
        owner_creds = service.create_app("lean", "-")
        owner = service.authenticate(owner_creds.app_id, owner_creds.api_key)
        service.create_key(owner, "k", "-")
        _, _, wrapped = service.generate_data_key(owner, "k", "-", with_plaintext=False)
        service.set_policy(owner, "k", AttestationPolicy.from_dict(
            {"sgx": {"mr_enclave": ["33" * 32]}}), "-")
        new = service.accounts.create_credential(None, owner.app_id, Role.WORKLOAD, "", "-")
        workload = {"app_id": new.app_id, "api_key": new.api_key}
        body = json.dumps({"wrapped": _wire_b64(wrapped)}).encode()
        # Not verified yet: the lean route hands the request to FastAPI (scrypt there).
        assert _lean(service, "/v1/keys/k/unwrap", workload, body).status is None
        service.authenticate(new.app_id, new.api_key)
        # Verified: the lean route answers, and refuses key material of an attested-only key.
        for path, sent in [("/v1/keys/k/unwrap", body), ("/v1/keys/k/rewrap", body),
                           ("/v1/keys/k/datakey/plaintext", b"")]:
            answer = _lean(service, path, workload, sent)
            assert answer.status == 403, path
            assert b'"code":"forbidden"' in answer.messages[1]["body"]  # type: ignore[operator]
        assert _lean(service, "/v1/keys/k/datakey/wrapped", workload, b"").status == 200
        owner_view = {"app_id": owner_creds.app_id, "api_key": owner_creds.api_key}
        assert _lean(service, "/v1/keys/k/unwrap", owner_view, body).status == 200
        # Revoked: the cached login is dropped on the next request; the lean route steps aside
        # (FastAPI then refuses it with 401, after the throttle and scrypt).
        service.accounts.revoke_credential(None, owner.app_id, new.credential_id, "-")
        assert _lean(service, "/v1/keys/k/datakey/wrapped", workload, b"").status is None
        service.accounts.set_app_enabled(owner.app_id, False, "-")
        assert _lean(service, "/v1/keys/k/unwrap", owner_view, body).status is None


def _wire_b64(data: bytes) -> str:
    from cipherspark.kms import _wire

    return _wire.b64encode(data)
