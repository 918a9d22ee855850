"""What :class:`KeyManagementService` declares: closing, and the optional capabilities (release
policies, attested unwrap) that a backend without them refuses with one clear error — also when
an executor asks for attested release (no ``isinstance`` on backends there)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cipherspark import settings
from cipherspark.attestation import AttestationPolicy, SimulatedProvider
from cipherspark.errors import KmsUnavailableError
from cipherspark.kms import DataKey, KeyInfo, KeyManagementService, LocalKms
from cipherspark.spark import _executor
from tests.conftest import TEST_KEY


class Minimal(KeyManagementService):
    """A backend implementing only the abstract methods (unwrap is the identity)."""

    closed = 0

    @property
    def url(self) -> str:
        return "minimal://"

    def create_key(self, name: str) -> KeyInfo:
        return KeyInfo(name, 1, "now")

    def list_keys(self) -> list[KeyInfo]:
        return []

    def describe_key(self, name: str) -> KeyInfo:
        return KeyInfo(name, 1, "now")

    def generate_data_key(self, key_id: str) -> DataKey:
        return DataKey(key_id, b"k" * 32, b"k" * 32)

    def unwrap_data_key(self, key_id: str, wrapped: bytes) -> bytes:
        return wrapped

    def close(self) -> None:
        self.closed += 1


@pytest.fixture
def executor_with(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, KeyManagementService]]:
    """The executor's per-process caches, empty, to be filled with a backend per URL."""
    backends: dict[str, KeyManagementService] = {}
    monkeypatch.setattr(_executor, "_kms", backends)
    monkeypatch.setattr(_executor, "_data_keys", {})
    yield backends


def test_capabilities_a_backend_lacks_need_a_kms_server() -> None:
    kms = Minimal()
    policy = AttestationPolicy.from_dict({})
    calls = [lambda: kms.get_policy("k"), lambda: kms.set_policy("k", policy),
             lambda: kms.check_attested_release("tdx"),
             lambda: kms.attested_unwrap("k", b"w", SimulatedProvider())]
    for call in calls:
        with pytest.raises(KmsUnavailableError, match=r"needs a KMS server \(https://\)"):
            call()
    assert kms.generate_wrapped_data_key("k") == b"k" * 32


def test_every_service_is_a_closing_context_manager(kms: LocalKms) -> None:
    with Minimal() as minimal:
        assert minimal.list_keys() == []
    assert minimal.closed == 1
    with kms as same:
        assert same is kms
    kms.close()  # nothing to release, and harmless twice
    assert kms.describe_key(TEST_KEY).name == TEST_KEY


def test_the_local_keystore_refuses_real_tees_before_any_evidence(kms: LocalKms) -> None:
    kms.check_attested_release("simulated")
    for tee in ("gramine-sgx", "tdx", "auto", "sgx"):
        with pytest.raises(KmsUnavailableError, match=r"needs a KMS server \(https://\)"):
            kms.check_attested_release(tee)


def test_executor_lets_the_backend_refuse(executor_with: dict[str, KeyManagementService],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    executor_with["minimal://"] = Minimal()
    monkeypatch.setenv(settings.ENV_TEE, "simulated")
    with pytest.raises(KmsUnavailableError,
                       match=r"CIPHERSPARK_TEE=simulated: attested key release needs a KMS "
                             r"server \(https://\)"):
        _executor.executor_data_key("minimal://", "k", b"w" * 32)
    monkeypatch.setenv(settings.ENV_TEE, "none")
    assert _executor.executor_data_key("minimal://", "k", b"w" * 32) == b"w" * 32
