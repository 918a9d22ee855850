"""Vault Transit compatibility, driven by the real hvac client."""

from __future__ import annotations

import base64

import hvac
import hvac.exceptions
import pytest

from tests.kms.server.conftest import KmsSetup, unique

pytestmark = pytest.mark.servers


def _client(setup: KmsSetup, token: str) -> hvac.Client:
    return hvac.Client(url=setup.server.url, token=token, verify=str(setup.server.ca))


def test_hvac_round_trip_rotation_and_rewrap(setup: KmsSetup) -> None:
    name = unique("transit")
    vault = _client(setup, setup.app_a["vault_token"])
    transit = vault.secrets.transit
    transit.create_key(name)
    plaintext = b"attack at dawn \x00\xff"
    encoded = base64.b64encode(plaintext).decode()

    v1 = transit.encrypt_data(name, encoded)["data"]["ciphertext"]
    assert v1.startswith("vault:v1:") and encoded not in v1
    assert transit.decrypt_data(name, v1)["data"]["plaintext"] == encoded

    rotated = transit.rotate_key(name)["data"]
    assert rotated["latest_version"] == 2 and set(rotated["keys"]) == {"1", "2"}
    assert transit.read_key(name)["data"]["latest_version"] == 2
    v2 = transit.encrypt_data(name, encoded)["data"]["ciphertext"]
    assert v2.startswith("vault:v2:")
    # Older ciphertexts still decrypt; rewrap moves them to the new version.
    assert transit.decrypt_data(name, v1)["data"]["plaintext"] == encoded
    rewrapped = transit.rewrap_data(name, v1)["data"]
    assert rewrapped["ciphertext"].startswith("vault:v2:") and rewrapped["key_version"] == 2
    assert transit.decrypt_data(name, rewrapped["ciphertext"])["data"]["plaintext"] == encoded


def test_hvac_data_keys(setup: KmsSetup) -> None:
    name = unique("transit-dk")
    transit = _client(setup, setup.app_a["vault_token"]).secrets.transit
    transit.create_key(name)
    with_plain = transit.generate_data_key(name, key_type="plaintext")["data"]
    assert len(base64.b64decode(with_plain["plaintext"])) == 32
    assert transit.decrypt_data(name, with_plain["ciphertext"])["data"]["plaintext"] == \
        with_plain["plaintext"]
    wrapped = transit.generate_data_key(name, key_type="wrapped", bits=512)["data"]
    assert "plaintext" not in wrapped
    assert len(base64.b64decode(
        transit.decrypt_data(name, wrapped["ciphertext"])["data"]["plaintext"])) == 64


def test_hvac_errors(setup: KmsSetup) -> None:
    name = unique("transit-err")
    owner = _client(setup, setup.app_a["vault_token"]).secrets.transit
    owner.create_key(name)
    ciphertext = owner.encrypt_data(name, base64.b64encode(b"x").decode())["data"]["ciphertext"]

    with pytest.raises(hvac.exceptions.Unauthorized, match="invalid credentials"):
        _client(setup, "app-0.bogus").secrets.transit.decrypt_data(name, ciphertext)
    # Another app's key is as unknown to app B as a missing one (404: Vault's InvalidPath).
    with pytest.raises(hvac.exceptions.InvalidPath, match="no primary key named"):
        _client(setup, setup.app_b["vault_token"]).secrets.transit.decrypt_data(name, ciphertext)
    with pytest.raises(hvac.exceptions.InvalidPath):
        owner.encrypt_data(unique("absent"), base64.b64encode(b"x").decode())
    with pytest.raises(hvac.exceptions.InvalidRequest, match="vault:vN"):
        owner.decrypt_data(name, "not-a-ciphertext")
    tampered = ciphertext[:-4] + ("AAAA" if not ciphertext.endswith("AAAA") else "BBBB")
    with pytest.raises(hvac.exceptions.InvalidRequest, match="authenticate"):
        owner.decrypt_data(name, tampered)
    with pytest.raises(hvac.exceptions.InvalidRequest, match="not supported"):
        owner.encrypt_data(name, base64.b64encode(b"x").decode(), context="Y29udGV4dA==")
    # A native wrapped data key is not accepted as a Transit ciphertext, and vice versa.
    with setup.http() as http:
        wrapped = http.post(f"/v1/keys/{name}/datakey/wrapped",
                            headers=setup.headers()).json()["wrapped"]
        response = http.post(f"/v1/transit/decrypt/{name}",
                             json={"ciphertext": f"vault:v1:{wrapped}"},
                             headers={"X-Vault-Token": setup.app_a["vault_token"]})
        assert response.status_code == 400 and "errors" in response.json()
