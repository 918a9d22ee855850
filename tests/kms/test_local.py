"""The embedded keystore (LocalKms) and ``open_kms`` URL handling."""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from cipherspark.errors import (
    CredentialsError,
    IntegrityError,
    KeyExistsError,
    KeyNotFoundError,
    KmsError,
    KmsUnavailableError,
    UsageError,
)
from cipherspark.kms import (
    Credentials,
    KeyInfo,
    KeyManagementService,
    LocalKms,
    local,
    open_kms,
    validate_key_name,
)
from tests.conftest import TEST_CREDENTIALS, TEST_KEY

OTHER_KEY = "other-key"
DEFAULT_SCRYPT = dict(local._SCRYPT)


@pytest.fixture(autouse=True)
def _fast_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Create test keystores with cheap scrypt (n=2^10) so each test takes milliseconds."""
    monkeypatch.setattr(local, "_SCRYPT", {"n": 1 << 10, "r": 8, "p": 1})


def _keystore_files(kms: LocalKms) -> list[Path]:
    root = Path(kms.url.removeprefix("file://"))
    files = [p for p in root.rglob("*") if p.is_file()]
    assert files, "the keystore should hold files"
    return files


def _reopen(kms: KeyManagementService, credentials: Credentials = TEST_CREDENTIALS) -> LocalKms:
    service = open_kms(kms.url, credentials)
    assert isinstance(service, LocalKms)
    return service


# -- keys -----------------------------------------------------------------------------------------


def test_create_list_describe(kms: LocalKms) -> None:
    info = kms.create_key(OTHER_KEY)
    assert info.name == OTHER_KEY
    assert info.version == 1
    assert info.created  # an ISO timestamp
    assert [k.name for k in kms.list_keys()] == sorted([TEST_KEY, OTHER_KEY])
    assert kms.describe_key(OTHER_KEY) == info
    # A second process (fresh object) sees the same keys.
    assert _reopen(kms).list_keys() == kms.list_keys()


def test_key_info_holds_no_key_material(kms: LocalKms) -> None:
    info = kms.describe_key(TEST_KEY)
    assert isinstance(info, KeyInfo)
    assert set(vars(info)) == {"name", "version", "created"}


def test_empty_keystore_lists_nothing(tmp_path: Path) -> None:
    service = open_kms((tmp_path / "ks").as_uri(), TEST_CREDENTIALS, create=True)
    assert service.list_keys() == []


def test_duplicate_key_is_refused_and_untouched(kms: LocalKms) -> None:
    key_file = Path(kms.url.removeprefix("file://")) / "keys" / f"{TEST_KEY}.json"
    before = key_file.read_bytes()
    data_key = kms.generate_data_key(TEST_KEY)
    with pytest.raises(KeyExistsError, match=TEST_KEY):
        kms.create_key(TEST_KEY)
    assert key_file.read_bytes() == before
    assert kms.unwrap_data_key(TEST_KEY, data_key.wrapped) == data_key.plaintext


def test_unknown_key(kms: LocalKms) -> None:
    with pytest.raises(KeyNotFoundError, match="nope"):
        kms.describe_key("nope")
    with pytest.raises(KeyNotFoundError):
        kms.generate_data_key("nope")
    wrapped = kms.generate_data_key(TEST_KEY).wrapped
    with pytest.raises(KeyNotFoundError):
        kms.unwrap_data_key("nope", wrapped)


@pytest.mark.parametrize(
    "name",
    ["", "../x", "a/b", "a\\b", "x" * 65, ".hidden", "-dash", "_under", "a b", "ключ", "a\x00b",
     "key\n"],
)
def test_invalid_names(kms: LocalKms, name: str) -> None:
    with pytest.raises(UsageError):
        validate_key_name(name)
    with pytest.raises(UsageError):
        kms.create_key(name)
    with pytest.raises(UsageError):
        kms.describe_key(name)
    with pytest.raises(UsageError):
        kms.generate_data_key(name)
    assert [k.name for k in kms.list_keys()] == [TEST_KEY]


@pytest.mark.parametrize("name", ["a", "A.b_c-9", "0", "x" * 64])
def test_valid_names(kms: LocalKms, name: str) -> None:
    assert validate_key_name(name) == name
    assert kms.create_key(name).name == name
    assert kms.describe_key(name).name == name


# -- data keys ------------------------------------------------------------------------------------


def test_generate_unwrap_round_trip(kms: LocalKms) -> None:
    data_key = kms.generate_data_key(TEST_KEY)
    assert data_key.key_id == TEST_KEY
    assert len(data_key.plaintext) == 32
    assert data_key.plaintext not in data_key.wrapped
    assert kms.unwrap_data_key(TEST_KEY, data_key.wrapped) == data_key.plaintext
    # Another instance on the same keystore (e.g. a Spark executor) unwraps it too.
    assert _reopen(kms).unwrap_data_key(TEST_KEY, data_key.wrapped) == data_key.plaintext


def test_data_key_repr_hides_key_bytes(kms: LocalKms) -> None:
    data_key = kms.generate_data_key(TEST_KEY)
    text = repr(data_key)
    assert data_key.plaintext.hex() not in text
    assert repr(data_key.plaintext) not in text
    assert repr(data_key.wrapped) not in text


def test_data_keys_are_fresh(kms: LocalKms) -> None:
    keys = [kms.generate_data_key(TEST_KEY) for _ in range(20)]
    assert len({k.plaintext for k in keys}) == 20
    assert len({k.wrapped for k in keys}) == 20
    assert len({k.wrapped[9:21] for k in keys}) == 20  # fresh nonces too
    assert len({k.wrapped[1:9] for k in keys}) == 1  # one key's fingerprint


def test_unwrap_under_another_key_fails(kms: LocalKms) -> None:
    kms.create_key(OTHER_KEY)
    wrapped = kms.generate_data_key(TEST_KEY).wrapped
    with pytest.raises(IntegrityError):
        kms.unwrap_data_key(OTHER_KEY, wrapped)


def test_same_name_in_another_keystore_does_not_unwrap(tmp_path: Path, kms: LocalKms) -> None:
    """Named as what it is (issue 19: it was reported as a modified header)."""
    other = open_kms((tmp_path / "other").as_uri(), TEST_CREDENTIALS, create=True)
    other.create_key(TEST_KEY)
    with pytest.raises(IntegrityError, match="wrapped by another primary key named") as raised:
        other.unwrap_data_key(TEST_KEY, kms.generate_data_key(TEST_KEY).wrapped)
    assert "another keystore" in str(raised.value) and other.url in str(raised.value)


def test_a_modified_wrapped_key_is_named_as_modified(kms: LocalKms) -> None:
    wrapped = bytearray(kms.generate_data_key(TEST_KEY).wrapped)
    wrapped[-1] ^= 1  # the fingerprint is this key's: the change is in the sealed key
    with pytest.raises(IntegrityError, match=r"the header was modified$"):
        kms.unwrap_data_key(TEST_KEY, bytes(wrapped))


def test_version_1_wrapped_keys_still_unwrap(kms: LocalKms) -> None:
    """Files encrypted before the fingerprint (format.md, 'Wrapped key') keep decrypting."""
    import os

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    _, primary = kms._load(TEST_KEY)
    data_key, nonce = os.urandom(32), os.urandom(12)
    aad = b"cipherspark/wrap/v1\x00" + TEST_KEY.encode()
    sealed = AESGCM(primary).encrypt(nonce, data_key, aad)
    wrapped = b"\x01" + nonce + sealed
    assert len(wrapped) == 61
    assert kms.unwrap_data_key(TEST_KEY, wrapped) == data_key
    with pytest.raises(IntegrityError, match="or with an earlier key of that name"):
        kms.unwrap_data_key(TEST_KEY, wrapped[:-1] + bytes([wrapped[-1] ^ 1]))


def test_a_kms_server_s_wrapped_key_is_named_as_such(kms: LocalKms) -> None:
    from cipherspark.kms.server.keyring import wrap

    blob = wrap(bytes(32), TEST_KEY, 1, bytes(32))
    with pytest.raises(IntegrityError, match="wrapped by a KMS server, not by this keystore"):
        kms.unwrap_data_key(TEST_KEY, blob)


def test_every_flipped_bit_fails(kms: LocalKms) -> None:
    data_key = kms.generate_data_key(TEST_KEY)
    wrapped = data_key.wrapped
    for bit in range(len(wrapped) * 8):
        tampered = bytearray(wrapped)
        tampered[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(IntegrityError):
            kms.unwrap_data_key(TEST_KEY, bytes(tampered))
    assert kms.unwrap_data_key(TEST_KEY, wrapped) == data_key.plaintext


@pytest.mark.parametrize("change", ["truncate", "extend", "empty", "swap-nonce"])
def test_malformed_wrapped_key_fails(kms: LocalKms, change: str) -> None:
    wrapped = kms.generate_data_key(TEST_KEY).wrapped
    other = kms.generate_data_key(TEST_KEY).wrapped
    bad = {
        "truncate": wrapped[:-1],
        "extend": wrapped + b"\x00",
        "empty": b"",
        "swap-nonce": wrapped[:9] + other[9:21] + wrapped[21:],
    }[change]
    with pytest.raises(IntegrityError):
        kms.unwrap_data_key(TEST_KEY, bad)


# -- credentials ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "credentials",
    [
        Credentials(TEST_CREDENTIALS.app_id, "wrong-api-key-value"),
        Credentials("another-app", TEST_CREDENTIALS.api_key),
        Credentials(TEST_CREDENTIALS.app_id, TEST_CREDENTIALS.api_key + "x"),
    ],
    ids=["api-key", "app-id", "api-key-suffix"],
)
def test_wrong_credentials(kms: LocalKms, credentials: Credentials) -> None:
    with pytest.raises(CredentialsError) as info:
        open_kms(kms.url, credentials)
    message = str(info.value)
    assert credentials.api_key not in message
    assert TEST_CREDENTIALS.api_key not in message
    # Still opens with the right ones.
    assert [k.name for k in _reopen(kms).list_keys()] == [TEST_KEY]


def test_credentials_repr_hides_api_key() -> None:
    assert TEST_CREDENTIALS.api_key not in repr(TEST_CREDENTIALS)


@pytest.mark.parametrize(("app_id", "api_key"), [("", "k"), ("a", "")])
def test_credentials_need_both_parts(app_id: str, api_key: str) -> None:
    with pytest.raises(UsageError):
        Credentials(app_id, api_key)


def test_open_with_create_does_not_reinitialise(kms: LocalKms) -> None:
    store = Path(kms.url.removeprefix("file://")) / "keystore.json"
    before = store.read_bytes()
    service = open_kms(kms.url, TEST_CREDENTIALS, create=True)
    assert store.read_bytes() == before
    assert [k.name for k in service.list_keys()] == [TEST_KEY]
    with pytest.raises(CredentialsError):
        open_kms(kms.url, Credentials("x", "y"), create=True)
    assert store.read_bytes() == before


# -- what is on disk ------------------------------------------------------------------------------


def test_sealed_key_copied_to_another_name_does_not_open(kms: LocalKms) -> None:
    keys = Path(kms.url.removeprefix("file://")) / "keys"
    shutil.copy(keys / f"{TEST_KEY}.json", keys / "copy.json")
    with pytest.raises(KmsError) as info:
        kms.describe_key("copy")
    assert not isinstance(info.value, KeyNotFoundError)
    with pytest.raises(KmsError):
        kms.generate_data_key("copy")


def test_edited_sealed_key_does_not_open(kms: LocalKms) -> None:
    key_file = Path(kms.url.removeprefix("file://")) / "keys" / f"{TEST_KEY}.json"
    doc = json.loads(key_file.read_text())
    sealed = bytearray(base64.b64decode(doc["sealed"]))
    sealed[20] ^= 0x01
    doc["sealed"] = base64.b64encode(bytes(sealed)).decode()
    key_file.write_text(json.dumps(doc))
    with pytest.raises(KmsError, match=TEST_KEY):
        kms.generate_data_key(TEST_KEY)


def test_no_secret_on_disk(kms: LocalKms) -> None:
    data_keys = [kms.generate_data_key(TEST_KEY).plaintext for _ in range(5)]
    kms.create_key(OTHER_KEY)
    data_keys += [kms.generate_data_key(OTHER_KEY).plaintext for _ in range(5)]
    forbidden = [TEST_CREDENTIALS.api_key.encode()]
    for key in data_keys:
        forbidden += [
            key,
            key.hex().encode(),
            key.hex().upper().encode(),
            base64.b64encode(key),
            base64.urlsafe_b64encode(key),
            base64.b64encode(key).rstrip(b"="),
        ]
    for path in _keystore_files(kms):
        content = path.read_bytes()
        for secret in forbidden:
            assert secret not in content, f"{path.name} holds a secret"


def test_new_keystore_uses_default_scrypt_cost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local, "_SCRYPT", DEFAULT_SCRYPT)
    root = tmp_path / "kms"
    open_kms(root.as_uri(), TEST_CREDENTIALS, create=True)
    kdf = json.loads((root / "keystore.json").read_text())["kdf"]
    assert kdf["name"] == "scrypt"
    assert {k: kdf[k] for k in ("n", "r", "p")} == DEFAULT_SCRYPT
    # 128 MiB of scrypt (OWASP's minimum), four times 0.1.0's n = 2^15.
    assert DEFAULT_SCRYPT["n"] * DEFAULT_SCRYPT["r"] * 128 >= 128 << 20
    assert DEFAULT_SCRYPT["n"] >= 1 << 17
    assert len(base64.b64decode(kdf["salt"])) >= 16


def test_a_keystore_of_0_1_0_still_opens_with_its_own_kdf_cost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parameters live in keystore.json: raising the default changes only new keystores."""
    root = tmp_path / "old"
    with monkeypatch.context() as old:
        old.setattr(local, "_SCRYPT", {"n": 1 << 15, "r": 8, "p": 1})  # 0.1.0's default
        old.setattr(local, "check_api_key_strength", lambda api_key: None)  # any key, then
        first = open_kms(root.as_uri(), Credentials("old-app", "k"), create=True)
        first.create_key(TEST_KEY)
        wrapped = first.generate_data_key(TEST_KEY)
    monkeypatch.setattr(local, "_SCRYPT", DEFAULT_SCRYPT)
    local._sealing_keys.clear()  # as a new process would
    store = (root / "keystore.json").read_bytes()
    again = open_kms(root.as_uri(), Credentials("old-app", "k"), create=True)
    assert again.unwrap_data_key(TEST_KEY, wrapped.wrapped) == wrapped.plaintext
    assert (root / "keystore.json").read_bytes() == store
    assert json.loads(store)["kdf"]["n"] == 1 << 15


def test_scrypt_runs_once_per_new_keystore(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Creating a keystore derives its sealing key once (0.1.0 derived it twice)."""
    calls: list[dict[str, int]] = []
    derive = local._derive

    def counting(credentials: Credentials, salt: bytes, params: dict[str, int]) -> bytes:
        calls.append(params)
        return derive(credentials, salt, params)

    monkeypatch.setattr(local, "_derive", counting)
    service = open_kms((tmp_path / "ks").as_uri(), TEST_CREDENTIALS, create=True)
    assert len(calls) == 1
    _reopen(service).list_keys()
    assert len(calls) == 1  # cached for this process


# -- the API KEY of a new keystore ----------------------------------------------------------------

# (id, API KEY): each too weak for a new keystore, most one character short of the rule.
WEAK_API_KEYS = [
    ("one-char", "x"),
    ("short-word", "password"),
    ("21-token-chars", secrets.token_urlsafe(16)[:21]),
    ("31-hex", "0123456789abcdef0123456789abcde"),
    ("31-HEX", "0123456789ABCDEF0123456789ABCDE"),
    ("38-digits", "01234567890123456789012345678901234567"),
    ("7-distinct", "abcdefgabcdefgabcdefgabcdefg"),
    ("repeated", "a" * 64),
    ("space", "correct horse battery staple xyz"),
    ("quote", 'Abcdefghijklmnopqrstu"vwxyz'),
    ("newline", "Abcdefghijklmnopqrstuvwxyz\n"),
    ("non-ascii", "Abcdefghijklmnopqrstuvwxyzé"),
]
STRONG_API_KEYS = [
    ("token_urlsafe(16)", secrets.token_urlsafe(16)),
    ("22-token-chars", "Ab0-_.~+/=cdefghijklmn"),
    ("token_hex(16)", secrets.token_hex(16)),
    ("32-HEX", "0123456789ABCDEF0123456789ABCDEF"),
    ("39-digits", "012345678901234567890123456789012345678"),
    ("base64", base64.b64encode(secrets.token_bytes(24)).decode()),
    ("generated", local.generate_api_key()),
    ("test-credentials", TEST_CREDENTIALS.api_key),
]


@pytest.mark.parametrize("api_key", [pytest.param(k, id=i) for i, k in WEAK_API_KEYS])
def test_a_new_keystore_refuses_a_weak_api_key(tmp_path: Path, api_key: str) -> None:
    root = tmp_path / "new" / "kms"
    with pytest.raises(CredentialsError) as info:
        open_kms(root.as_uri(), Credentials("app", api_key), create=True)
    message = str(info.value)
    assert message.startswith("the API KEY")
    assert "'cipherspark key create' generates a strong one" in message
    if len(api_key) > 3:
        assert api_key not in message
    assert not (tmp_path / "new").exists(), "nothing is created for a refused key"


@pytest.mark.parametrize("api_key", [pytest.param(k, id=i) for i, k in STRONG_API_KEYS])
def test_a_new_keystore_takes_a_strong_api_key(tmp_path: Path, api_key: str) -> None:
    local.check_api_key_strength(api_key)
    service = open_kms((tmp_path / "ks").as_uri(), Credentials("app", api_key), create=True)
    service.create_key(TEST_KEY)
    assert _reopen(service, Credentials("app", api_key)).list_keys()[0].name == TEST_KEY


@pytest.mark.parametrize(("api_key", "needed"), [
    ("x" * 21 + "Y", None), ("x" * 20 + "Y", 22), ("ab" * 15 + "c", 32), ("12" * 19, 39)])
def test_the_message_says_how_many_characters_are_needed(api_key: str,
                                                         needed: int | None) -> None:
    if needed is None:
        with pytest.raises(CredentialsError, match="fewer than 8 different"):
            local.check_api_key_strength(api_key)
        return
    with pytest.raises(CredentialsError, match=f"at least {needed} characters .128 bits., "
                                               f"it has {len(api_key)}"):
        local.check_api_key_strength(api_key)


def test_generated_api_keys_are_256_random_bits() -> None:
    keys: set[Any] = {local.generate_api_key() for _ in range(50)}
    assert len(keys) == 50
    for key in keys:
        assert len(key) == 43 and len(base64.urlsafe_b64decode(key + "=")) == 32
        local.check_api_key_strength(key)


def test_an_existing_keystore_opens_with_any_api_key_it_was_made_with(
    kms: LocalKms, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rule is for new keystores; 0.1.0's, made with any key, keep opening."""
    root = Path(kms.url.removeprefix("file://")).parent / "weak"
    with monkeypatch.context() as old:
        old.setattr(local, "check_api_key_strength", lambda api_key: None)
        open_kms(root.as_uri(), Credentials("a", "1"), create=True).create_key(TEST_KEY)
    for create in (False, True):
        assert [k.name for k in open_kms(root.as_uri(), Credentials("a", "1"),
                                         create=create).list_keys()] == [TEST_KEY]


def test_keystore_recreated_at_same_path_opens(tmp_path: Path) -> None:
    """The per-process sealing-key cache must not outlive the keystore it was derived for."""
    root = tmp_path / "kms"
    first = open_kms(root.as_uri(), TEST_CREDENTIALS, create=True)
    first.create_key(TEST_KEY)
    shutil.rmtree(root)
    second = open_kms(root.as_uri(), TEST_CREDENTIALS, create=True)
    second.create_key(TEST_KEY)
    data_key = second.generate_data_key(TEST_KEY)
    assert _reopen(second).unwrap_data_key(TEST_KEY, data_key.wrapped) == data_key.plaintext


def test_file_and_directory_modes(tmp_path: Path) -> None:
    root = tmp_path / "new" / "kms"
    service = open_kms(root.as_uri(), TEST_CREDENTIALS, create=True)
    service.create_key(TEST_KEY)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "keys").stat().st_mode) == 0o700
    files = [p for p in root.rglob("*") if p.is_file()]
    assert {p.name for p in files} == {"keystore.json", f"{TEST_KEY}.json"}
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    # No temporary files are left behind.
    assert not [p for p in root.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "kdf",
    [
        {"n": 1 << 40},
        {"n": 1 << 21},
        {"r": 1 << 20},
        {"p": 1 << 20},
        {"n": 0},
        {"n": -4},
        {"n": 3},  # not a power of two
        {"n": "many"},
        {"r": None},
        # Each in range alone, together 4 GiB and minutes of work.
        {"n": 1 << 20, "r": 32, "p": 16},
        {"n": 1 << 20, "r": 8, "p": 1},
    ],
)
def test_absurd_scrypt_parameters_fail_fast(kms: LocalKms, kdf: dict[str, object]) -> None:
    store = Path(kms.url.removeprefix("file://")) / "keystore.json"
    doc = json.loads(store.read_text())
    doc["kdf"].update(kdf)
    store.write_text(json.dumps(doc))
    started = time.perf_counter()
    with pytest.raises(KmsError) as info:
        open_kms(kms.url, TEST_CREDENTIALS)
    assert time.perf_counter() - started < 2.0
    assert not isinstance(info.value, CredentialsError)


@pytest.mark.parametrize(
    "content",
    [b"", b"not json", b"[]", b"{}", b'{"format": "something-else", "version": 1}'],
)
def test_damaged_keystore(kms: LocalKms, content: bytes) -> None:
    store = Path(kms.url.removeprefix("file://")) / "keystore.json"
    store.write_bytes(content)
    with pytest.raises(KmsError) as info:
        open_kms(kms.url, TEST_CREDENTIALS)
    assert not isinstance(info.value, CredentialsError)


def test_damaged_key_file(kms: LocalKms) -> None:
    key_file = Path(kms.url.removeprefix("file://")) / "keys" / f"{TEST_KEY}.json"
    key_file.write_text("{")
    with pytest.raises(KmsError, match="damaged"):
        kms.describe_key(TEST_KEY)


# -- open_kms -------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["https://127.0.0.1:9", "http://127.0.0.1:9/v1"])
def test_unreachable_network_kms(url: str) -> None:
    with pytest.raises(KmsUnavailableError):
        open_kms(url, TEST_CREDENTIALS)


@pytest.mark.parametrize("url", ["ftp://host/kms", "s3://bucket/kms", "vault:kms"])
def test_unknown_scheme(url: str) -> None:
    with pytest.raises(UsageError, match="scheme"):
        open_kms(url, TEST_CREDENTIALS)


def test_file_url_with_host(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="otherhost"):
        open_kms(f"file://otherhost{tmp_path}/kms", TEST_CREDENTIALS, create=True)
    assert not (tmp_path / "kms").exists()


def test_missing_keystore_without_create(tmp_path: Path) -> None:
    with pytest.raises(KmsError, match="no keystore"):
        open_kms((tmp_path / "absent").as_uri(), TEST_CREDENTIALS)
    assert not (tmp_path / "absent").exists()


def test_missing_credentials(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError):
        open_kms((tmp_path / "kms").as_uri(), None, create=True)
    assert not (tmp_path / "kms").exists()


def test_plain_path_and_localhost_url(kms: LocalKms) -> None:
    root = kms.url.removeprefix("file://")
    assert [k.name for k in open_kms(root, TEST_CREDENTIALS).list_keys()] == [TEST_KEY]
    via_localhost = open_kms(f"file://localhost{root}", TEST_CREDENTIALS)
    assert [k.name for k in via_localhost.list_keys()] == [TEST_KEY]
    assert via_localhost.url == kms.url


def test_url_with_escaped_characters(tmp_path: Path) -> None:
    root = tmp_path / "with space"
    service = open_kms(root.as_uri(), TEST_CREDENTIALS, create=True)
    assert "%20" in root.as_uri()
    service.create_key(TEST_KEY)
    assert (root / "keys" / f"{TEST_KEY}.json").is_file()


def test_default_url_is_under_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    service = open_kms(None, TEST_CREDENTIALS, create=True)
    assert (tmp_path / ".cipherspark" / "kms" / "keystore.json").is_file()
    assert service.url == (tmp_path / ".cipherspark" / "kms").as_uri()
