"""RemoteKms's Vault Transit calls and the throttled-login error, against a real TLS server.

Played as an attacker: a tampered ciphertext, another app's or another key's ciphertext, a
workload credential asking for an attested-only key's plaintext, a client pinning another CA,
and a run of wrong API keys until the server throttles (429), which reaches the caller as
RateLimitedError with the server's Retry-After and reaches the CLI user as one line.

The server is this module's own (``serving``), so the logins it throttles touch no other test.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cipherspark.attestation import AttestationPolicy
from cipherspark.errors import (
    CredentialsError,
    IntegrityError,
    KeyNotFoundError,
    KeyStateError,
    KmsTlsError,
    PermissionDeniedError,
    RateLimitedError,
)
from cipherspark.kms import Credentials
from cipherspark.kms.remote import RemoteKms
from cipherspark.kms.server.tls import ensure_self_signed
from tests.kms.server.conftest import KmsSetup, serving, unique

pytestmark = pytest.mark.servers

SECRET = b"a key-encryption key \x00\xff" + os.urandom(16)
# Attested-only: a release policy no evidence in these tests satisfies.
POLICY = AttestationPolicy.from_dict({"sgx": {"mr_enclave": ["11" * 32]}})


@pytest.fixture(scope="module")
def kms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KmsSetup]:
    with serving(tmp_path_factory.mktemp("kms-transit-client")) as fresh:
        yield fresh


def client(kms: KmsSetup, app: dict[str, str], ca: Path | None = None) -> RemoteKms:
    return RemoteKms(
        kms.server.url, Credentials(app["app_id"], app["api_key"]), ca_file=ca or kms.server.ca
    )


def fresh_key(kms: KmsSetup) -> str:
    name = unique("transit")
    with kms.kms() as owner:
        owner.create_key(name)
    return name


def flipped(ciphertext: str) -> str:
    """``ciphertext`` with one bit of its AES-GCM body changed (still valid base64)."""
    prefix, _, body = ciphertext.rpartition(":")
    raw = bytearray(base64.b64decode(body))
    raw[len(raw) // 2] ^= 0x01
    return f"{prefix}:{base64.b64encode(bytes(raw)).decode()}"


def test_round_trip_across_rotation_and_with_a_vault_client(kms: KmsSetup) -> None:
    name = fresh_key(kms)
    with kms.kms() as owner:
        v1 = owner.transit_encrypt(name, SECRET)
        assert v1.startswith("vault:v1:")
        assert SECRET not in v1.encode() and base64.b64encode(SECRET).decode() not in v1
        assert owner.transit_decrypt(name, v1) == SECRET
        # Fresh nonce per call: the same plaintext never gives the same ciphertext.
        assert owner.transit_encrypt(name, SECRET) != v1
        assert owner.transit_decrypt(name, owner.transit_encrypt(name, b"")) == b""
        owner.rotate_key(name)
        v2 = owner.transit_encrypt(name, SECRET)
        assert v2.startswith("vault:v2:")
        assert owner.transit_decrypt(name, v1) == owner.transit_decrypt(name, v2) == SECRET
    # What a Vault-Transit client (X-Vault-Token) stores and reads, both ways.
    vault = {"X-Vault-Token": kms.app_a["vault_token"]}
    with kms.http() as http:
        answer = http.post(f"/v1/transit/decrypt/{name}", headers=vault, json={"ciphertext": v2})
        assert base64.b64decode(answer.json()["data"]["plaintext"]) == SECRET
        theirs = http.post(
            f"/v1/transit/encrypt/{name}",
            headers=vault,
            json={"plaintext": base64.b64encode(b"from vault").decode()},
        )
    with kms.kms() as owner:
        assert owner.transit_decrypt(name, theirs.json()["data"]["ciphertext"]) == b"from vault"


def test_a_key_that_is_not_there_or_not_ours_is_not_found(kms: KmsSetup) -> None:
    name = fresh_key(kms)
    with kms.kms() as owner:
        ciphertext = owner.transit_encrypt(name, SECRET)
        with pytest.raises(KeyNotFoundError, match="absent"):
            owner.transit_encrypt(unique("absent"), SECRET)
        with pytest.raises(KeyNotFoundError, match="absent"):
            owner.transit_decrypt(unique("absent"), ciphertext)
    # App B, holding app A's ciphertext, learns nothing: no key of that name in its namespace.
    with client(kms, kms.app_b) as other:
        with pytest.raises(KeyNotFoundError):
            other.transit_decrypt(name, ciphertext)


def test_tampered_or_misdirected_ciphertexts_do_not_authenticate(kms: KmsSetup) -> None:
    name, other = fresh_key(kms), fresh_key(kms)
    with kms.kms() as owner:
        ciphertext = owner.transit_encrypt(name, SECRET)
        for bad in (
            flipped(ciphertext),
            ciphertext[:-8] + ciphertext[-4:] + ciphertext[-8:-4],
            ciphertext.replace("vault:v1:", "vault:v9:"),
            "not-a-ciphertext",
        ):
            with pytest.raises(IntegrityError, match=name):
                owner.transit_decrypt(name, bad)
        # Encrypted under another key of the same app: bound to its key.
        with pytest.raises(IntegrityError):
            owner.transit_decrypt(other, ciphertext)
        assert owner.transit_decrypt(name, ciphertext) == SECRET


def test_a_disabled_key_neither_encrypts_nor_decrypts(kms: KmsSetup) -> None:
    name = fresh_key(kms)
    with kms.kms() as owner:
        ciphertext = owner.transit_encrypt(name, SECRET)
        owner.set_enabled(name, False)
        with pytest.raises(KeyStateError):
            owner.transit_encrypt(name, SECRET)
        with pytest.raises(KeyStateError):
            owner.transit_decrypt(name, ciphertext)
        owner.set_enabled(name, True)
        assert owner.transit_decrypt(name, ciphertext) == SECRET


def test_a_workload_credential_gets_no_plaintext_of_an_attested_only_key(kms: KmsSetup) -> None:
    name = fresh_key(kms)
    workload = kms.workload(label="cluster")
    with kms.kms() as owner, client(kms, workload) as cluster:
        before = cluster.transit_encrypt(name, SECRET)  # trusted-cluster mode: no policy yet
        assert cluster.transit_decrypt(name, before) == SECRET
        owner.set_policy(name, POLICY)
        # Nor may it encrypt a plaintext of its choice: a ciphertext under an attested-only key
        # is what attested readers accept as written under it (a forged Parquet KEK). Attested
        # workers write under such keys by attested release; the owner still may.
        with pytest.raises(PermissionDeniedError, match="cannot forge"):
            cluster.transit_encrypt(name, SECRET)
        after = owner.transit_encrypt(name, SECRET)
        for ciphertext in (before, after):
            # ... but from now on it gets no plaintext, whichever ciphertext it holds.
            with pytest.raises(PermissionDeniedError) as denied:
                cluster.transit_decrypt(name, ciphertext)
            assert SECRET.hex() not in str(denied.value)
            # The owner still decrypts (on its own machine).
            assert owner.transit_decrypt(name, ciphertext) == SECRET


def test_transit_pins_the_servers_certificate(kms: KmsSetup, tmp_path: Path) -> None:
    name = fresh_key(kms)
    stranger, _, _ = ensure_self_signed(tmp_path / "other-ca", "127.0.0.1")
    with client(kms, kms.app_a, ca=stranger) as unpinned:
        with pytest.raises(KmsTlsError, match="TLS verification"):
            unpinned.transit_encrypt(name, SECRET)
        with pytest.raises(KmsTlsError):
            unpinned.transit_decrypt(name, "vault:v1:AAAA")


def test_a_throttled_login_is_rate_limited_with_the_servers_retry_after(kms: KmsSetup) -> None:
    victim = kms.new_app(unique("throttled"))
    guess = {**victim, "api_key": victim["api_key"][:-4] + "XXXX"}
    name = unique("anything")
    refused: RateLimitedError | None = None
    with client(kms, guess) as attacker:
        # The server's burst is 10 failures per app id: a few more may pass while it drains.
        for attempt in range(20):
            try:
                attacker.transit_decrypt(name, "vault:v1:AAAA")
            except CredentialsError:
                continue
            except RateLimitedError as exc:
                assert attempt >= 10, f"throttled after {attempt} failures"
                refused = exc
                break
    assert refused is not None, "no 429 after 20 failed logins"
    assert refused.retry_after is not None and 1 <= refused.retry_after <= 60
    assert f"retry in {int(refused.retry_after)} s" in str(refused)
    assert "throttling logins" in str(refused) and victim["api_key"] not in str(refused)
    # The native routes too, and the CLI says it in one line: no traceback, exit code 1.
    with client(kms, guess) as again, pytest.raises(RateLimitedError):
        again.list_keys()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cipherspark",
            "key",
            "list",
            "--kms",
            kms.server.url,
            "--kms-ca",
            str(kms.server.ca),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "CIPHERSPARK_APP_ID": victim["app_id"],
            "CIPHERSPARK_API_KEY": victim["api_key"],
        },
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith("cipherspark: error: listing keys: the KMS at ")
    assert "is throttling logins from this source or app id" in lines[0]
    assert lines[0].endswith(" s"), lines[0]
