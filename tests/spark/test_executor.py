"""Executor-side key access: credentials from the environment or from mounted files."""

from __future__ import annotations

from pathlib import Path

import pytest

from cipherspark.errors import CredentialsError
from cipherspark.kms import LocalKms
from cipherspark.spark import _executor
from tests.conftest import TEST_CREDENTIALS, TEST_KEY


def test_credentials_from_mounted_files(
    kms: LocalKms, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "app").write_text(TEST_CREDENTIALS.app_id + "\n")
    (tmp_path / "key").write_text(TEST_CREDENTIALS.api_key + "\n")
    monkeypatch.delenv("CIPHERSPARK_APP_ID")
    monkeypatch.delenv("CIPHERSPARK_API_KEY")
    monkeypatch.setenv("CIPHERSPARK_APP_ID_FILE", str(tmp_path / "app"))
    monkeypatch.setenv("CIPHERSPARK_API_KEY_FILE", str(tmp_path / "key"))
    monkeypatch.setattr(_executor, "_kms", {})
    monkeypatch.setattr(_executor, "_data_keys", {})
    data_key = kms.generate_data_key(TEST_KEY)
    assert _executor.executor_data_key(kms.url, TEST_KEY, data_key.wrapped) == data_key.plaintext


def test_unreadable_credentials_file_is_a_clear_error(
    kms: LocalKms, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CIPHERSPARK_API_KEY")
    monkeypatch.setenv("CIPHERSPARK_API_KEY_FILE", str(tmp_path / "absent"))
    monkeypatch.setattr(_executor, "_kms", {})
    with pytest.raises(CredentialsError, match="CIPHERSPARK_API_KEY_FILE"):
        _executor.executor_kms(kms.url)


def test_no_credentials_at_all(kms: LocalKms, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CIPHERSPARK_APP_ID")
    monkeypatch.delenv("CIPHERSPARK_API_KEY")
    monkeypatch.setattr(_executor, "_kms", {})
    with pytest.raises(CredentialsError):
        _executor.executor_kms(kms.url)


class _Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.mark.parametrize("ttl", [None, "30"])
def test_a_key_taken_away_at_the_kms_stops_working_within_the_cache_period(
    kms: LocalKms, monkeypatch: pytest.MonkeyPatch, ttl: str | None
) -> None:
    """A long-lived worker (a reused Python worker, a Parquet key helper) must not keep a key
    for its whole life: once the KMS stops giving it out, the worker loses it within
    CIPHERSPARK_KEY_CACHE_SECONDS (600 s by default), and holds nothing expired."""
    from cipherspark.errors import KeyNotFoundError

    clock = _Clock()
    monkeypatch.setattr(_executor, "time", clock)
    monkeypatch.setattr(_executor, "_kms", {})
    monkeypatch.setattr(_executor, "_data_keys", {})
    if ttl is None:
        monkeypatch.delenv("CIPHERSPARK_KEY_CACHE_SECONDS", raising=False)
    else:
        monkeypatch.setenv("CIPHERSPARK_KEY_CACHE_SECONDS", ttl)
    period = 600 if ttl is None else int(ttl)
    data_key = kms.generate_data_key(TEST_KEY)
    assert _executor.executor_data_key(kms.url, TEST_KEY, data_key.wrapped) == data_key.plaintext
    # Taken away at the KMS (as a revocation or a deleted key would).
    key_file = Path(kms.url.removeprefix("file://")) / "keys" / f"{TEST_KEY}.json"
    key_file.rename(key_file.with_suffix(".gone"))
    clock.now += period - 1  # within the period: the cached key serves, the KMS is not asked
    assert _executor.executor_data_key(kms.url, TEST_KEY, data_key.wrapped) == data_key.plaintext
    clock.now += 1
    with pytest.raises(KeyNotFoundError):
        _executor.executor_data_key(kms.url, TEST_KEY, data_key.wrapped)
    assert _executor._data_keys == {}


@pytest.mark.parametrize("value", ["0", "-5", "ten", "1.5"])
def test_a_bad_key_cache_period_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    from cipherspark.errors import UsageError
    from cipherspark.settings import executor_config

    monkeypatch.setenv("CIPHERSPARK_KEY_CACHE_SECONDS", value)
    with pytest.raises(UsageError, match="CIPHERSPARK_KEY_CACHE_SECONDS"):
        executor_config()
