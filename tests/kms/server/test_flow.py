"""The key API end to end through RemoteKms against the real server, and the client's errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cipherspark.errors import (
    CredentialsError,
    IntegrityError,
    KeyExistsError,
    KeyNotFoundError,
    KeyStateError,
    KmsTlsError,
    KmsUnavailableError,
)
from cipherspark.files import decrypt_path, encrypt_path
from cipherspark.kms import Credentials, open_kms
from cipherspark.kms.remote import RemoteKms
from cipherspark.kms.server.tls import ensure_self_signed
from tests.kms.server.conftest import KmsSetup, cli, free_port, unique

pytestmark = pytest.mark.servers


def test_full_flow_with_rotation_and_rewrap(setup: KmsSetup) -> None:
    name = unique("flow")
    with setup.kms() as kms:
        info = kms.create_key(name)
        assert (info.name, info.version) == (name, 1)
        assert kms.describe_key(name) == info
        assert name in [k.name for k in kms.list_keys()]

        first = kms.generate_data_key(name)
        assert len(first.plaintext) == 32 and first.plaintext not in first.wrapped
        assert kms.unwrap_data_key(name, first.wrapped) == first.plaintext

        assert kms.rotate_key(name).version == 2
        # The version-1 blob still unwraps after rotation.
        assert kms.unwrap_data_key(name, first.wrapped) == first.plaintext
        second = kms.generate_data_key(name)
        assert second.wrapped[1:5] == (2).to_bytes(4, "big")

        rewrapped = kms.rewrap_data_key(name, first.wrapped)
        assert rewrapped != first.wrapped and rewrapped[1:5] == (2).to_bytes(4, "big")
        assert kms.unwrap_data_key(name, rewrapped) == first.plaintext

        wrapped_only = kms.generate_wrapped_data_key(name)
        assert len(kms.unwrap_data_key(name, wrapped_only)) == 32

        # Retiring version 1: the old blob stops unwrapping, the rewrapped one still works.
        assert kms.set_min_decryption_version(name, 2).version == 2
        with pytest.raises(KeyStateError, match="retired"):
            kms.unwrap_data_key(name, first.wrapped)
        assert kms.unwrap_data_key(name, rewrapped) == first.plaintext
        assert kms.describe(name)["min_decryption_version"] == 2


def test_tampered_wrapped_key_is_an_integrity_error(setup: KmsSetup) -> None:
    name = unique("tamper")
    with setup.kms() as kms:
        kms.create_key(name)
        data_key = kms.generate_data_key(name)
        flipped = bytearray(data_key.wrapped)
        flipped[-1] ^= 1
        with pytest.raises(IntegrityError, match="authenticate"):
            kms.unwrap_data_key(name, bytes(flipped))
        with pytest.raises(IntegrityError, match="malformed"):
            kms.unwrap_data_key(name, data_key.wrapped[:-1])
        other = unique("tamper-other")
        kms.create_key(other)
        # A blob wrapped under one key does not unwrap under another (name bound as AAD).
        with pytest.raises(IntegrityError):
            kms.unwrap_data_key(other, data_key.wrapped)


def test_disable_enable_and_scheduled_deletion(setup: KmsSetup) -> None:
    name = unique("state")
    with setup.kms() as kms:
        kms.create_key(name)
        data_key = kms.generate_data_key(name)
        kms.set_enabled(name, False)
        with pytest.raises(KeyStateError, match="disabled"):
            kms.unwrap_data_key(name, data_key.wrapped)
        with pytest.raises(KeyStateError, match="disabled"):
            kms.generate_data_key(name)
        kms.set_enabled(name, True)
        assert kms.unwrap_data_key(name, data_key.wrapped) == data_key.plaintext

        scheduled = kms.schedule_deletion(name, pending_days=7)
        assert scheduled["deletion_date"]
        with pytest.raises(KeyStateError, match="scheduled for deletion"):
            kms.unwrap_data_key(name, data_key.wrapped)
        kms.cancel_deletion(name)
        assert kms.describe(name)["deletion_date"] is None
        assert kms.unwrap_data_key(name, data_key.wrapped) == data_key.plaintext


def test_duplicate_unknown_and_foreign_keys(setup: KmsSetup) -> None:
    name = unique("owned")
    with setup.kms() as kms, setup.kms(setup.app_b) as other:
        kms.create_key(name)
        with pytest.raises(KeyExistsError):
            kms.create_key(name)
        with pytest.raises(KeyNotFoundError):
            kms.describe_key(unique("absent"))
        data_key = kms.generate_data_key(name)
        # Names live in each app's namespace: to app B, app A's key is a missing key ...
        with pytest.raises(KeyNotFoundError, match="no primary key named"):
            other.unwrap_data_key(name, data_key.wrapped)
        assert name not in [k.name for k in other.list_keys()]
        # ... and B may create its own key of that name, a different key: A's blob does not
        # open under it.
        other.create_key(name)
        with pytest.raises(KeyExistsError):
            other.create_key(name)
        with pytest.raises(IntegrityError):
            other.unwrap_data_key(name, data_key.wrapped)
        assert kms.unwrap_data_key(name, data_key.wrapped) == data_key.plaintext


def test_files_encrypted_through_the_server_decrypt_through_it(setup: KmsSetup,
                                                              tmp_path: Path) -> None:
    name = unique("files")
    plain = tmp_path / "people.csv"
    plain.write_text("name,age,job\n" + "".join(f"p{i},{i % 90},Developer\n"
                                                for i in range(2000)))
    creds = Credentials(setup.app_a["app_id"], setup.app_a["api_key"])
    writer = open_kms(setup.server.url, creds, ca_file=setup.server.ca)
    assert isinstance(writer, RemoteKms)
    writer.create_key(name)
    encrypt_path(plain, tmp_path / "people.cspk", writer, name)
    assert plain.read_bytes()[:40] not in (tmp_path / "people.cspk").read_bytes()
    writer.rotate_key(name)
    reader = open_kms(setup.server.url, creds, ca_file=setup.server.ca)
    decrypt_path(tmp_path / "people.cspk", tmp_path / "back.csv", reader)
    assert (tmp_path / "back.csv").read_bytes() == plain.read_bytes()
    assert isinstance(reader, RemoteKms)
    reader.close()
    writer.close()


def test_existing_cli_commands_reach_the_server(setup: KmsSetup) -> None:
    name = unique("cli")
    env = {"CIPHERSPARK_APP_ID": setup.app_a["app_id"],
           "CIPHERSPARK_API_KEY": setup.app_a["api_key"],
           "CIPHERSPARK_KMS": setup.server.url, "CIPHERSPARK_KMS_CA": str(setup.server.ca)}
    created = cli("key", "create", name, env=env)
    assert name in created.stdout
    listed = cli("key", "list", env=env)
    assert name in listed.stdout
    assert setup.app_a["api_key"] not in created.stdout + listed.stdout


def test_unreachable_server(setup: KmsSetup) -> None:
    url = f"https://127.0.0.1:{free_port()}"
    creds = Credentials(setup.app_a["app_id"], setup.app_a["api_key"])
    with pytest.raises(KmsUnavailableError, match="cannot reach the KMS"):
        open_kms(url, creds, ca_file=setup.server.ca)


def test_wrong_ca_is_a_tls_error(setup: KmsSetup, tmp_path: Path) -> None:
    other_cert, _, _ = ensure_self_signed(tmp_path / "tls", "127.0.0.1")
    creds = Credentials(setup.app_a["app_id"], setup.app_a["api_key"])
    with pytest.raises(KmsTlsError, match=r"TLS verification .* failed") as caught:
        open_kms(setup.server.url, creds, ca_file=other_cert)
    assert str(other_cert) in str(caught.value)


def test_plain_http_needs_the_unsafe_flag(setup: KmsSetup) -> None:
    creds = Credentials(setup.app_a["app_id"], setup.app_a["api_key"])
    with pytest.raises(KmsUnavailableError, match="unsafe"):
        open_kms(f"http://127.0.0.1:{setup.server.port}", creds)


def test_wrong_api_key_through_the_client(setup: KmsSetup) -> None:
    creds = Credentials(setup.app_a["app_id"], "not-the-key")
    with RemoteKms(setup.server.url, creds, ca_file=setup.server.ca) as kms, \
            pytest.raises(CredentialsError, match="rejected the credentials"):
        kms.list_keys()


def test_ca_from_the_executor_config(setup: KmsSetup, monkeypatch: pytest.MonkeyPatch) -> None:
    # The library takes the CA as an argument; Spark's workers get it from their
    # ExecutorConfig, which CIPHERSPARK_KMS_CA carries into their environment.
    from cipherspark.errors import KmsUnavailableError
    from cipherspark.spark import _executor

    monkeypatch.setattr(_executor, "_kms", {})
    monkeypatch.setenv("CIPHERSPARK_APP_ID", setup.app_a["app_id"])
    monkeypatch.setenv("CIPHERSPARK_API_KEY", setup.app_a["api_key"])
    monkeypatch.delenv("CIPHERSPARK_KMS_CA", raising=False)
    with pytest.raises(KmsUnavailableError):
        _executor.executor_kms(setup.server.url)  # the self-signed server is not trusted
    monkeypatch.setenv("CIPHERSPARK_KMS_CA", os.fspath(setup.server.ca))
    kms = _executor.executor_kms(setup.server.url)
    assert isinstance(kms, RemoteKms)
    assert kms.url == setup.server.url
    kms.close()
