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
