"""Attested key release end to end through a real KMS server (TLS, subprocess).

A simulated worker gets its data key as a JWE that only its ephemeral key opens; a changed
measurement, a replayed or expired nonce, evidence bound to another public key, simulated
evidence against a policy that does not name ``simulated``, and a key without a policy are all
denied with their reason codes, and every denial leaves an audit line. Each test's simulated
platform is registered by the operator first (``registered_platform``); what happens without
that registration is in ``test_simulated_platforms.py``.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cipherspark.attestation import (
    AttestationPolicy,
    EphemeralKey,
    SimulatedProvider,
    bind,
    code_measurement,
    load_simulated_platform_key,
    simulated_platform_public_key,
)
from cipherspark.errors import PolicyDeniedError
from cipherspark.kms.remote import RemoteKms
from tests.kms.server.conftest import KmsSetup, cli, unique

pytestmark = pytest.mark.servers


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(autouse=True)
def registered_platform(setup: KmsSetup, tmp_path: Path) -> Iterator[str]:
    """The operator registers this test's simulated platform (tmp_path/platform.key), and
    removes it afterwards so the session's server trusts no leftover platform."""
    public = simulated_platform_public_key(load_simulated_platform_key(tmp_path / "platform.key"))
    with setup.admin() as admin:
        assert admin.register_simulated_platform(public, "test_attested").public_key == public
    yield public
    with setup.admin() as admin:
        admin.remove_simulated_platform(public)


@pytest.fixture
def platform(tmp_path: Path) -> SimulatedProvider:
    return SimulatedProvider(key_path=tmp_path / "platform.key")


def simulated_policy(provider_key: Path, **extra: Any) -> AttestationPolicy:
    public = simulated_platform_public_key(load_simulated_platform_key(provider_key))
    return AttestationPolicy.from_dict({
        "tee_types": ["simulated"], **extra,
        "simulated": {"platform_keys": [public], "measurements": [code_measurement()]}})


def key_with_policy(kms: RemoteKms, policy: AttestationPolicy | None) -> str:
    name = unique("att")
    kms.create_key(name)
    if policy is not None:
        assert kms.set_policy(name, policy) == policy
    return name


def raw_unwrap(setup: KmsSetup, name: str, *, nonce: bytes, tee: str, quote: bytes,
               public_key: bytes, wrapped: bytes) -> dict[str, Any]:
    with setup.http() as http:
        response = http.post(f"/v1/keys/{name}/attest/unwrap", headers=setup.headers(), json={
            "nonce": b64(nonce), "tee": tee, "evidence": b64(quote),
            "public_key": b64(public_key), "wrapped": b64(wrapped)})
    doc: dict[str, Any] = response.json()
    doc["status"] = response.status_code
    return doc


def nonce_for(setup: KmsSetup, name: str) -> bytes:
    with setup.http() as http:
        response = http.post(f"/v1/keys/{name}/attest/nonce", headers=setup.headers())
    assert response.status_code == 200, response.text
    return base64.b64decode(response.json()["nonce"])


def audit_results(setup: KmsSetup, name: str, op: str = "datakey.attested_unwrap") -> list[str]:
    lines = (setup.server.data / "audit.log").read_text().splitlines()
    return [doc["result"] for doc in map(json.loads, lines)
            if doc["key"] == name and doc["op"] == op]


def test_a_simulated_worker_gets_its_key(setup: KmsSetup, tmp_path: Path,
                                         platform: SimulatedProvider) -> None:
    with setup.kms() as kms:
        name = key_with_policy(kms, simulated_policy(tmp_path / "platform.key"))
        data_key = kms.generate_data_key(name)
        assert kms.attested_unwrap(name, data_key.wrapped, platform) == data_key.plaintext
        assert kms.get_policy(name) is not None
    assert audit_results(setup, name) == ["ok"]


def test_a_simulated_worker_gets_a_transit_plaintext(
        setup: KmsSetup, tmp_path: Path, platform: SimulatedProvider) -> None:
    """What a Vault-Transit client wrapped (pyarrow's Parquet key-encryption keys) opens in an
    attested worker too: the attested Transit decrypt, same evidence, policy and JWE."""
    with setup.kms() as kms:
        name = key_with_policy(kms, simulated_policy(tmp_path / "platform.key"))
        kek = bytes(range(16))  # pyarrow's default 128-bit KEK: not only 32-byte keys
        ciphertext = kms.transit_encrypt(name, kek)
        assert kms.attested_transit_decrypt(name, ciphertext, platform) == kek
    assert audit_results(setup, name, "transit.attested_decrypt") == ["ok"]


def test_an_attested_transit_decrypt_is_denied_as_the_unwrap_is(
        setup: KmsSetup, tmp_path: Path, platform: SimulatedProvider) -> None:
    changed = SimulatedProvider(key_path=tmp_path / "platform.key", measurement="ab" * 32)
    with setup.kms() as kms:
        name = key_with_policy(kms, simulated_policy(tmp_path / "platform.key"))
        ciphertext = kms.transit_encrypt(name, b"k" * 32)
        with pytest.raises(PolicyDeniedError) as info:
            kms.attested_transit_decrypt(name, ciphertext, changed)
        no_policy = key_with_policy(kms, None)
        with pytest.raises(PolicyDeniedError) as none:
            kms.attested_transit_decrypt(
                no_policy, kms.transit_encrypt(no_policy, b"k" * 32), platform)
    assert info.value.reason == "measurement"
    assert none.value.reason == "no_policy"
    assert audit_results(setup, name, "transit.attested_decrypt") == ["denied:measurement"]


def test_the_jwe_opens_only_with_the_ephemeral_private_key(
        setup: KmsSetup, tmp_path: Path, platform: SimulatedProvider) -> None:
    with setup.kms() as kms:
        name = key_with_policy(kms, simulated_policy(tmp_path / "platform.key"))
        data_key = kms.generate_data_key(name)
    nonce, ephemeral = nonce_for(setup, name), EphemeralKey.generate()
    evidence = platform.evidence(bind(nonce, ephemeral.public_bytes))
    answer = raw_unwrap(setup, name, nonce=nonce, tee="simulated", quote=evidence.quote,
                        public_key=ephemeral.public_bytes, wrapped=data_key.wrapped)
    assert answer["status"] == 200 and "plaintext" not in answer
    token = answer["jwe"]
    for form in (data_key.plaintext, data_key.plaintext.hex().encode(),
                 base64.b64encode(data_key.plaintext)):
        assert form not in token.encode()
    assert ephemeral.open(token) == data_key.plaintext
    with pytest.raises(Exception, match="ephemeral"):
        EphemeralKey.generate().open(token)


def test_changed_measurement_is_denied(setup: KmsSetup, tmp_path: Path) -> None:
    changed = SimulatedProvider(key_path=tmp_path / "platform.key", measurement="ab" * 32)
    with setup.kms() as kms:
        name = key_with_policy(kms, simulated_policy(tmp_path / "platform.key"))
        with pytest.raises(PolicyDeniedError) as info:
            kms.attested_unwrap(name, kms.generate_wrapped_data_key(name), changed)
    assert info.value.reason == "measurement"
    assert audit_results(setup, name) == ["denied:measurement"]


def test_a_replayed_nonce_is_denied(setup: KmsSetup, tmp_path: Path,
                                    platform: SimulatedProvider) -> None:
    with setup.kms() as kms:
        name = key_with_policy(kms, simulated_policy(tmp_path / "platform.key"))
        wrapped = kms.generate_wrapped_data_key(name)
    nonce, ephemeral = nonce_for(setup, name), EphemeralKey.generate()
    quote = platform.evidence(bind(nonce, ephemeral.public_bytes)).quote
    request: dict[str, Any] = {"nonce": nonce, "tee": "simulated", "quote": quote,
               "public_key": ephemeral.public_bytes, "wrapped": wrapped}
    assert raw_unwrap(setup, name, **request)["status"] == 200
    replay = raw_unwrap(setup, name, **request)
    assert (replay["status"], replay["code"], replay["reason"]) == (403, "attestation_denied",
                                                                     "nonce")
    assert audit_results(setup, name) == ["ok", "denied:nonce"]


def test_an_expired_nonce_is_denied(setup: KmsSetup, tmp_path: Path,
                                    platform: SimulatedProvider) -> None:
    policy = simulated_policy(tmp_path / "platform.key", max_evidence_age_seconds=1)
    with setup.kms() as kms:
        name = key_with_policy(kms, policy)
        wrapped = kms.generate_wrapped_data_key(name)
    nonce, ephemeral = nonce_for(setup, name), EphemeralKey.generate()
    quote = platform.evidence(bind(nonce, ephemeral.public_bytes)).quote
    time.sleep(1.5)
    answer = raw_unwrap(setup, name, nonce=nonce, tee="simulated", quote=quote,
                        public_key=ephemeral.public_bytes, wrapped=wrapped)
    assert (answer["status"], answer["reason"]) == (403, "expired")
    assert audit_results(setup, name) == ["denied:expired"]


def test_evidence_bound_to_another_public_key_is_denied(
        setup: KmsSetup, tmp_path: Path, platform: SimulatedProvider) -> None:
    with setup.kms() as kms:
        name = key_with_policy(kms, simulated_policy(tmp_path / "platform.key"))
        wrapped = kms.generate_wrapped_data_key(name)
    nonce, mine, theirs = nonce_for(setup, name), EphemeralKey.generate(), EphemeralKey.generate()
    quote = platform.evidence(bind(nonce, theirs.public_bytes)).quote
    answer = raw_unwrap(setup, name, nonce=nonce, tee="simulated", quote=quote,
                        public_key=mine.public_bytes, wrapped=wrapped)
    assert (answer["status"], answer["reason"]) == (403, "binding")
    # A nonce of another key is refused too (nonces are bound to the key they were issued for).
    other_nonce = nonce_for(setup, name)
    with setup.kms() as kms:
        other = key_with_policy(kms, simulated_policy(tmp_path / "platform.key"))
        other_wrapped = kms.generate_wrapped_data_key(other)
    quote = platform.evidence(bind(other_nonce, mine.public_bytes)).quote
    answer = raw_unwrap(setup, other, nonce=other_nonce, tee="simulated", quote=quote,
                        public_key=mine.public_bytes, wrapped=other_wrapped)
    assert answer["reason"] == "nonce"


def test_simulated_evidence_against_a_policy_without_simulated_is_denied(
        setup: KmsSetup, platform: SimulatedProvider) -> None:
    sgx_only = AttestationPolicy.from_dict({"sgx": {"mr_enclave": ["00" * 32]}})
    with setup.kms() as kms:
        name = key_with_policy(kms, sgx_only)
        with pytest.raises(PolicyDeniedError) as info:
            kms.attested_unwrap(name, kms.generate_wrapped_data_key(name), platform)
        assert info.value.reason == "tee_type"
        bare = key_with_policy(kms, None)
        with pytest.raises(PolicyDeniedError) as info:
            kms.attested_unwrap(bare, kms.generate_wrapped_data_key(bare), platform)
        assert info.value.reason == "no_policy"
    assert audit_results(setup, name) == ["denied:tee_type"]


def test_policy_set_through_the_cli_and_other_apps_cannot(setup: KmsSetup, tmp_path: Path,
                                                          platform: SimulatedProvider) -> None:
    with setup.kms() as kms:
        name = key_with_policy(kms, None)
        data_key = kms.generate_data_key(name)
    policy_file = tmp_path / "policy.json"
    policy_file.write_text(simulated_policy(tmp_path / "platform.key").to_json())
    env = {"CIPHERSPARK_APP_ID": setup.app_a["app_id"],
           "CIPHERSPARK_API_KEY": setup.app_a["api_key"],
           "CIPHERSPARK_KMS": setup.server.url, "CIPHERSPARK_KMS_CA": str(setup.server.ca)}
    shown = cli("key", "policy", "set", name, str(policy_file), env=env)
    assert json.loads(shown.stdout)["tee_types"] == ["simulated"]
    assert json.loads(cli("key", "policy", "show", name, env=env).stdout)["simulated"]
    bad = tmp_path / "bad.json"
    bad.write_text('{"sgx": {"mr_enclave": ["nothex"]}}')
    refused = cli("key", "policy", "set", name, str(bad), env=env, check=False)
    assert refused.returncode == 2 and "hex" in refused.stderr
    with setup.kms() as kms:
        assert kms.attested_unwrap(name, data_key.wrapped, platform) == data_key.plaintext
    with setup.http() as http:
        response = http.put(f"/v1/keys/{name}/policy", headers=setup.headers(setup.app_b),
                            json={"policy": {}})
    # Another app's key answers as a missing one (key names live in each app's namespace),
    # and the policy stays as it was.
    assert (response.status_code, response.json()["code"]) == (404, "key_not_found")
    with setup.kms() as kms:
        assert kms.get_policy(name) == simulated_policy(tmp_path / "platform.key")
