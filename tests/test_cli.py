"""The ``cipherspark`` command without Spark: generate, key, encrypt, decrypt, help, errors.

Every invocation goes through :func:`run`, which also checks that no output shows a traceback or
an API KEY.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from cipherspark.cli import main
from cipherspark.kms import Credentials, local, open_kms
from tests.conftest import TEST_CREDENTIALS, TEST_KEY

WRONG_API_KEY = "wrong-api-key-0xdeadbeef"
FLAG_API_KEY = "flag-api-key-c0ffee-secret"
SECRETS = (TEST_CREDENTIALS.api_key, WRONG_API_KEY, FLAG_API_KEY)


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def run(capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    for text in (out, err):
        assert "Traceback" not in text
        for secret in SECRETS:
            assert secret not in text, f"an API KEY was printed by {args}"
    return Result(code, out, err)


DEPRECATED_API_KEY_FLAG = (
    "cipherspark: warning: --api-key is deprecated: its value shows in ps and in the shell's "
    "history; set CIPHERSPARK_API_KEY or use --api-key-file FILE"
)


def assert_one_error_line(result: Result) -> str:
    assert result.code != 0
    lines = result.err.splitlines()
    # --api-key given as a flag warns first, in one line of its own.
    if lines and lines[0] == DEPRECATED_API_KEY_FLAG:
        lines = lines[1:]
    assert len(lines) == 1, result.err
    assert lines[0].startswith("cipherspark: error: ")
    return lines[0]


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file and folder under ``root`` (hidden ones too) with its content."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture(autouse=True)
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty folder with only the test credentials in the environment."""
    monkeypatch.chdir(tmp_path)
    for name in ("CIPHERSPARK_KMS", "CIPHERSPARK_KEY", "CIPHERSPARK_DEBUG",
                 "CIPHERSPARK_MASTER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CIPHERSPARK_APP_ID", TEST_CREDENTIALS.app_id)
    monkeypatch.setenv("CIPHERSPARK_API_KEY", TEST_CREDENTIALS.api_key)
    # Cheap scrypt for the keystores created here (the cost is tested in tests/kms).
    monkeypatch.setattr(local, "_SCRYPT", {"n": 1 << 10, "r": 8, "p": 1})
    return tmp_path


@pytest.fixture
def workspace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """people.csv, a key, people.cspk, and damaged copies of it."""
    assert run(capsys, "generate", "people.csv", "--rows", "2000", "--seed", "5").code == 0
    assert run(capsys, "key", "create", TEST_KEY).code == 0
    assert run(capsys, "encrypt", "people.csv", "people.cspk", "--key", TEST_KEY,
               "--segment-size", "4096").code == 0
    data = (tmp_path / "people.cspk").read_bytes()
    assert len(data) > 3 * 4096
    tampered = bytearray(data)
    tampered[len(data) // 2] ^= 0x01
    (tmp_path / "tampered.cspk").write_bytes(bytes(tampered))
    (tmp_path / "truncated-half.cspk").write_bytes(data[: len(data) // 2])
    (tmp_path / "truncated-1.cspk").write_bytes(data[:-1])
    (tmp_path / "truncated-20.cspk").write_bytes(data[:20])
    (tmp_path / "existing.cspk").write_bytes(b"keep me\n")
    (tmp_path / "existing.csv").write_bytes(b"keep me too\n")
    (tmp_path / "emptydir").mkdir()
    return tmp_path


# -- what works -----------------------------------------------------------------------------------


def test_generate_prints_the_true_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run(capsys, "generate", "people.csv", "-n", "3000", "--seed", "11")
    assert result.code == 0
    assert result.err == ""
    with open(tmp_path / "people.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3000
    truth = sum(1 for r in rows if r["job"] == "Developer" and 20 <= int(r["age"]) <= 40)
    match = re.search(r"^Developers aged 20-40: (\d+)$", result.out, re.MULTILINE)
    assert match is not None, result.out
    assert int(match.group(1)) == truth
    assert "3,000 rows" in result.out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["people.csv"]


def test_generate_same_seed_same_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "generate", "a.csv", "-n", "500", "--seed", "3").code == 0
    assert run(capsys, "generate", "b.csv", "-n", "500", "--seed", "3").code == 0
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert run(capsys, "generate", "a.csv", "-n", "10", "--seed", "4", "--overwrite").code == 0
    assert len((tmp_path / "a.csv").read_bytes().splitlines()) == 11


def test_key_create_and_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    created = run(capsys, "key", "create", TEST_KEY)
    assert created.code == 0
    assert TEST_KEY in created.out
    assert (tmp_path / ".cipherspark" / "kms" / "keystore.json").is_file()
    assert run(capsys, "key", "create", "second.key").code == 0
    listed = run(capsys, "key", "list")
    assert listed.code == 0
    names = [line.split()[0] for line in listed.out.splitlines()]
    assert names == ["second.key", TEST_KEY]
    assert all("version 1" in line for line in listed.out.splitlines())


def test_key_list_empty_keystore(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kms_dir = tmp_path / "ks"
    open_kms(kms_dir.as_uri(), TEST_CREDENTIALS, create=True)
    listed = run(capsys, "key", "list", "--kms", kms_dir.as_uri())
    assert listed.code == 0
    assert "no keys" in listed.out


def test_env_vars_select_kms_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    kms_dir = tmp_path / "elsewhere"
    monkeypatch.setenv("CIPHERSPARK_KMS", kms_dir.as_uri())
    monkeypatch.setenv("CIPHERSPARK_KEY", "env-key")
    assert run(capsys, "key", "create", "env-key").code == 0
    assert (kms_dir / "keys" / "env-key.json").is_file()
    assert not (tmp_path / ".cipherspark").exists()
    (tmp_path / "x.bin").write_bytes(b"\x00\x01secret\xff" * 100)
    assert run(capsys, "encrypt", "x.bin", "x.cspk").code == 0
    assert run(capsys, "decrypt", "x.cspk", "y.bin").code == 0
    assert (tmp_path / "y.bin").read_bytes() == (tmp_path / "x.bin").read_bytes()


@pytest.mark.parametrize("segment_size", ["4096", "1048576"])
def test_encrypt_decrypt_round_trip(
    workspace: Path, capsys: pytest.CaptureFixture[str], segment_size: str
) -> None:
    original = (workspace / "people.csv").read_bytes()
    enc = run(capsys, "encrypt", "people.csv", "again.cspk", "--key", TEST_KEY,
              "--segment-size", segment_size)
    assert enc.code == 0
    assert f"{len(original):,} bytes" in enc.out
    encrypted = (workspace / "again.cspk").read_bytes()
    assert b"Developer" not in encrypted
    assert original[13:60] not in encrypted
    dec = run(capsys, "decrypt", "again.cspk", "again.csv")
    assert dec.code == 0
    assert (workspace / "again.csv").read_bytes() == original
    # The workspace's own encryption decrypts too.
    assert run(capsys, "decrypt", "people.cspk", "people2.csv").code == 0
    assert (workspace / "people2.csv").read_bytes() == original


def test_encrypt_twice_gives_different_ciphertexts(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "encrypt", "people.csv", "b.cspk", "--key", TEST_KEY,
               "--segment-size", "4096").code == 0
    assert (workspace / "b.cspk").read_bytes() != (workspace / "people.cspk").read_bytes()


@pytest.mark.parametrize("content", [b"", b"x", b"\x00" * 70_000])
def test_round_trip_binary_edge_sizes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    assert run(capsys, "key", "create", TEST_KEY).code == 0
    (tmp_path / "in.bin").write_bytes(content)
    assert run(capsys, "encrypt", "in.bin", "in.cspk", "--key", TEST_KEY).code == 0
    assert run(capsys, "decrypt", "in.cspk", "out.bin").code == 0
    assert (tmp_path / "out.bin").read_bytes() == content


def test_folder_round_trip_writes_csv_header_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "key", "create", TEST_KEY).code == 0
    parts = tmp_path / "parts"
    parts.mkdir()
    (parts / "part-0.csv").write_bytes(b"name,age,job\nann,30,Developer\n")
    (parts / "part-1.csv").write_bytes(b"name,age,job\nbob,41,Engineer\n")
    (parts / "_SUCCESS").write_bytes(b"")
    enc = run(capsys, "encrypt", "parts", "parts.enc", "--key", TEST_KEY)
    assert enc.code == 0
    assert "2 file(s)" in enc.out
    assert sorted(p.name for p in (tmp_path / "parts.enc").iterdir()) == [
        "_manifest.cspk", "part-0.csv.cspk", "part-1.csv.cspk"]
    assert run(capsys, "decrypt", "parts.enc", "all.csv").code == 0
    assert (tmp_path / "all.csv").read_bytes() == (
        b"name,age,job\nann,30,Developer\nbob,41,Engineer\n")


def test_api_key_given_as_flag_is_never_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CIPHERSPARK_API_KEY")
    creds = ["--app-id", "flag-app", "--api-key", FLAG_API_KEY]
    created = run(capsys, "key", "create", "k", *creds)
    assert created.code == 0
    assert created.err.splitlines() == [DEPRECATED_API_KEY_FLAG]
    assert run(capsys, "key", "list", *creds).code == 0
    (tmp_path / "a.csv").write_bytes(b"name,age,job\nzed,20,Developer\n")
    assert run(capsys, "encrypt", "a.csv", "a.cspk", "--key", "k", *creds).code == 0
    assert run(capsys, "decrypt", "a.cspk", "b.csv", *creds).code == 0
    wrong = run(capsys, "decrypt", "a.cspk", "c.csv", "--app-id", "flag-app",
                "--api-key", WRONG_API_KEY)
    assert_one_error_line(wrong)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert FLAG_API_KEY.encode() not in path.read_bytes(), path


def test_api_key_from_the_environment_or_a_file_gives_no_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    created = run(capsys, "key", "create", "k")  # CIPHERSPARK_API_KEY, set by cli_env
    assert created.code == 0 and created.err == ""
    monkeypatch.delenv("CIPHERSPARK_API_KEY")
    for ending in ("\n", "", "\r\n", "  \n\n"):
        (tmp_path / "api-key").write_text(TEST_CREDENTIALS.api_key + ending)
        listed = run(capsys, "key", "list", "--api-key-file", "api-key")
        assert listed.code == 0, listed.err
        assert listed.err == "" and listed.out.split()[0] == "k"
    # A file on the command line wins over the variable.
    monkeypatch.setenv("CIPHERSPARK_API_KEY", WRONG_API_KEY)
    assert run(capsys, "key", "list", "--api-key-file", "api-key").code == 0
    (tmp_path / "wrong").write_text(WRONG_API_KEY + "\n")
    wrong = run(capsys, "key", "list", "--api-key-file", "wrong")
    assert "API KEY" in assert_one_error_line(wrong)


@pytest.mark.parametrize(("setup", "argv", "words"), [
    ("missing", ["--api-key-file", "absent"], ["--api-key-file", "absent", "No such file"]),
    ("empty", ["--api-key-file", "empty"], ["--api-key-file", "empty", "is empty"]),
    ("folder", ["--api-key-file", "."], ["--api-key-file", "cannot read"]),
    ("binary", ["--api-key-file", "binary"], ["--api-key-file", "binary", "UTF-8"]),
    ("both", ["--api-key-file", "some", "--api-key", FLAG_API_KEY], ["--api-key-file", "both"]),
])
def test_unreadable_secret_files_are_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], setup: str, argv: list[str],
    words: list[str],
) -> None:
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "some").write_text(FLAG_API_KEY)
    (tmp_path / "binary").write_bytes(b"\xff\xfe\x00key")
    result = run(capsys, "key", "list", *argv)
    assert result.code in (1, 2)
    message = assert_one_error_line(result)
    for word in words:
        assert word in message, (word, message)


def test_key_create_on_a_new_keystore_generates_strong_credentials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CIPHERSPARK_APP_ID")
    monkeypatch.delenv("CIPHERSPARK_API_KEY")
    created = run(capsys, "key", "create", "k")
    assert created.code == 0, created.err
    assert created.err == ""
    exports = dict(re.findall(r"^  export (CIPHERSPARK_APP_ID|CIPHERSPARK_API_KEY)=(\S+)$",
                              created.out, re.MULTILINE))
    assert set(exports) == {"CIPHERSPARK_APP_ID", "CIPHERSPARK_API_KEY"}, created.out
    api_key = exports["CIPHERSPARK_API_KEY"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", api_key)  # 256 bits, base64url
    local.check_api_key_strength(api_key)
    assert "shown only now" in created.out
    assert created.out.index("export") < created.out.index("created primary key")
    store = tmp_path / ".cipherspark" / "kms" / "keystore.json"
    assert api_key.encode() not in store.read_bytes()
    # Shown once: the next command on the keystore needs the exported credentials ...
    again = run(capsys, "key", "create", "k2")
    assert "CIPHERSPARK_API_KEY" in assert_one_error_line(again)
    assert "export" not in again.out
    # ... and works with them.
    for name, value in exports.items():
        monkeypatch.setenv(name, value)
    listed = run(capsys, "key", "list")
    assert listed.code == 0 and listed.out.split()[0] == "k"
    # With an APP ID given, only the API KEY is generated.
    monkeypatch.delenv("CIPHERSPARK_API_KEY")
    other = run(capsys, "key", "create", "k", "--kms", (tmp_path / "other").as_uri(),
                "--app-id", "mine")
    assert "  export CIPHERSPARK_APP_ID=mine\n" in other.out


@pytest.mark.parametrize("weak", ["x", "secret", "password-1234", "a" * 21, "0123456789" * 3,
                                  "abcdef0123" * 3, "abab" * 10, "spaces are not tokens!!!"])
def test_a_weak_api_key_is_refused_for_a_new_keystore(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    weak: str,
) -> None:
    monkeypatch.setenv("CIPHERSPARK_API_KEY", weak)
    result = run(capsys, "key", "create", "k")
    message = assert_one_error_line(result)
    assert result.code == 1
    assert "API KEY" in message and "cipherspark key create' generates" in message
    if len(weak) >= 6:
        assert weak not in message
    assert not (tmp_path / ".cipherspark").exists()


def test_an_existing_keystore_with_a_weak_key_still_opens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keystores of 0.1.0 took any API KEY: they keep working (their KDF is in the file)."""
    with monkeypatch.context() as old_rules:
        old_rules.setattr(local, "check_api_key_strength", lambda api_key: None)
        open_kms((tmp_path / "old").as_uri(), Credentials("old", "x"), create=True)
    monkeypatch.setenv("CIPHERSPARK_APP_ID", "old")
    monkeypatch.setenv("CIPHERSPARK_API_KEY", "x")
    created = run(capsys, "key", "create", "k", "--kms", (tmp_path / "old").as_uri())
    assert created.code == 0, created.err
    assert "export" not in created.out


# -- help -----------------------------------------------------------------------------------------

KMS_VARS = ("CIPHERSPARK_KMS", "CIPHERSPARK_APP_ID", "CIPHERSPARK_API_KEY")


HELP_CASES = [
    ((), ()),
    (("generate",), ()),
    (("key",), ()),
    (("key", "create"), KMS_VARS),
    (("key", "list"), KMS_VARS),
    (("encrypt",), (*KMS_VARS, "CIPHERSPARK_KEY")),
    (("decrypt",), KMS_VARS),
    (("query",), ()),
    (("query", "simple"), (*KMS_VARS, "CIPHERSPARK_KEY", "CIPHERSPARK_MASTER")),
    (("sql",), (*KMS_VARS, "CIPHERSPARK_KEY", "CIPHERSPARK_MASTER")),
    (("demo",), ("CIPHERSPARK_MASTER",)),
]


@pytest.mark.parametrize(
    ("command", "env_vars"),
    [pytest.param(c, v, id="-".join(c) or "cipherspark") for c, v in HELP_CASES],
)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
    command: tuple[str, ...], env_vars: tuple[str, ...], flag: str,
) -> None:
    result = run(capsys, *command, flag)
    assert result.code == 0
    assert result.err == ""
    assert re.search(r"Usage: cipherspark " + re.escape(" ".join(command)), result.out)
    for var in env_vars:
        assert var in result.out, var
    if "CIPHERSPARK_KMS" in env_vars:
        assert ".cipherspark/kms" in result.out  # the default, not eaten as markup
    assert list(tmp_path.iterdir()) == []


# -- what fails, and how --------------------------------------------------------------------------

ERROR = "error"  # one line 'cipherspark: error: ...'
USAGE = "usage"  # Typer's usage message, exit code 2

BAD_INPUT = [
    # (id, argv, env changes, expected exit code, kind, words the message must contain)
    ("wrong-api-key-decrypt", ["decrypt", "people.cspk", "out.csv", "--api-key", WRONG_API_KEY],
     {}, 1, ERROR, ["API KEY"]),
    ("wrong-api-key-encrypt", ["encrypt", "people.csv", "out.cspk", "--key", TEST_KEY],
     {"CIPHERSPARK_API_KEY": WRONG_API_KEY}, 1, ERROR, ["API KEY"]),
    ("wrong-app-id-key-list", ["key", "list", "--app-id", "someone-else"], {}, 1, ERROR,
     ["APP ID"]),
    ("wrong-api-key-key-create", ["key", "create", "new-key", "--api-key", WRONG_API_KEY], {},
     1, ERROR, ["API KEY"]),
    ("unknown-key-encrypt", ["encrypt", "people.csv", "out.cspk", "--key", "nope"], {}, 1,
     ERROR, ["nope"]),
    ("duplicate-key", ["key", "create", TEST_KEY], {}, 1, ERROR, [TEST_KEY]),
    ("invalid-key-name", ["key", "create", "../x"], {}, 2, ERROR, ["key name"]),
    ("tampered", ["decrypt", "tampered.cspk", "out.csv"], {}, 1, ERROR, ["tampered.cspk"]),
    ("truncated-half", ["decrypt", "truncated-half.cspk", "out.csv"], {}, 1, ERROR,
     ["truncated-half.cspk"]),
    ("truncated-1", ["decrypt", "truncated-1.cspk", "out.csv"], {}, 1, ERROR,
     ["truncated-1.cspk"]),
    ("truncated-header", ["decrypt", "truncated-20.cspk", "out.csv"], {}, 1, ERROR,
     ["truncated-20.cspk"]),
    ("missing-input-encrypt", ["encrypt", "absent.csv", "out.cspk", "--key", TEST_KEY], {}, 1,
     ERROR, ["absent.csv"]),
    ("missing-input-decrypt", ["decrypt", "absent.cspk", "out.csv"], {}, 1, ERROR,
     ["absent.cspk"]),
    ("empty-folder-decrypt", ["decrypt", "emptydir", "out.csv"], {}, 1, ERROR, ["emptydir"]),
    ("plaintext-to-decrypt", ["decrypt", "people.csv", "out.csv"], {}, 1, ERROR,
     ["people.csv"]),
    # Slips that would destroy or muddle the input: refused before anything is written.
    ("decrypt-onto-its-input", ["decrypt", "people.cspk", "people.cspk", "--overwrite"], {}, 2,
     ERROR, ["people.cspk is the input"]),
    ("encrypt-onto-its-input", ["encrypt", "people.csv", "./people.csv", "--key", TEST_KEY,
                                "--overwrite"], {}, 2, ERROR, ["people.csv is the input"]),
    ("output-holds-the-input", ["encrypt", "people.csv", ".", "--key", TEST_KEY,
                                "--overwrite"], {}, 2, ERROR, ["holds the input"]),
    ("encrypt-an-encrypted-file", ["encrypt", "people.cspk", "twice.cspk", "--key", TEST_KEY],
     {}, 2, ERROR, ["people.cspk is already encrypted", "--allow-encrypted-input"]),
    ("output-exists-encrypt", ["encrypt", "people.csv", "existing.cspk", "--key", TEST_KEY], {},
     1, ERROR, ["existing.cspk", "--overwrite"]),
    ("output-exists-decrypt", ["decrypt", "people.cspk", "existing.csv"], {}, 1, ERROR,
     ["existing.csv", "--overwrite"]),
    ("output-exists-generate", ["generate", "existing.csv", "-n", "5"], {}, 1, ERROR,
     ["existing.csv"]),
    ("output-folder-missing", ["generate", "nowhere/p.csv", "-n", "5"], {}, 1, ERROR,
     ["nowhere"]),
    ("missing-api-key", ["decrypt", "people.cspk", "out.csv"], {"CIPHERSPARK_API_KEY": None}, 2,
     ERROR, ["CIPHERSPARK_API_KEY"]),
    ("missing-app-id", ["encrypt", "people.csv", "out.cspk", "--key", TEST_KEY],
     {"CIPHERSPARK_APP_ID": None}, 2, ERROR, ["CIPHERSPARK_APP_ID"]),
    ("missing-credentials-key-list", ["key", "list"],
     {"CIPHERSPARK_APP_ID": None, "CIPHERSPARK_API_KEY": None}, 2, ERROR, ["credentials"]),
    ("kms-scheme-ftp", ["decrypt", "people.cspk", "out.csv", "--kms", "ftp://host/kms"], {}, 2,
     ERROR, ["scheme"]),
    ("kms-scheme-env", ["key", "create", "k2"], {"CIPHERSPARK_KMS": "s3://bucket/kms"}, 2,
     ERROR, ["scheme"]),
    ("kms-https", ["key", "list", "--kms", "https://127.0.0.1:9"], {}, 1, ERROR,
     ["https"]),
    ("kms-file-host", ["key", "list", "--kms", "file://otherhost/tmp/kms"], {}, 2, ERROR,
     ["otherhost"]),
    ("kms-missing", ["key", "list", "--kms", "absent-kms"], {}, 1, ERROR, ["no keystore"]),
    ("unknown-command", ["bogus"], {}, 2, USAGE, ["bogus"]),
    ("unknown-subcommand", ["key", "delete", TEST_KEY], {}, 2, USAGE, ["delete"]),
    ("unknown-option", ["encrypt", "people.csv", "out.cspk", "--bogus"], {}, 2, USAGE,
     ["--bogus"]),
    ("missing-argument", ["decrypt", "people.cspk"], {}, 2, USAGE, ["dst"]),
    ("missing-key-option", ["encrypt", "people.csv", "out.cspk"], {}, 2, USAGE, ["--key"]),
    ("negative-rows", ["generate", "out.csv", "--rows", "-1"], {}, 2, USAGE, ["--rows"]),
    ("not-a-number", ["generate", "out.csv", "--rows", "many"], {}, 2, USAGE, ["--rows"]),
    ("bad-segment-size", ["encrypt", "people.csv", "out.cspk", "--key", TEST_KEY,
                          "--segment-size", "1"], {}, 2, USAGE, ["--segment-size"]),
]


@pytest.mark.parametrize(
    ("argv", "env", "code", "kind", "words"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_INPUT],
)
def test_bad_input(
    workspace: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    argv: list[str], env: dict[str, str | None], code: int, kind: str, words: list[str],
) -> None:
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name)
        else:
            monkeypatch.setenv(name, value)
    before = snapshot(workspace)
    result = run(capsys, *argv)
    assert result.code == code
    assert result.out == ""
    if kind == ERROR:
        message = assert_one_error_line(result)
    else:
        assert "Usage: cipherspark" in result.err
        message = result.err
    for word in words:
        assert word in message, (word, message)
    # Nothing written, nothing left behind, nothing changed (existing outputs untouched).
    assert snapshot(workspace) == before


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_a_file_from_another_keystore_is_named_as_such(
    workspace: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    """Issue 19: it was reported as "the header was modified" (or as an unregistered
    location); the user's mistake is the KMS, and the message says which keystore it asked."""
    source = "people.cspk"
    if kind == "folder":
        (workspace / "parts").mkdir()
        (workspace / "parts" / "a.csv").write_bytes(b"x,y\n1,2\n")
        assert run(capsys, "encrypt", "parts", "parts.cspk", "--key", TEST_KEY).code == 0
        source = "parts.cspk"
    other = (workspace / "other-kms").as_uri()
    assert run(capsys, "key", "create", TEST_KEY, "--kms", other).code == 0
    before = snapshot(workspace)
    result = run(capsys, "decrypt", source, "out.csv", "--kms", other)
    line = assert_one_error_line(result)
    assert f"wrapped by another primary key named {TEST_KEY!r}" in line
    assert other in line and "point --kms (CIPHERSPARK_KMS) at the keystore" in line
    assert snapshot(workspace) == before
