"""The simulated TEE, the real providers' file protocols, ``auto``, and the JWE binding."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cipherspark.attestation import (
    AttestationPolicy,
    EphemeralKey,
    GramineSgxProvider,
    SimulatedProvider,
    bind,
    check_binding,
    code_measurement,
    evidence_provider,
    load_simulated_platform_key,
    seal_to,
    simulated_evidence,
    simulated_platform_public_key,
    validate_platform_key,
    verify_evidence,
    verify_simulated,
)
from cipherspark.errors import AttestationError, PolicyDeniedError, UsageError


def test_simulated_evidence_verifies_only_against_the_registered_key(tmp_path: Path) -> None:
    key = load_simulated_platform_key(tmp_path / "platform.key")
    assert (tmp_path / "platform.key").stat().st_mode & 0o077 == 0
    public = simulated_platform_public_key(key)
    assert simulated_platform_public_key(load_simulated_platform_key(tmp_path / "platform.key")) \
        == public
    evidence = SimulatedProvider(key).evidence(b"\7" * 64)
    report = verify_simulated(evidence.quote, [public])
    assert (report.tee, report.report_data) == ("simulated", b"\7" * 64)
    assert report.measurement == code_measurement()
    other = simulated_platform_public_key(load_simulated_platform_key(tmp_path / "other.key"))
    with pytest.raises(AttestationError) as info:
        verify_simulated(evidence.quote, [other])
    assert info.value.reason == "signature"
    forged = evidence.quote.replace(b'"signature": "', b'"signature": "00')
    with pytest.raises(AttestationError):
        verify_simulated(forged, [public])


def test_operator_keys_intersect_with_the_trusted_ones(tmp_path: Path) -> None:
    """The KMS server's case: a policy's platform keys count only where the operator
    registered them too; without any registration, everything is denied with the fix."""
    key = load_simulated_platform_key(tmp_path / "platform.key")
    public = simulated_platform_public_key(key)
    other = simulated_platform_public_key(load_simulated_platform_key(tmp_path / "other.key"))
    evidence = SimulatedProvider(key).evidence(b"\1" * 64)
    policy = AttestationPolicy.from_dict({
        "tee_types": ["simulated"],
        "simulated": {"platform_keys": [public, other], "measurements": [code_measurement()]}})
    assert verify_evidence(evidence, policy=policy,
                           operator_platform_keys=[public.upper()]).platform_key == public
    cases = {(): "no simulated platform is registered at this KMS: the operator runs "
                 "'cipherspark kms simulated-platform add KEY'",
             (other,): f"{public} is not registered at this KMS: the operator runs "
                       f"'cipherspark kms simulated-platform add {public}'"}
    for operator, message in cases.items():
        with pytest.raises(AttestationError) as info:
            verify_evidence(evidence, policy=policy, operator_platform_keys=operator)
        assert info.value.reason == "signature"
        assert message in str(info.value)
    # Registered by the operator but not listed by the policy: still denied.
    narrow = AttestationPolicy.from_dict({
        "tee_types": ["simulated"],
        "simulated": {"platform_keys": [other], "measurements": [code_measurement()]}})
    with pytest.raises(AttestationError) as info:
        verify_evidence(evidence, policy=narrow, operator_platform_keys=[public, other])
    assert info.value.reason == "signature" and "simulated.platform_keys" in str(info.value)
    # A policy that does not name simulated says so first, whatever the operator registered.
    sgx_only = AttestationPolicy.from_dict({"sgx": {"mr_enclave": ["00" * 32]}})
    with pytest.raises(PolicyDeniedError) as info:
        verify_evidence(evidence, policy=sgx_only, operator_platform_keys=())
    assert info.value.reason == "tee_type"


def test_platform_keys_are_validated_and_lowercased() -> None:
    assert validate_platform_key("AB" * 32) == "ab" * 32
    for bad in ("", "ab" * 31, "ab" * 33, "gg" * 32, " " + "ab" * 32, "x" * 10_000):
        with pytest.raises(UsageError, match="64 hex digits"):
            validate_platform_key(bad)


def test_simulated_evidence_ages(tmp_path: Path) -> None:
    key = load_simulated_platform_key(tmp_path / "k")
    old = simulated_evidence(key, b"\0" * 64, timestamp=1_000)
    with pytest.raises(AttestationError) as info:
        verify_simulated(old.quote, [simulated_platform_public_key(key)], max_age=60)
    assert info.value.reason == "expired"


def test_changed_code_changes_the_measurement(tmp_path: Path) -> None:
    package = Path(code_measurement.__code__.co_filename).resolve().parents[1]
    copy = tmp_path / "cipherspark"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert code_measurement(copy) == code_measurement()
    with open(copy / "errors.py", "a") as f:
        f.write("\n# one more line\n")
    assert code_measurement(copy) != code_measurement()


def test_simulated_must_be_named_by_the_policy(tmp_path: Path) -> None:
    key = load_simulated_platform_key(tmp_path / "k")
    evidence = SimulatedProvider(key).evidence(b"\0" * 64)
    sgx_only = AttestationPolicy.from_dict({"sgx": {"mr_enclave": ["00" * 32]}})
    with pytest.raises(PolicyDeniedError) as info:
        verify_evidence(evidence, policy=sgx_only)
    assert info.value.reason == "tee_type"
    # A policy with a simulated section but without "simulated" in tee_types refuses too.
    section = {"platform_keys": [simulated_platform_public_key(key)],
               "measurements": [code_measurement()]}
    unnamed = AttestationPolicy.from_dict({"sgx": {"mr_enclave": ["00" * 32]},
                                           "simulated": section})
    with pytest.raises(PolicyDeniedError):
        verify_evidence(evidence, policy=unnamed)
    named = AttestationPolicy.from_dict({"tee_types": ["simulated"], "simulated": section})
    verify_evidence(evidence, policy=named)


def test_gramine_provider_file_protocol(tmp_path: Path) -> None:
    (tmp_path / "quote").write_bytes(b"QUOTE")
    evidence = GramineSgxProvider(tmp_path).evidence(b"\5" * 64)
    assert (tmp_path / "user_report_data").read_bytes() == b"\5" * 64
    assert (evidence.tee, evidence.quote) == ("sgx", b"QUOTE")
    with pytest.raises(AttestationError):
        GramineSgxProvider(tmp_path).evidence(b"short")


def test_auto_refuses_rather_than_simulating(tmp_path: Path) -> None:
    with pytest.raises(AttestationError) as info:
        evidence_provider("auto", gramine_dir=tmp_path / "no-gramine",
                          tsm_dir=tmp_path / "no-tsm")
    assert info.value.reason == "unavailable" and "simulated" in str(info.value)
    (tmp_path / "gramine").mkdir()
    assert evidence_provider("auto", gramine_dir=tmp_path / "gramine").tee == "sgx"
    (tmp_path / "tsm").mkdir()
    assert evidence_provider("auto", gramine_dir=tmp_path / "none",
                             tsm_dir=tmp_path / "tsm").tee == "tdx"
    with pytest.raises(AttestationError):
        evidence_provider("sev")


def test_tdx_provider_without_configfs_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(AttestationError) as info:
        evidence_provider("tdx", tsm_dir=tmp_path / "absent").evidence(b"\0" * 64)
    assert info.value.reason == "unavailable"


def test_binding_and_jwe_open_only_with_the_ephemeral_key() -> None:
    nonce, ephemeral = b"n" * 32, EphemeralKey.generate()
    check_binding(bind(nonce, ephemeral.public_bytes), nonce, ephemeral.public_bytes)
    with pytest.raises(AttestationError) as info:
        check_binding(bind(nonce, ephemeral.public_bytes), nonce,
                      EphemeralKey.generate().public_bytes)
    assert info.value.reason == "binding"
    token = seal_to(ephemeral.public_bytes, b"k" * 32)
    assert b"k" * 32 not in token.encode()
    assert ephemeral.open(token) == b"k" * 32
    with pytest.raises(AttestationError):
        EphemeralKey.generate().open(token)
