"""Files created safe from the start: modes seen while a file is being written, no writing into
or through what was there, ``--overwrite`` only onto what cipherspark wrote.

Modes are observed *at creation*, under umask 000 (so only the mode the code asks for counts):
from the progress callback while an output is still under its temporary name, or from a hook
on the rename that publishes a secret (the file as it exists just before it takes its name).
The CLI cases run ``cipherspark`` through :func:`cipherspark.cli.main` as tests/test_cli.py does.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cipherspark import _atomic
from cipherspark.cli import main
from cipherspark.errors import OutputExistsError
from cipherspark.files import decrypt_path, encrypt_path
from cipherspark.kms import LocalKms, local
from cipherspark.kms.server.tls import ensure_self_signed
from tests.conftest import TEST_CREDENTIALS, TEST_KEY

CSV = b"name,age\n" + b"".join(b"n%d,%d\n" % (i, i % 90) for i in range(50_000))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def umask0() -> Iterator[None]:
    """umask 000: a file gets exactly the mode it is created with."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


class StagingModes:
    """A progress callback recording the modes of ``output``'s temporary file(s) while they
    are being written (``seen``)."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self.seen: list[int] = []

    def __call__(self, _: int) -> None:
        for tmp in self.output.parent.glob(f".{self.output.name}.cipherspark-*.tmp"):
            self.seen.append(mode(tmp))


@pytest.fixture
def publishing(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """(final name, mode of the file about to take it) for every rename or link that
    publishes a file: the state of a secret just before it appears under its name."""
    seen: list[tuple[str, int]] = []
    replace, link = os.replace, os.link

    def spy_replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if Path(src).is_file():
            seen.append((Path(dst).name, mode(Path(src))))
        replace(src, dst, *args, **kwargs)

    def spy_link(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        seen.append((Path(dst).name, mode(Path(src))))
        link(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", spy_replace)
    monkeypatch.setattr(os, "link", spy_link)
    return seen


# -- decrypted plaintext: 0600 from the start --------------------------------------------


def test_decrypted_output_is_0600_while_written_and_after(
    tmp_path: Path, kms: LocalKms, umask0: None
) -> None:
    (tmp_path / "p.csv").write_bytes(CSV)
    encrypted = tmp_path / "p.cspk"
    progress = StagingModes(encrypted)
    encrypt_path(tmp_path / "p.csv", encrypted, kms, TEST_KEY, progress=progress)
    assert progress.seen and set(progress.seen) == {0o644}  # containers: the usual mode
    assert mode(encrypted) == 0o644

    out = tmp_path / "out.csv"
    progress = StagingModes(out)
    decrypt_path(encrypted, out, kms, progress=progress)
    assert progress.seen, "the callback should have seen the file being written"
    assert set(progress.seen) == {0o600}
    assert mode(out) == 0o600
    assert out.read_bytes() == CSV


# -- secrets and keys: new files, never the one that was there -------------------------------


def planted(path: Path, elsewhere: Path) -> os.stat_result:
    """A 0644 file at ``path`` hard-linked from ``elsewhere`` (a copy its planter can read)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"planted\n")
    path.chmod(0o644)
    os.link(path, elsewhere)
    return path.stat()


def test_tls_key_is_created_0600_and_never_written_into_a_planted_file(
    tmp_path: Path, umask0: None, publishing: list[tuple[str, int]]
) -> None:
    tls = tmp_path / "tls"
    before = planted(tls / "key.pem", tmp_path / "attacker-copy")  # a key without cert
    _cert, key, created = ensure_self_signed(tls, "127.0.0.1")
    assert created
    assert ("key.pem", 0o600) in publishing and ("cert.pem", 0o644) in publishing
    assert mode(key) == 0o600
    assert key.stat().st_ino != before.st_ino
    # The planted file (and so the attacker's hard link to it) never received the key.
    assert (tmp_path / "attacker-copy").read_bytes() == b"planted\n"
    assert mode(tmp_path / "attacker-copy") == 0o644
    assert b"PRIVATE KEY" in key.read_bytes()


def test_tls_key_path_that_is_a_symlink_is_not_followed(tmp_path: Path, umask0: None) -> None:
    tls = tmp_path / "tls"
    tls.mkdir()
    victim = tmp_path / "victim"
    victim.write_bytes(b"victim\n")
    (tls / "key.pem").symlink_to(victim)
    _, key, _ = ensure_self_signed(tls, "127.0.0.1")
    assert victim.read_bytes() == b"victim\n"
    assert not key.is_symlink() and mode(key) == 0o600


def test_keystore_files_are_created_0600(
    tmp_path: Path,
    umask0: None,
    publishing: list[tuple[str, int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(local, "_SCRYPT", {"n": 1 << 10, "r": 8, "p": 1})
    kms = LocalKms(tmp_path / "kms", TEST_CREDENTIALS, create=True)
    kms.create_key("k1")
    names = {name for name, _ in publishing}
    assert "keystore.json" in names and any(name.startswith("k1") for name in names)
    assert {m for _, m in publishing} == {0o600}
    for path in (tmp_path / "kms").rglob("*"):
        if path.is_file():
            assert mode(path) == 0o600, path


# -- the CLI: symlinks, foreign folders, our own datasets -------------------------------------


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., int]:
    """``cipherspark ARGS`` in an empty folder with a keystore holding TEST_KEY."""
    monkeypatch.chdir(tmp_path)
    for name in ("CIPHERSPARK_KMS", "CIPHERSPARK_KEY", "CIPHERSPARK_MASTER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CIPHERSPARK_APP_ID", TEST_CREDENTIALS.app_id)
    monkeypatch.setenv("CIPHERSPARK_API_KEY", TEST_CREDENTIALS.api_key)
    monkeypatch.setattr(local, "_SCRYPT", {"n": 1 << 10, "r": 8, "p": 1})

    def run(*args: str) -> int:
        return main(list(args))

    assert run("key", "create", TEST_KEY) == 0
    (tmp_path / "p.csv").write_bytes(CSV)
    return run


def one_error(capsys: pytest.CaptureFixture[str], code: int, *names: str) -> str:
    err = capsys.readouterr().err
    assert code != 0
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cipherspark: error: "), err
    assert "Traceback" not in err
    for name in names:
        assert name in lines[0]
    return lines[0]


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
@pytest.mark.parametrize("dangling", [True, False])
def test_a_symlink_at_the_output_is_refused(
    tmp_path: Path,
    cli: Callable[..., int],
    capsys: pytest.CaptureFixture[str],
    overwrite: list[str],
    dangling: bool,
) -> None:
    assert cli("encrypt", "p.csv", "p.cspk", "--key", TEST_KEY) == 0
    target = tmp_path / "elsewhere"
    if not dangling:
        target.write_bytes(b"do not touch\n")
    for command in (["decrypt", "p.cspk", "link"], ["encrypt", "p.csv", "link", "--key", TEST_KEY]):
        (tmp_path / "link").unlink(missing_ok=True)
        (tmp_path / "link").symlink_to(target)
        capsys.readouterr()
        code = cli(*command, *overwrite)
        assert "symbolic link" in one_error(capsys, code, "link")
        assert os.readlink(tmp_path / "link") == str(target)
        if dangling:
            assert not target.exists()
        else:
            assert target.read_bytes() == b"do not touch\n"


@pytest.mark.parametrize(
    "command",
    [
        ["decrypt", "p.cspk", "folder"],
        ["encrypt", "p.csv", "folder", "--key", TEST_KEY],
        ["encrypt", "parts", "folder", "--key", TEST_KEY],
    ],
)
def test_overwrite_onto_a_foreign_folder_is_refused_and_it_is_intact(
    tmp_path: Path,
    cli: Callable[..., int],
    capsys: pytest.CaptureFixture[str],
    command: list[str],
) -> None:
    assert cli("encrypt", "p.csv", "p.cspk", "--key", TEST_KEY) == 0
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "part-0.csv").write_bytes(CSV)
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "precious.txt").write_bytes(b"years of work\n")
    before = sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
    capsys.readouterr()
    code = cli(*command, "--overwrite")
    assert "not a cipherspark dataset" in one_error(capsys, code, "folder")
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) == before
    assert (folder / "sub" / "precious.txt").read_bytes() == b"years of work\n"
    assert not list(tmp_path.glob(".folder.*"))  # no staging left behind


def test_overwrite_onto_a_foreign_file_is_refused_for_encrypt(
    tmp_path: Path,
    cli: Callable[..., int],
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "notes.txt").write_bytes(b"mine\n")
    capsys.readouterr()
    code = cli("encrypt", "p.csv", "notes.txt", "--key", TEST_KEY, "--overwrite")
    assert "not a cipherspark container" in one_error(capsys, code, "notes.txt")
    assert (tmp_path / "notes.txt").read_bytes() == b"mine\n"


def test_overwrite_onto_our_own_outputs_works(
    tmp_path: Path,
    cli: Callable[..., int],
    umask0: None,
) -> None:
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "part-0.csv").write_bytes(CSV)
    assert cli("encrypt", "parts", "ds", "--key", TEST_KEY) == 0
    first = {p.name for p in (tmp_path / "ds").iterdir()}
    assert cli("encrypt", "parts", "ds", "--key", TEST_KEY, "--overwrite") == 0
    assert {p.name for p in (tmp_path / "ds").iterdir()} == first
    assert cli("encrypt", "p.csv", "p.cspk", "--key", TEST_KEY) == 0
    assert cli("encrypt", "p.csv", "p.cspk", "--key", TEST_KEY, "--overwrite") == 0
    (tmp_path / "out.csv").write_bytes(b"an older plaintext\n")
    (tmp_path / "out.csv").chmod(0o644)
    assert cli("decrypt", "ds", "out.csv", "--overwrite") == 0
    assert (tmp_path / "out.csv").read_bytes() == CSV
    assert mode(tmp_path / "out.csv") == 0o600  # a new file, not the old one rewritten
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# -- replacing is atomic; appearing is exclusive ----------------------------------------------


def test_replacing_a_dataset_leaves_no_moment_without_one(
    tmp_path: Path, kms: LocalKms, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "part-0.csv").write_bytes(CSV)
    ds = tmp_path / "ds"
    encrypt_path(tmp_path / "parts", ds, kms, TEST_KEY)
    gaps: list[str] = []
    renames: list[str] = []

    def watched(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            result = real(*args, **kwargs)
            renames.append(name)
            if not os.path.lexists(ds):
                gaps.append(name)
            return result

        return call

    monkeypatch.setattr(os, "rename", watched("rename", os.rename))
    monkeypatch.setattr(os, "replace", watched("replace", os.replace))
    monkeypatch.setattr(_atomic, "_rename", watched("renameat2", _atomic._rename))
    encrypt_path(tmp_path / "parts", ds, kms, TEST_KEY, overwrite=True)
    assert renames and not gaps, (renames, gaps)
    decrypt_path(ds, tmp_path / "out.csv", kms)
    assert (tmp_path / "out.csv").read_bytes() == CSV


@pytest.mark.parametrize("planted", ["dangling link", "file"])
def test_what_appears_at_the_output_while_writing_is_not_replaced(
    tmp_path: Path, kms: LocalKms, planted: str
) -> None:
    (tmp_path / "p.csv").write_bytes(CSV)
    encrypt_path(tmp_path / "p.csv", tmp_path / "p.cspk", kms, TEST_KEY)
    out = tmp_path / "out.csv"

    def plant(_: int) -> None:
        if not os.path.lexists(out):
            if planted == "file":
                out.write_bytes(b"someone else's\n")
            else:
                out.symlink_to(tmp_path / "nowhere")

    with pytest.raises(OutputExistsError, match=r"appeared while writing|symbolic link"):
        decrypt_path(tmp_path / "p.cspk", out, kms, progress=plant)
    if planted == "file":
        assert out.read_bytes() == b"someone else's\n"
    else:
        assert os.readlink(out) == str(tmp_path / "nowhere")
        assert not (tmp_path / "nowhere").exists()
    assert not list(tmp_path.glob(".out.csv.*"))
