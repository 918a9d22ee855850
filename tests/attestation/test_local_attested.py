"""Attested release with the embedded keystore (``file://``): the simulated TEE, in-process.

New local keys get a stored policy that allows only ``simulated`` (this installation's platform
key and code measurement); the executor runs the release protocol against it with the server's
verifier and policy code, and refuses real TEEs (they need the KMS server).
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from cipherspark.attestation import (
    AttestationPolicy,
    SimulatedProvider,
    code_measurement,
    load_simulated_platform_key,
    simulated_platform_public_key,
)
from cipherspark.cli import main
from cipherspark.errors import KmsUnavailableError, PolicyDeniedError
from cipherspark.kms import LocalKms, local, open_kms
from cipherspark.spark import _executor
from tests.conftest import TEST_CREDENTIALS

KEY = "laptop-key"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Cheap scrypt, a clean working folder, and empty executor caches for each test."""
    monkeypatch.setattr(local, "_SCRYPT", {"n": 1 << 10, "r": 8, "p": 1})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(_executor, "_kms", {})
    monkeypatch.setattr(_executor, "_data_keys", {})
    for name in ("CIPHERSPARK_KMS", "CIPHERSPARK_TEE", "CIPHERSPARK_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    yield


@pytest.fixture
def store(tmp_path: Path) -> LocalKms:
    """A keystore with primary key ``KEY`` (created with its default policy)."""
    kms = open_kms((tmp_path / "ks").as_uri(), TEST_CREDENTIALS, create=True)
    assert isinstance(kms, LocalKms)
    kms.create_key(KEY)
    return kms


def _this_platform() -> str:
    return simulated_platform_public_key(load_simulated_platform_key())


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    assert TEST_CREDENTIALS.api_key not in out + err
    return code, out, err


def _unwrap(kms: LocalKms, wrapped: bytes, monkeypatch: pytest.MonkeyPatch,
            tee: str = "simulated") -> bytes:
    monkeypatch.setenv("CIPHERSPARK_TEE", tee)
    monkeypatch.setattr(_executor, "_data_keys", {})
    return _executor.executor_data_key(kms.url, KEY, wrapped)


def test_new_local_key_has_a_simulated_only_policy(store: LocalKms) -> None:
    policy = store.get_policy(KEY)
    assert policy is not None
    assert policy.tee_types == ("simulated",)
    assert policy.simulated is not None
    assert policy.simulated.platform_keys == (_this_platform(),)
    assert policy.simulated.measurements == (code_measurement(),)
    path = Path(store.url.removeprefix("file://")) / "policies" / f"{KEY}.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # The same JSON the KMS server stores, and not mistaken for a key.
    assert AttestationPolicy.from_json(path.read_bytes()) == policy
    assert [info.name for info in store.list_keys()] == [KEY]


def test_cli_key_create_says_the_policy_allows_simulated(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(capsys, "key", "create", KEY)
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 2
    assert "allows the simulated TEE" in lines[1] and "development only" in lines[1]
    code, out, _ = _cli(capsys, "key", "policy", "show", KEY)
    assert code == 0
    shown = json.loads(out)
    assert shown["tee_types"] == ["simulated"]
    assert shown["simulated"]["platform_keys"] == [_this_platform()]


def test_local_attested_unwrap_with_simulated(store: LocalKms,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    data_key = store.generate_data_key(KEY)
    assert _unwrap(store, data_key.wrapped, monkeypatch) == data_key.plaintext
    # The library call directly, too.
    assert store.attested_unwrap(KEY, data_key.wrapped, SimulatedProvider()) \
        == data_key.plaintext


def test_denied_after_policy_without_simulated(store: LocalKms, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    wrapped = store.generate_data_key(KEY).wrapped
    sgx_only = tmp_path / "sgx.json"
    sgx_only.write_text(json.dumps({"tee_types": ["sgx"],
                                    "sgx": {"mr_enclave": ["ab" * 32]}}))
    code, out, _ = _cli(capsys, "key", "policy", "set", KEY, str(sgx_only),
                        "--kms", store.url)
    assert code == 0, out
    assert json.loads(out)["tee_types"] == ["sgx"]
    with pytest.raises(PolicyDeniedError) as denied:
        _unwrap(store, wrapped, monkeypatch)
    assert denied.value.reason == "tee_type"


def test_denied_after_the_measurement_changes(store: LocalKms,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    wrapped = store.generate_data_key(KEY).wrapped
    policy = store.get_policy(KEY)
    assert policy is not None
    doc = policy.to_dict()
    doc["simulated"]["measurements"] = ["00" * 32]
    store.set_policy(KEY, AttestationPolicy.from_dict(doc))
    with pytest.raises(PolicyDeniedError) as denied:
        _unwrap(store, wrapped, monkeypatch)
    assert denied.value.reason == "measurement"


def test_denied_for_another_platform_key(store: LocalKms, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    wrapped = store.generate_data_key(KEY).wrapped
    monkeypatch.setenv("CIPHERSPARK_SIMULATED_TEE_KEY", str(tmp_path / "other.key"))
    with pytest.raises(PolicyDeniedError) as denied:
        _unwrap(store, wrapped, monkeypatch)
    assert denied.value.reason == "signature"


@pytest.mark.parametrize("policy", [None, {}])
def test_missing_or_empty_policy_denies(store: LocalKms, policy: dict[str, object] | None,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    wrapped = store.generate_data_key(KEY).wrapped
    if policy is None:
        (Path(store.url.removeprefix("file://")) / "policies" / f"{KEY}.json").unlink()
        assert store.get_policy(KEY) is None
    else:
        store.set_policy(KEY, AttestationPolicy.from_dict(policy))
    with pytest.raises(PolicyDeniedError) as denied:
        _unwrap(store, wrapped, monkeypatch)
    assert denied.value.reason == "no_policy"


@pytest.mark.parametrize("tee", ["gramine-sgx", "tdx", "auto"])
def test_real_tee_with_file_kms_is_a_clear_error(store: LocalKms, tee: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    wrapped = store.generate_data_key(KEY).wrapped
    with pytest.raises(KmsUnavailableError, match=r"needs a KMS server \(https://\)"):
        _unwrap(store, wrapped, monkeypatch, tee=tee)


def test_policy_show_and_set_need_an_existing_key(store: LocalKms,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _cli(capsys, "key", "policy", "show", "absent", "--kms", store.url)
    assert code != 0
    assert "absent" in err and "Traceback" not in err


def test_parquet_keys_need_attested_release_to_read_and_to_write(
    store: LocalKms, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Parquet KMS client's helper (cipherspark.spark._pme_keys) with CIPHERSPARK_TEE set:
    wrapping a new file's key and unwrapping an existing one both go through the attested
    release, so a policy that no longer lists this code refuses a job that only writes as well
    as one that reads. (End to end through Spark's JVM and the KMS server:
    tests/spark/test_pme_server.py::test_attested_only_key_with_the_simulated_tee.)"""
    from cipherspark.spark._pme_keys import unwrap_key, wrap_key

    kek = bytes(range(16))
    written_plain = wrap_key(store.url, KEY, kek)  # no TEE: the keystore's own unwrap
    monkeypatch.setenv("CIPHERSPARK_TEE", "simulated")
    written_attested = wrap_key(store.url, KEY, kek)
    monkeypatch.setattr(_executor, "_data_keys", {})
    assert unwrap_key(store.url, KEY, written_attested) == kek
    assert unwrap_key(store.url, KEY, written_plain) == kek

    policy = store.get_policy(KEY)
    assert policy is not None
    doc = policy.to_dict()
    doc["simulated"]["measurements"] = ["cd" * 32]
    store.set_policy(KEY, AttestationPolicy.from_dict(doc))
    monkeypatch.setattr(_executor, "_data_keys", {})
    with pytest.raises(PolicyDeniedError) as denied:
        wrap_key(store.url, KEY, kek)
    assert denied.value.reason == "measurement"
    with pytest.raises(PolicyDeniedError) as denied:
        unwrap_key(store.url, KEY, written_plain)
    assert denied.value.reason == "measurement"
