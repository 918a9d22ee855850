"""The lean route of the hot endpoints answers exactly as the FastAPI routes do (in-process)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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


def test_disabling_a_key_takes_effect_on_the_lean_route(clients: Clients) -> None:
    test, _, headers = clients
    test.post("/v1/keys", json={"name": "d"}, headers=headers)
    wrapped = test.post("/v1/keys/d/datakey/wrapped", headers=headers).json()["wrapped"]
    assert test.post("/v1/keys/d/unwrap", json={"wrapped": wrapped},
                     headers=headers).status_code == 200
    test.post("/v1/keys/d/disable", headers=headers)
    denied = test.post("/v1/keys/d/unwrap", json={"wrapped": wrapped}, headers=headers)
    assert denied.status_code == 409 and denied.json()["code"] == "key_state"
