"""Roles, played as an attacker against a real TLS server.

A workload credential (what a cluster holds, and what a compromised worker host can steal) gets
no key material of an *attested-only* key (one with a release policy) by any route of the
application: every route is enumerated from the app itself and classified here, so a new route
fails ``test_every_route_is_classified`` until it is. Each refusal is tried *cold* (the
credential's first request: the FastAPI route, scrypt) and *warm* (after a verified request:
the lean route for the hot data-key endpoints, the login cache for the others). The owner still
decrypts, and each such release is audited as one. Without TEE evidence a leaked workload
credential yields nothing; with the simulated TEE (a registered platform) attested release still
works for it. Keys without a policy are the trusted-cluster mode: a workload credential unwraps
them, and stops at once when the owner gives the key a policy.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from cipherspark.attestation import (
    AttestationPolicy,
    EphemeralKey,
    SimulatedProvider,
    load_simulated_platform_key,
    simulated_platform_public_key,
)
from cipherspark.errors import CredentialsError, PermissionDeniedError, PolicyDeniedError
from cipherspark.kms import Credentials
from cipherspark.kms.remote import RemoteKms
from cipherspark.kms.server.api.lean import _HOT
from cipherspark.kms.server.api.routes import ROUTERS
from cipherspark.kms.server.release import policy_digest
from tests.kms.server.conftest import KmsSetup, cli, unique

pytestmark = pytest.mark.servers

MATERIAL = "key material"  # denied to workload credentials for attested-only keys
MANAGE = "manage"  # owner credential only
POLICY = "policy"  # owner credential (or the admin token) only
READ = "read"  # every credential of the app
WRAP = "wrap"  # every credential of the app: nothing leaves in clear
# Transit encrypt of the caller's plaintext: like key material, refused to workload credentials
# for attested-only keys (a ciphertext under the key is what readers accept as written by it).
SEAL = "seal"
ATTEST = "attest"  # every credential; evidence decides
CREDENTIALS = "credentials"  # the owner credential manages its app's workload credentials
ADMIN = "admin"  # the admin token
OPEN = "open"  # no credentials
# Every credential of the app; a write also needs the proof made with the dataset's data key.
# tests/kms/server/test_registry.py plays these (a workload credential registers, a credential
# that may not wrap under the record's key is refused).
REGISTRY = "registry"
# The simulated TEE's measurement, fixed: the real one hashes the installed source, which must
# not change under a long-lived policy while the tests run.
MEASUREMENT = "cd" * 32


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class Target:
    """An attested-only key of app A and what the owner made under it."""

    name: str
    data_key: bytes = field(repr=False)
    wrapped: str
    transit_key: bytes = field(repr=False)
    ciphertext: str
    transit_datakey: bytes = field(repr=False)
    victim_credential: str

    def secrets(self) -> list[bytes]:
        """Every encoding of the key material a response must not contain."""
        found = []
        for key in (self.data_key, self.transit_key, self.transit_datakey):
            found += [key, base64.b64encode(key), key.hex().encode()]
        return found


@dataclass(frozen=True)
class Case:
    """One concrete request of one route of the application."""

    method: str
    template: str  # the route's path as FastAPI declares it
    kind: str
    path: Callable[[Target], str]
    body: Callable[[Target], dict[str, Any] | None] = lambda t: None
    label: str = ""

    @property
    def id(self) -> str:
        return f"{self.method} {self.template}{self.label}"

    @property
    def transit(self) -> bool:
        return self.template.startswith("/v1/transit/")


def _k(suffix: str = "") -> Callable[[Target], str]:
    return lambda t: f"/v1/keys/{t.name}{suffix}"


def _transit(action: str) -> Callable[[Target], str]:
    return lambda t: f"/v1/transit/{action}/{t.name}"


CASES = [
    # key material without evidence
    Case("POST", "/v1/keys/{name}/unwrap", MATERIAL, _k("/unwrap"),
         lambda t: {"wrapped": t.wrapped}),
    Case("POST", "/v1/keys/{name}/datakey/plaintext", MATERIAL, _k("/datakey/plaintext")),
    Case("POST", "/v1/transit/decrypt/{name}", MATERIAL, _transit("decrypt"),
         lambda t: {"ciphertext": t.ciphertext}),
    Case("POST", "/v1/transit/datakey/{kind}/{name}", MATERIAL,
         lambda t: f"/v1/transit/datakey/plaintext/{t.name}", label=" (plaintext)"),
    # key maintenance and state: owner only
    Case("POST", "/v1/keys/{name}/rewrap", MANAGE, _k("/rewrap"),
         lambda t: {"wrapped": t.wrapped}),
    Case("POST", "/v1/transit/rewrap/{name}", MANAGE, _transit("rewrap"),
         lambda t: {"ciphertext": t.ciphertext}),
    Case("POST", "/v1/keys", MANAGE, lambda t: "/v1/keys", lambda t: {"name": unique("new")}),
    Case("POST", "/v1/transit/keys/{name}", MANAGE,
         lambda t: f"/v1/transit/keys/{unique('new')}"),
    Case("POST", "/v1/keys/{name}/rotate", MANAGE, _k("/rotate")),
    Case("POST", "/v1/transit/keys/{name}/rotate", MANAGE,
         lambda t: f"/v1/transit/keys/{t.name}/rotate"),
    Case("POST", "/v1/keys/{name}/config", MANAGE, _k("/config"),
         lambda t: {"min_decryption_version": 1}),
    Case("POST", "/v1/keys/{name}/disable", MANAGE, _k("/disable")),
    Case("POST", "/v1/keys/{name}/enable", MANAGE, _k("/enable")),
    Case("POST", "/v1/keys/{name}/schedule-deletion", MANAGE, _k("/schedule-deletion"),
         lambda t: {"pending_days": 7}),
    Case("POST", "/v1/keys/{name}/cancel-deletion", MANAGE, _k("/cancel-deletion")),
    Case("PUT", "/v1/keys/{name}/policy", POLICY, _k("/policy"), lambda t: {"policy": {}}),
    # no key material
    Case("GET", "/v1/keys", READ, lambda t: "/v1/keys"),
    Case("GET", "/v1/keys/{name}", READ, _k()),
    Case("GET", "/v1/keys/{name}/policy", READ, _k("/policy")),
    Case("GET", "/v1/transit/keys/{name}", READ, lambda t: f"/v1/transit/keys/{t.name}"),
    Case("POST", "/v1/keys/{name}/datakey/wrapped", WRAP, _k("/datakey/wrapped")),
    Case("POST", "/v1/transit/encrypt/{name}", SEAL, _transit("encrypt"),
         lambda t: {"plaintext": b64(b"new output")}),
    Case("POST", "/v1/transit/datakey/{kind}/{name}", WRAP,
         lambda t: f"/v1/transit/datakey/wrapped/{t.name}", label=" (wrapped)"),
    Case("POST", "/v1/keys/{name}/attest/nonce", ATTEST, _k("/attest/nonce")),
    Case("POST", "/v1/keys/{name}/attest/unwrap", ATTEST, _k("/attest/unwrap")),
    Case("POST", "/v1/keys/{name}/attest/transit-decrypt", ATTEST, _k("/attest/transit-decrypt")),
    # an app's credentials
    Case("POST", "/v1/credentials", CREDENTIALS, lambda t: "/v1/credentials",
         lambda t: {"role": "workload"}),
    Case("GET", "/v1/credentials", CREDENTIALS, lambda t: "/v1/credentials"),
    Case("DELETE", "/v1/credentials/{credential_id}", CREDENTIALS,
         lambda t: f"/v1/credentials/{t.victim_credential}"),
    # the operator's
    Case("POST", "/v1/apps", ADMIN, lambda t: "/v1/apps", lambda t: {"name": "mine"}),
    Case("POST", "/v1/admin/apps/{app_id}/disable", ADMIN, lambda t: "/v1/admin/apps/A/disable"),
    Case("POST", "/v1/admin/apps/{app_id}/enable", ADMIN, lambda t: "/v1/admin/apps/A/enable"),
    Case("POST", "/v1/admin/apps/{app_id}/credentials", ADMIN,
         lambda t: "/v1/admin/apps/A/credentials", lambda t: {"role": "owner"}),
    Case("GET", "/v1/admin/apps/{app_id}/credentials", ADMIN,
         lambda t: "/v1/admin/apps/A/credentials"),
    Case("DELETE", "/v1/admin/apps/{app_id}/credentials/{credential_id}", ADMIN,
         lambda t: f"/v1/admin/apps/A/credentials/{t.victim_credential}"),
    Case("POST", "/v1/admin/admin-token/rotate", ADMIN, lambda t: "/v1/admin/admin-token/rotate"),
    Case("PUT", "/v1/admin/apps/{app_id}/keys/{name}/policy", ADMIN,
         lambda t: f"/v1/admin/apps/A/keys/{t.name}/policy", lambda t: {"policy": {}}),
    Case("GET", "/v1/admin/apps/{app_id}/keys/{name}/policy", ADMIN,
         lambda t: f"/v1/admin/apps/A/keys/{t.name}/policy"),
    Case("POST", "/v1/admin/simulated-platforms", ADMIN,
         lambda t: "/v1/admin/simulated-platforms", lambda t: {"public_key": "ab" * 32}),
    Case("GET", "/v1/admin/simulated-platforms", ADMIN,
         lambda t: "/v1/admin/simulated-platforms"),
    Case("DELETE", "/v1/admin/simulated-platforms/{public_key}", ADMIN,
         lambda t: f"/v1/admin/simulated-platforms/{'ab' * 32}"),
    Case("GET", "/metrics", ADMIN, lambda t: "/metrics"),
    Case("GET", "/healthz", OPEN, lambda t: "/healthz"),
    # the app's dataset registry
    Case("GET", "/v1/datasets", REGISTRY, lambda t: "/v1/datasets"),
    Case("PUT", "/v1/datasets", REGISTRY, lambda t: "/v1/datasets"),
    Case("POST", "/v1/datasets/move", REGISTRY, lambda t: "/v1/datasets/move"),
]
REFUSED = [c for c in CASES if c.kind in (MATERIAL, SEAL, MANAGE, POLICY)]


def test_every_route_is_classified() -> None:
    declared = {(method, str(getattr(route, "path", ""))) for router in ROUTERS
                for route in router.routes for method in getattr(route, "methods", ())}
    assert declared == {(c.method, c.template) for c in CASES}
    # Every path the lean route answers is one of them, and is tried warm below.
    lean = {c.id for c in CASES if c.method == "POST" and _HOT.fullmatch(c.path(_DUMMY))}
    assert lean == {"POST /v1/keys/{name}/unwrap", "POST /v1/keys/{name}/datakey/plaintext",
                    "POST /v1/keys/{name}/rewrap", "POST /v1/keys/{name}/datakey/wrapped"}


_DUMMY = Target("k", b"", "", b"", "", b"", "cred-0000000000000000")


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def platform(setup: KmsSetup, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        tuple[SimulatedProvider, str]]:
    """A simulated platform the operator registered for this module."""
    path = tmp_path_factory.mktemp("roles-platform") / "platform.key"
    public = simulated_platform_public_key(load_simulated_platform_key(path))
    with setup.admin() as admin:
        admin.register_simulated_platform(public, "test_roles")
    yield SimulatedProvider(key_path=path, measurement=MEASUREMENT), public
    with setup.admin() as admin:
        admin.remove_simulated_platform(public)


def simulated_policy(public: str) -> AttestationPolicy:
    return AttestationPolicy.from_dict({
        "tee_types": ["simulated"],
        "simulated": {"platform_keys": [public], "measurements": [MEASUREMENT]}})


def make_target(setup: KmsSetup, policy: AttestationPolicy | None) -> Target:
    """A key of app A (with ``policy``), one data key, one Transit ciphertext and data key."""
    name = unique("role")
    with setup.kms() as kms:
        kms.create_key(name)
        data_key = kms.generate_data_key(name)
        if policy is not None:
            kms.set_policy(name, policy)
    with setup.http() as http:
        vault = {"X-Vault-Token": setup.app_a["vault_token"]}
        transit_key = b"transit secret " + name.encode()
        encrypted = http.post(f"/v1/transit/encrypt/{name}", headers=vault,
                              json={"plaintext": b64(transit_key)})
        assert encrypted.status_code == 200, encrypted.text
        made = http.post(f"/v1/transit/datakey/wrapped/{name}", headers=vault).json()
        transit_datakey = base64.b64decode(http.post(
            f"/v1/transit/decrypt/{name}", headers=vault,
            json={"ciphertext": made["data"]["ciphertext"]}).json()["data"]["plaintext"])
    return Target(name, data_key.plaintext, b64(data_key.wrapped), transit_key,
                  encrypted.json()["data"]["ciphertext"], transit_datakey,
                  setup.workload(label="victim")["credential_id"])


@pytest.fixture(scope="module")
def attested(setup: KmsSetup, platform: tuple[SimulatedProvider, str]) -> Target:
    """An attested-only key: its policy names the module's registered simulated platform."""
    return make_target(setup, simulated_policy(platform[1]))


def headers_for(case: Case, creds: dict[str, str]) -> dict[str, str]:
    if case.transit:
        return {"X-Vault-Token": creds["vault_token"]}
    return {"X-App-Id": creds["app_id"], "X-Api-Key": creds["api_key"]}


def send(http: httpx.Client, case: Case, target: Target, creds: dict[str, str]
         ) -> httpx.Response:
    body = case.body(target)
    if "/attest/" in case.template and not case.template.endswith("/nonce"):
        # A nonce (which a workload credential may have) and evidence from no TEE at all.
        nonce = http.post(f"/v1/keys/{target.name}/attest/nonce",
                          headers=headers_for(case, creds)).json()["nonce"]
        body = {"nonce": nonce, "tee": "simulated", "evidence": b64(b"no TEE here"),
                "public_key": b64(EphemeralKey.generate().public_bytes)}
        if case.template.endswith("/attest/unwrap"):
            body["wrapped"] = target.wrapped
        else:
            body["ciphertext"] = target.ciphertext
    return http.request(case.method, case.path(target), json=body,
                        headers=headers_for(case, creds))


def warm_up(http: httpx.Client, target: Target, creds: dict[str, str]) -> None:
    """One verified request, so the next ones skip scrypt (and take the lean route)."""
    response = http.get(f"/v1/keys/{target.name}", headers=headers_for(CASES[0], creds))
    assert response.status_code == 200, response.text


def state(setup: KmsSetup, name: str) -> tuple[object, ...]:
    """What a refused change must leave as it was (read with the owner credential)."""
    with setup.kms() as kms:
        described = kms.describe(name)
        names = sorted(k.name for k in kms.list_keys())
        policy = kms.get_policy(name)
        credentials = sorted((c.credential_id, c.revoked) for c in kms.credentials())
    return described, names, policy, credentials


def audit_entry(setup: KmsSetup, response: httpx.Response) -> dict[str, Any]:
    wanted = response.headers["x-request-id"]
    for line in (setup.server.data / "audit.log").read_text().splitlines():
        doc = json.loads(line)
        if doc["request_id"] == wanted:
            return dict(doc)
    raise AssertionError(f"no audit line for request {wanted}")


def assert_no_material(target: Target, response: httpx.Response) -> None:
    for secret in target.secrets():
        assert secret not in response.content
    assert "plaintext" not in response.text and "jwe" not in response.text


# -- a workload credential and an attested-only key ------------------------------------------------


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
@pytest.mark.parametrize("case", REFUSED, ids=[c.id for c in REFUSED])
def test_a_workload_credential_gets_no_key_material_and_changes_nothing(
        setup: KmsSetup, attested: Target, case: Case, warm: bool) -> None:
    workload = setup.workload(label=case.id)
    before = state(setup, attested.name)
    with setup.http() as http:
        if warm:
            warm_up(http, attested, workload)
        response = send(http, case, attested, workload)
    assert (response.status_code, response.json().get("code")) in \
        ((403, "forbidden"), (403, None)), response.text
    if case.transit:
        assert response.json()["errors"]
    assert_no_material(attested, response)
    assert state(setup, attested.name) == before
    entry = audit_entry(setup, response)
    assert (entry["app"], entry["credential"], entry["result"]) == \
        (setup.app_a["app_id"], workload["credential_id"], "PermissionDeniedError")


@pytest.mark.parametrize("case", [c for c in CASES if c.kind in (READ, WRAP, ATTEST)],
                         ids=lambda c: c.id)
def test_what_a_workload_credential_may_do_gives_no_key_material(
        setup: KmsSetup, attested: Target, case: Case) -> None:
    workload = setup.workload()
    with setup.http() as http:
        warm_up(http, attested, workload)
        response = send(http, case, attested, workload)
    if case.template.endswith(("/attest/unwrap", "/attest/transit-decrypt")):
        assert (response.status_code, response.json()["code"]) == (403, "attestation_denied")
    else:
        assert response.status_code == 200, response.text
    for secret in attested.secrets():
        assert secret not in response.content


@pytest.mark.parametrize("case", [c for c in CASES if c.kind in (CREDENTIALS, ADMIN)],
                         ids=lambda c: c.id)
def test_a_workload_credential_has_no_owner_or_admin_calls(
        setup: KmsSetup, attested: Target, case: Case) -> None:
    workload = setup.workload()
    before = state(setup, attested.name)
    # Its own source address: the refused admin calls count as failed logins of that source
    # (the session's other tests connect from 127.0.0.1).
    with setup.http(source="127.0.0.3") as http:
        warm_up(http, attested, workload)
        response = send(http, case, attested, workload)
    expected = 403 if case.kind == CREDENTIALS else 401
    assert response.status_code == expected, response.text
    assert state(setup, attested.name) == before


def test_a_leaked_workload_credential_plus_no_tee_yields_nothing(
        setup: KmsSetup, attested: Target, platform: tuple[SimulatedProvider, str],
        tmp_path: Path) -> None:
    workload = setup.workload(label="leaked")
    answers = b""
    with setup.http(source="127.0.0.4") as http:
        for case in CASES:
            for _ in range(2):  # cold, then warm
                answers += send(http, case, attested, workload).content
    for secret in attested.secrets():
        assert secret not in answers
    creds = Credentials(workload["app_id"], workload["api_key"])
    wrapped = base64.b64decode(attested.wrapped)
    with RemoteKms(setup.server.url, creds, ca_file=setup.server.ca) as kms:
        with pytest.raises(PermissionDeniedError, match="attested workers"):
            kms.unwrap_data_key(attested.name, wrapped)
        with pytest.raises(PermissionDeniedError, match="attested workers"):
            kms.generate_data_key(attested.name)
        # Evidence of a platform the operator never registered is no TEE either.
        stranger = SimulatedProvider(key_path=tmp_path / "stranger.key", measurement=MEASUREMENT)
        with pytest.raises(PolicyDeniedError) as denied:
            kms.attested_unwrap(attested.name, wrapped, stranger)
        assert denied.value.reason == "signature"
        # With the TEE (the registered simulated platform), attested release works for it.
        assert kms.attested_unwrap(attested.name, wrapped, platform[0]) == attested.data_key
        # And a wrapped data key for an output, which it may always make, unwraps only so.
        output = kms.generate_wrapped_data_key(attested.name)
        with pytest.raises(PermissionDeniedError):
            kms.unwrap_data_key(attested.name, output)
        assert len(kms.attested_unwrap(attested.name, output, platform[0])) == 32


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
@pytest.mark.parametrize("case", [c for c in CASES if c.kind == MATERIAL], ids=lambda c: c.id)
def test_the_owner_still_decrypts_and_each_release_is_audited(
        setup: KmsSetup, attested: Target, case: Case, warm: bool) -> None:
    owner = setup.app_a
    with setup.http() as http:
        if warm:
            warm_up(http, attested, owner)
        response = send(http, case, attested, owner)
    assert response.status_code == 200, response.text
    doc = response.json()
    plaintext = doc["data"]["plaintext"] if case.transit else doc["plaintext"]
    if case.template in ("/v1/keys/{name}/unwrap",):
        assert base64.b64decode(plaintext) == attested.data_key
    if case.template == "/v1/transit/decrypt/{name}":
        assert base64.b64decode(plaintext) == attested.transit_key
    entry = audit_entry(setup, response)
    assert entry["result"] == "ok" and entry["credential"] == owner["credential_id"]
    assert entry["detail"] == {
        "attested_only": "released to the owner credential without attestation"}


# -- trusted-cluster mode ----------------------------------------------------------------------


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
def test_keys_without_a_policy_are_the_trusted_cluster_mode(setup: KmsSetup, warm: bool,
                                                            platform: tuple[SimulatedProvider,
                                                                            str]) -> None:
    target = make_target(setup, None)
    workload = setup.workload(label="trusted cluster")
    with setup.http() as http:
        if warm:
            warm_up(http, target, workload)
        for case in [c for c in CASES if c.kind in (MATERIAL, SEAL)]:
            response = send(http, case, target, workload)
            assert response.status_code == 200, (case.id, response.text)
            entry = audit_entry(setup, response)
            assert entry["detail"] is None  # not an attested-only key: an ordinary release
        unwrap = CASES[0]
        assert base64.b64decode(send(http, unwrap, target, workload).json()["plaintext"]) == \
            target.data_key
        # Still no key maintenance.
        assert http.post(f"/v1/keys/{target.name}/rotate",
                         headers=headers_for(unwrap, workload)).status_code == 403
        # The owner gives the key a policy: the very next request is refused.
        with setup.kms() as kms:
            kms.set_policy(target.name, simulated_policy(platform[1]))
        refused = send(http, unwrap, target, workload)
        assert refused.status_code == 403 and "attested workers" in refused.json()["error"]


# -- policies ------------------------------------------------------------------------------------


def test_policy_changes_need_the_owner_or_admin_and_are_audited_with_digests(
        setup: KmsSetup, platform: tuple[SimulatedProvider, str]) -> None:
    target = make_target(setup, None)
    first = simulated_policy(platform[1])
    second = AttestationPolicy.from_dict({"sgx": {"mr_enclave": ["11" * 32]}})
    owner, workload = setup.headers(), setup.headers(setup.workload())
    with setup.http() as http:
        set_first = http.put(f"/v1/keys/{target.name}/policy", headers=owner,
                             json={"policy": first.to_dict()})
        refused = http.put(f"/v1/keys/{target.name}/policy", headers=workload,
                           json={"policy": {}})
        read = http.get(f"/v1/keys/{target.name}/policy", headers=workload)
    assert set_first.status_code == 200 and refused.status_code == 403
    assert read.status_code == 200 and read.json()["policy"] == first.to_dict()
    with setup.admin() as admin:
        assert admin.set_policy(setup.app_a["app_id"], target.name, second) == second
    with setup.kms() as kms:
        assert kms.get_policy(target.name) == second
    with setup.http() as http:
        path = f"/v1/admin/apps/{setup.app_a['app_id']}/keys/{target.name}/policy"
        assert http.get(path, headers={"X-Admin-Token": setup.admin_token}).json() == \
            {"name": target.name, "policy": second.to_dict()}
        # The admin route knows no key of another app by that name either.
        other = f"/v1/admin/apps/{setup.app_b['app_id']}/keys/{target.name}/policy"
        assert http.get(other, headers={"X-Admin-Token": setup.admin_token}).status_code == 404
    lines = [json.loads(line) for line in
             (setup.server.data / "audit.log").read_text().splitlines()]
    changes = [e for e in lines if e["op"] == "key.policy" and e["key"] == target.name]
    assert [(e["app"], e["result"]) for e in changes] == [
        (setup.app_a["app_id"], "ok"), (setup.app_a["app_id"], "PermissionDeniedError"),
        ("admin", "ok")]
    first_digest = policy_digest(first.to_json())
    assert first_digest.startswith("sha256:") and len(first_digest) == 7 + 64
    assert changes[0]["detail"] == {"new_policy": first_digest, "old_policy": "none"}
    assert changes[2]["detail"] == {"app_id": setup.app_a["app_id"],
                                    "new_policy": policy_digest(second.to_json()),
                                    "old_policy": first_digest}
    reads = [(e["app"], e["result"], e["detail"]) for e in lines
             if e["op"] == "key.get_policy" and e["key"] == target.name]
    assert (setup.app_a["app_id"], "ok", None) in reads  # the workload credential's read
    assert reads[-2:] == [("admin", "ok", {"app_id": setup.app_a["app_id"]}),
                          ("admin", "KeyNotFoundError", {"app_id": setup.app_b["app_id"]})]


# -- an owner's workload credentials, and the CLI ---------------------------------------------


def test_the_owner_mints_and_revokes_its_workload_credentials(setup: KmsSetup) -> None:
    target = make_target(setup, None)
    with setup.kms() as owner:
        new = owner.create_workload_credential("etl cluster")
        assert (new.app_id, new.role, new.label) == (setup.app_a["app_id"], "workload",
                                                     "etl cluster")
        assert new.api_key.startswith(new.credential_id + "_")
        listed = {c.credential_id: c for c in owner.credentials()}
        assert listed[new.credential_id].revoked is None
        creds = Credentials(new.app_id, new.api_key)
        with RemoteKms(setup.server.url, creds, ca_file=setup.server.ca) as cluster:
            assert cluster.describe_key(target.name).name == target.name
            # A workload credential mints nothing, and an owner mints no owner credentials.
            with pytest.raises(PermissionDeniedError):
                cluster.create_workload_credential()
            with setup.http() as http:
                minted = http.post("/v1/credentials", headers=setup.headers(),
                                   json={"role": "owner"})
            assert minted.status_code == 403
            # Another app's owner cannot see or revoke this app's credential.
            with setup.kms(setup.app_b) as other:
                with pytest.raises(Exception, match="has no credential"):
                    other.revoke_credential(new.credential_id)
            revoked = owner.revoke_credential(new.credential_id)
            assert revoked.revoked is not None
            with pytest.raises(CredentialsError):
                cluster.describe_key(target.name)


def test_cli_credential_create_list_revoke(setup: KmsSetup) -> None:
    flags = ["--kms", setup.server.url, "--kms-ca", str(setup.server.ca)]
    token = {"CIPHERSPARK_KMS_ADMIN_TOKEN": setup.admin_token}
    app_id = setup.app_a["app_id"]
    made = json.loads(cli("kms", "credential", "create", "--app", app_id, "--role", "workload",
                          "--label", "spark on k8s", "--json", *flags, env=token).stdout)
    assert {"app_id", "api_key", "credential_id", "vault_token"} <= set(made)
    assert made["app_id"] == app_id and made["vault_token"] == f"{app_id}.{made['api_key']}"
    env = {"CIPHERSPARK_APP_ID": app_id, "CIPHERSPARK_API_KEY": made["api_key"],
           "CIPHERSPARK_KMS": setup.server.url, "CIPHERSPARK_KMS_CA": str(setup.server.ca)}
    assert cli("key", "list", env=env).returncode == 0
    # A workload credential cannot create keys, and says so in one line.
    refused = cli("key", "create", unique("nope"), env=env, check=False)
    assert refused.returncode == 1 and "owner credential" in refused.stderr
    listed = cli("kms", "credential", "list", "--app", app_id, *flags, env=token).stdout
    line = next(x for x in listed.splitlines() if x.startswith(made["credential_id"]))
    assert "workload" in line and "active" in line and line.endswith("spark on k8s")
    assert made["api_key"] not in listed
    as_json = json.loads(cli("kms", "credential", "list", "--app", app_id, "--json", *flags,
                             env=token).stdout)
    assert {"credential_id", "role", "label", "created", "revoked"} <= set(as_json[0])
    revoked = cli("kms", "credential", "revoke", "--app", app_id, made["credential_id"], *flags,
                  env=token)
    assert f"revoked the workload credential {made['credential_id']}" in revoked.stdout
    refused = cli("key", "list", env=env, check=False)
    assert refused.returncode == 1 and "rejected the credentials" in refused.stderr
    missing = cli("kms", "credential", "revoke", "--app", app_id, "cred-0000000000000000",
                  *flags, env=token, check=False)
    assert missing.returncode == 1 and "has no credential" in missing.stderr
