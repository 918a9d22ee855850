"""``cipherspark migrate bigdl``: the command over the independent BigDL vectors.

Every invocation checks there is no traceback and no BigDL secret in the output; refusals are
one line on stderr, with nothing left behind.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from cipherspark.cli import main
from cipherspark.crypto.manifest import MANIFEST_NAME, read_manifest
from cipherspark.files import decrypt_path
from cipherspark.kms import local, open_kms
from cipherspark.kms.registry import dataset_location
from tests.conftest import TEST_CREDENTIALS, TEST_KEY
from tests.crypto import bigdl_vectors as bv


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
        assert bv.API_KEY not in text
        assert bv.PRIMARY_KEY_PLAINTEXT not in text
    return Result(code, out, err)


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture
def vectors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> bv.Vectors:
    """The BigDL vectors, a keystore with TEST_KEY, secrets in files; run in tmp_path."""
    monkeypatch.chdir(tmp_path)
    for name in (
        "CIPHERSPARK_KMS",
        "CIPHERSPARK_KEY",
        "CIPHERSPARK_DEBUG",
        "CIPHERSPARK_BIGDL_API_KEY",
        "CIPHERSPARK_BIGDL_PRIMARY_KEY_PLAINTEXT",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CIPHERSPARK_APP_ID", TEST_CREDENTIALS.app_id)
    monkeypatch.setenv("CIPHERSPARK_API_KEY", TEST_CREDENTIALS.api_key)
    monkeypatch.setattr(local, "_SCRYPT", {"n": 1 << 10, "r": 8, "p": 1})
    with open_kms(None, TEST_CREDENTIALS, create=True) as kms:
        kms.create_key(TEST_KEY)
    (tmp_path / "apikey").write_text(bv.API_KEY + "\n")
    (tmp_path / "plainkey").write_text(bv.PRIMARY_KEY_PLAINTEXT + "\n")
    return bv.write_vectors(tmp_path / "bigdl")


def simple_args(vectors: bv.Vectors) -> list[str]:
    return [
        "--bigdl-kms",
        "simple",
        "--bigdl-app-id",
        bv.APP_ID,
        "--bigdl-api-key-file",
        "apikey",
        "--bigdl-primary-key",
        str(vectors.simple_primary_key),
    ]


def decrypt(path: Path, tmp_path: Path) -> bytes:
    out = tmp_path / "check.csv"
    with open_kms(None, TEST_CREDENTIALS) as kms:
        decrypt_path(path, out, kms, key_id=TEST_KEY)
    data = out.read_bytes()
    out.unlink()
    return data


def test_migrate_a_v2_folder(
    vectors: bv.Vectors, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run(
        capsys,
        "migrate",
        "bigdl",
        str(vectors.v2_folder),
        "out",
        "--key",
        TEST_KEY,
        *simple_args(vectors),
    )
    assert result.code == 0, result.err
    assert result.err == ""
    assert f"migrated {len(vectors.parts)} BigDL file(s)" in result.out
    assert "delete the BigDL originals" in result.out
    assert decrypt(tmp_path / "out", tmp_path) == vectors.csv
    # Registered as the current commit at its location (docs/security.md, "Whole-dataset
    # replay").
    with open_kms(None, TEST_CREDENTIALS) as kms:
        record = kms.dataset_at(dataset_location(tmp_path / "out"))
        manifest = read_manifest(
            tmp_path / "out", lambda h: kms.unwrap_data_key(h.key_id, h.wrapped_key)
        )
    assert record is not None and manifest is not None and manifest.identity is not None
    assert (record.dataset_id, record.generation) == (manifest.identity.dataset_id, 1)
    assert (
        record.manifest_sha256
        == hashlib.sha256((tmp_path / "out" / MANIFEST_NAME).read_bytes()).hexdigest()
    )


def test_migrate_with_the_plaintext_primary_key_from_a_file(
    vectors: bv.Vectors, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run(
        capsys,
        "migrate",
        "bigdl",
        str(vectors.v2_plaintext_key_file),
        "out.cspk",
        "--key",
        TEST_KEY,
        "--bigdl-primary-key-plaintext-file",
        "plainkey",
    )
    assert result.code == 0, result.err
    assert decrypt(tmp_path / "out.cspk", tmp_path) == vectors.csv


def test_migrate_with_exported_data_keys(
    vectors: bv.Vectors, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run(
        capsys,
        "migrate",
        "bigdl",
        str(vectors.exported_file),
        "out.cspk",
        "--key",
        TEST_KEY,
        "--bigdl-data-keys",
        str(vectors.exported_keys),
    )
    assert result.code == 0, result.err
    assert decrypt(tmp_path / "out.cspk", tmp_path) == vectors.csv


def test_a_secret_given_as_a_flag_warns(
    vectors: bv.Vectors, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run(
        capsys,
        "migrate",
        "bigdl",
        str(vectors.v2_plaintext_key_file),
        "out.cspk",
        "--key",
        TEST_KEY,
        "--bigdl-primary-key-plaintext",
        bv.PRIMARY_KEY_PLAINTEXT,
    )
    assert result.code == 0
    assert result.err.startswith("cipherspark: warning: --bigdl-primary-key-plaintext shows in ps")


def test_nativeaescbc_needs_the_flag_and_says_nothing_was_verified(
    vectors: bv.Vectors, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "migrate",
        "bigdl",
        str(vectors.native_file),
        "out.cspk",
        "--key",
        TEST_KEY,
        "--bigdl-primary-key-plaintext-file",
        "plainkey",
    ]
    refused = run(capsys, *args)
    assert refused.code != 0 and "--unsafe-unauthenticated-input" in refused.err
    assert not (tmp_path / "out.cspk").exists()
    result = run(capsys, *args, "--unsafe-unauthenticated-input")
    assert result.code == 0
    assert "not fully authenticated" in result.err
    assert decrypt(tmp_path / "out.cspk", tmp_path) == vectors.csv


def test_check_only_lists_every_file(
    vectors: bv.Vectors, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parts = sorted(vectors.v2_folder.glob("part-*"))
    ok = run(
        capsys, "migrate", "bigdl", str(vectors.v2_folder), "--check-only", *simple_args(vectors)
    )
    assert ok.code == 0
    assert [line.split()[0] for line in ok.out.splitlines()] == ["verified"] * len(parts)
    data = bytearray(parts[1].read_bytes())
    data[450] ^= 0x04
    parts[1].write_bytes(bytes(data))
    before = snapshot(tmp_path)
    bad = run(
        capsys, "migrate", "bigdl", str(vectors.v2_folder), "--check-only", *simple_args(vectors)
    )
    assert bad.code == 1
    lines = bad.out.splitlines()
    assert [line.split()[0] for line in lines] == ["verified", "FAILED", "verified"]
    assert parts[1].name in lines[1] and "HMAC does not verify" in lines[1]
    assert bad.err == "cipherspark: error: 1 of 3 BigDL file(s) do not verify\n"
    assert snapshot(tmp_path) == before


def test_a_tampered_part_is_refused_by_name(
    vectors: bv.Vectors, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    victim = sorted(vectors.v2_folder.glob("part-*"))[2]
    data = bytearray(victim.read_bytes())
    data[-40] ^= 0x80
    victim.write_bytes(bytes(data))
    before = snapshot(tmp_path)
    result = run(
        capsys,
        "migrate",
        "bigdl",
        str(vectors.v2_folder),
        "out",
        "--key",
        TEST_KEY,
        *simple_args(vectors),
    )
    assert result.code == 1 and result.out == ""
    [line] = result.err.splitlines()
    assert line.startswith("cipherspark: error: refusing to migrate: ") and victim.name in line
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("args", "words"),
    [
        pytest.param([], ["BigDL key missing"], id="no-key-options"),
        pytest.param(
            [
                "--bigdl-primary-key",
                "bigdl/primaryKey",
                "--bigdl-primary-key-plaintext-file",
                "plainkey",
            ],
            ["not both"],
            id="both-key-options",
        ),
        pytest.param(
            [
                "--bigdl-kms",
                "EHSMKeyManagementService",
                "--bigdl-app-id",
                bv.APP_ID,
                "--bigdl-api-key-file",
                "apikey",
                "--bigdl-primary-key",
                "bigdl/primaryKey",
            ],
            ["unknown --bigdl-kms", "docs/migrate-bigdl.md"],
            id="unknown-kms-type",
        ),
        pytest.param(
            ["--bigdl-primary-key", "bigdl/primaryKey"],
            ["--bigdl-app-id"],
            id="simplekms-without-app-id",
        ),
        pytest.param(
            [
                "--bigdl-primary-key-plaintext-file",
                "plainkey",
                "--bigdl-primary-key-plaintext",
                "x",
            ],
            ["not both"],
            id="secret-flag-and-file",
        ),
    ],
)
def test_bad_options_are_one_line_exit_2(
    vectors: bv.Vectors,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    words: list[str],
) -> None:
    before = snapshot(tmp_path)
    result = run(
        capsys, "migrate", "bigdl", str(vectors.v2_folder), "out", "--key", TEST_KEY, *args
    )
    assert result.code == 2
    lines = result.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cipherspark: error: "), result.err
    for word in words:
        assert word in lines[0]
    assert snapshot(tmp_path) == before


def test_migrate_without_dst_or_key(
    vectors: bv.Vectors, capsys: pytest.CaptureFixture[str]
) -> None:
    no_dst = run(
        capsys, "migrate", "bigdl", str(vectors.v2_folder), "--key", TEST_KEY, *simple_args(vectors)
    )
    assert no_dst.code == 2 and "give the output DST" in no_dst.err
    no_key = run(capsys, "migrate", "bigdl", str(vectors.v2_folder), "out", *simple_args(vectors))
    assert no_key.code == 2 and "give --key" in no_key.err


ENV_API_KEY = "CIPHERSPARK_BIGDL_API_KEY"
ENV_PLAINTEXT = "CIPHERSPARK_BIGDL_PRIMARY_KEY_PLAINTEXT"
# A valid plaintext primary key that is not the vectors' one.
WRONG_PLAINTEXT = "EBESExQVFhcYGRobHB0eHw=="


def test_the_plaintext_primary_key_from_the_environment(
    vectors: bv.Vectors,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENV_PLAINTEXT, bv.PRIMARY_KEY_PLAINTEXT)
    result = run(
        capsys,
        "migrate",
        "bigdl",
        str(vectors.v2_plaintext_key_file),
        "out.cspk",
        "--key",
        TEST_KEY,
    )
    assert result.code == 0, result.err
    assert result.err == ""  # no warning: the secret is on no command line
    assert decrypt(tmp_path / "out.cspk", tmp_path) == vectors.csv


def test_the_simplekms_api_key_from_the_environment(
    vectors: bv.Vectors,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENV_API_KEY, bv.API_KEY)
    args = [a for a in simple_args(vectors) if a not in ("--bigdl-api-key-file", "apikey")]
    assert "--bigdl-api-key-file" not in args and "--bigdl-primary-key" in args
    result = run(
        capsys, "migrate", "bigdl", str(vectors.v2_folder), "out", "--key", TEST_KEY, *args
    )
    assert result.code == 0, result.err
    assert result.err == ""
    assert decrypt(tmp_path / "out", tmp_path) == vectors.csv


def test_key_options_on_the_command_line_win_over_the_environment(
    vectors: bv.Vectors,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A variable left over from another migration: a wrong plaintext primary key.
    monkeypatch.setenv(ENV_PLAINTEXT, WRONG_PLAINTEXT)
    monkeypatch.setenv(ENV_API_KEY, "999999999999")
    simple = run(
        capsys,
        "migrate",
        "bigdl",
        str(vectors.v2_folder),
        "out",
        "--key",
        TEST_KEY,
        *simple_args(vectors),
    )
    assert simple.code == 0, simple.err
    assert decrypt(tmp_path / "out", tmp_path) == vectors.csv
    from_file = run(
        capsys,
        "migrate",
        "bigdl",
        str(vectors.v2_plaintext_key_file),
        "out.cspk",
        "--key",
        TEST_KEY,
        "--bigdl-primary-key-plaintext-file",
        "plainkey",
    )
    assert from_file.code == 0, from_file.err
    assert decrypt(tmp_path / "out.cspk", tmp_path) == vectors.csv
    # And the variable is what is used without them: the wrong key is refused, not garbage.
    wrong = run(
        capsys,
        "migrate",
        "bigdl",
        str(vectors.v2_plaintext_key_file),
        "other.cspk",
        "--key",
        TEST_KEY,
    )
    assert wrong.code != 0 and len(wrong.err.splitlines()) == 1
    assert WRONG_PLAINTEXT not in wrong.out + wrong.err
    assert not (tmp_path / "other.cspk").exists()


@pytest.mark.parametrize("value", [None, "", " \n"], ids=["unset", "empty", "blank"])
@pytest.mark.parametrize(
    ("args", "words"),
    [
        pytest.param([], ["BigDL key missing", ENV_PLAINTEXT, ENV_API_KEY], id="no-key"),
        pytest.param(
            ["--bigdl-app-id", bv.APP_ID, "--bigdl-primary-key", "bigdl/primaryKey"],
            ["SimpleKMS needs its APIKEY", ENV_API_KEY],
            id="no-api-key",
        ),
    ],
)
def test_a_missing_bigdl_secret_is_one_line_naming_the_variable(
    vectors: bv.Vectors,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    value: str | None,
    args: list[str],
    words: list[str],
) -> None:
    if value is not None:
        monkeypatch.setenv(ENV_API_KEY, value)
        monkeypatch.setenv(ENV_PLAINTEXT, value)
    before = snapshot(tmp_path)
    result = run(
        capsys, "migrate", "bigdl", str(vectors.v2_folder), "out", "--key", TEST_KEY, *args
    )
    assert result.code == 2 and result.out == ""
    [line] = result.err.splitlines()
    assert line.startswith("cipherspark: error: ")
    for word in words:
        assert word in line
    assert snapshot(tmp_path) == before


def test_help_prefers_the_environment_for_bigdl_secrets(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # Rich would break the long names across lines
    result = run(capsys, "migrate", "bigdl", "--help")
    assert result.code == 0
    for flag, variable in (
        ("--bigdl-api-key ", ENV_API_KEY),
        ("--bigdl-primary-key-plaintext ", ENV_PLAINTEXT),
    ):
        [line] = [line for line in result.out.splitlines() if f" {flag}" in line]
        assert f"prefer the environment variable {variable}" in line
