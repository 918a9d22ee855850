"""Storage replays whole datasets; readers refuse them (the KMS's dataset registry).

Each test plays the storage attacker with files cipherspark itself wrote: the attacker can copy,
swap, keep and restore any of them, and every copy is authentic. ``decrypt`` must refuse all
but the commit registered at the location it reads; ``cipherspark dataset`` is the owner's way to
accept a dataset copied or moved on purpose. The Spark readers make the same check
(tests/spark/test_registry_reads.py).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from cipherspark.cli import main
from cipherspark.kms import local, open_kms
from cipherspark.kms.registry import dataset_location
from tests.conftest import TEST_CREDENTIALS, TEST_KEY

OTHER_KEY = "other-key"


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return Result(code, out, err)


@pytest.fixture(autouse=True)
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with a keystore holding TEST_KEY and OTHER_KEY, and two CSV files."""
    monkeypatch.chdir(tmp_path)
    for name in ("CIPHERSPARK_KMS", "CIPHERSPARK_KEY", "CIPHERSPARK_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CIPHERSPARK_APP_ID", TEST_CREDENTIALS.app_id)
    monkeypatch.setenv("CIPHERSPARK_API_KEY", TEST_CREDENTIALS.api_key)
    monkeypatch.setattr(local, "_SCRYPT", {"n": 1 << 10, "r": 8, "p": 1})
    with open_kms(None, TEST_CREDENTIALS, create=True) as kms:
        kms.create_key(TEST_KEY)
        kms.create_key(OTHER_KEY)
    for name, rows in (("v1", "ann,30\n"), ("v2", "bob,40\n"), ("v3", "cid,50\n")):
        folder = tmp_path / f"plain-{name}"
        folder.mkdir()
        (folder / "part.csv").write_text("name,age\n" + rows)
        (tmp_path / f"{name}.csv").write_text("name,age\n" + rows)
    return tmp_path


def encrypt(capsys: pytest.CaptureFixture[str], src: str, dst: str, *extra: str) -> None:
    result = cli(capsys, "encrypt", src, dst, "--key", TEST_KEY, *extra)
    assert result.code == 0, result.err


def decrypt(capsys: pytest.CaptureFixture[str], src: str, *extra: str) -> Result:
    out = Path("out.csv")
    out.unlink(missing_ok=True)
    result = cli(capsys, "decrypt", src, str(out), *extra)
    if result.code != 0:
        assert not out.exists()  # nothing partial
    return result


def refused(result: Result, *words: str) -> None:
    assert result.code != 0
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_a_rolled_back_dataset_is_refused(
    capsys: pytest.CaptureFixture[str], project: Path, kind: str
) -> None:
    src = "plain-v{}" if kind == "folder" else "v{}.csv"
    encrypt(capsys, src.format(1), "data.cspk")
    shutil.copytree("data.cspk", "kept") if kind == "folder" else shutil.copy("data.cspk", "kept")
    encrypt(capsys, src.format(2), "data.cspk", "--overwrite")
    assert decrypt(capsys, "data.cspk").code == 0
    assert Path("out.csv").read_text() == "name,age\nbob,40\n"
    # The attacker puts the old, authentic commit back.
    if kind == "folder":
        shutil.rmtree("data.cspk")
        shutil.copytree("kept", "data.cspk")
        refused(decrypt(capsys, "data.cspk"), "rolled back", "generation 1", "generation 2")
    else:
        shutil.copy("kept", "data.cspk")
        refused(decrypt(capsys, "data.cspk"), "replaced by another dataset")
    # And the owner can check it without decrypting.
    refused(cli(capsys, "dataset", "verify", "data.cspk"), "data.cspk")


def test_a_same_key_dataset_swapped_in_is_refused(
    capsys: pytest.CaptureFixture[str], project: Path
) -> None:
    """Two datasets of one owner under one key: each authentic, neither may stand in for the
    other (a folder's manifest names its dataset, but a reader without --dataset-id could not
    tell them apart)."""
    encrypt(capsys, "plain-v1", "salaries.cspk")
    encrypt(capsys, "plain-v2", "public.cspk")
    shutil.rmtree("salaries.cspk")
    shutil.copytree("public.cspk", "salaries.cspk")
    refused(decrypt(capsys, "salaries.cspk"), "replaced by another dataset")
    assert decrypt(capsys, "public.cspk").code == 0


def test_a_dataset_under_another_key_swapped_in_is_refused(
    capsys: pytest.CaptureFixture[str], project: Path
) -> None:
    encrypt(capsys, "v1.csv", "a.cspk")
    result = cli(capsys, "encrypt", "v2.csv", "b.cspk", "--key", OTHER_KEY)
    assert result.code == 0, result.err
    shutil.copy("b.cspk", "a.cspk")
    refused(decrypt(capsys, "a.cspk"), "a.cspk", "replaced by another dataset")


def test_a_copy_is_refused_until_the_owner_registers_it(
    capsys: pytest.CaptureFixture[str], project: Path
) -> None:
    encrypt(capsys, "plain-v1", "data.cspk")
    shutil.copytree("data.cspk", "copy.cspk")
    refused(decrypt(capsys, "copy.cspk"), "no dataset is registered", "dataset register")
    # Read anyway, by name: the flag says what it gives up.
    assert decrypt(capsys, "copy.cspk", "--unsafe-skip-registry").code == 0
    result = cli(capsys, "dataset", "register", "copy.cspk")
    assert result.code == 0, result.err
    assert "registered dataset" in result.out
    assert decrypt(capsys, "copy.cspk").code == 0
    again = cli(capsys, "dataset", "register", "copy.cspk")
    assert again.code == 0 and "registered already" in again.out
    verified = cli(capsys, "dataset", "verify", "copy.cspk")
    assert verified.code == 0 and "generation 1" in verified.out


def test_register_refuses_to_roll_a_dataset_back(
    capsys: pytest.CaptureFixture[str], project: Path
) -> None:
    """A worker host (or the owner, by mistake) cannot make readers accept an old commit by
    registering it: the registry only moves a dataset forward."""
    encrypt(capsys, "plain-v1", "data.cspk")
    shutil.copytree("data.cspk", "kept")
    encrypt(capsys, "plain-v2", "data.cspk", "--overwrite")
    shutil.rmtree("data.cspk")
    shutil.copytree("kept", "data.cspk")
    refused(cli(capsys, "dataset", "register", "data.cspk"), "generation")
    refused(decrypt(capsys, "data.cspk"), "rolled back")


def test_mv_moves_the_dataset_and_its_record(
    capsys: pytest.CaptureFixture[str], project: Path
) -> None:
    encrypt(capsys, "plain-v1", "data.cspk")
    result = cli(capsys, "dataset", "mv", "data.cspk", "moved.cspk")
    assert result.code == 0, result.err
    assert not Path("data.cspk").exists()
    assert decrypt(capsys, "moved.cspk").code == 0
    # Moved by other tools, then the record follows.
    Path("moved.cspk").rename("elsewhere.cspk")
    refused(decrypt(capsys, "elsewhere.cspk"), "no dataset is registered")
    result = cli(capsys, "dataset", "mv", "moved.cspk", "elsewhere.cspk", "--registry-only")
    assert result.code == 0, result.err
    assert decrypt(capsys, "elsewhere.cspk").code == 0
    # Nothing is left registered at the old names: a dataset put there is refused.
    shutil.copytree("elsewhere.cspk", "data.cspk")
    refused(decrypt(capsys, "data.cspk"), "no dataset is registered")


def test_mv_refuses_a_dataset_that_is_not_the_registered_one(
    capsys: pytest.CaptureFixture[str], project: Path
) -> None:
    encrypt(capsys, "plain-v1", "data.cspk")
    encrypt(capsys, "plain-v2", "other.cspk")
    shutil.rmtree("data.cspk")
    shutil.copytree("other.cspk", "data.cspk")
    refused(cli(capsys, "dataset", "mv", "data.cspk", "moved.cspk"), "replaced")
    assert Path("data.cspk").is_dir() and not Path("moved.cspk").exists()
    refused(cli(capsys, "dataset", "mv", "nothing.cspk", "x.cspk"), "no dataset is registered")


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_cp_copies_and_registers_the_copy(
    capsys: pytest.CaptureFixture[str], project: Path, kind: str
) -> None:
    encrypt(capsys, "plain-v1" if kind == "folder" else "v1.csv", "data.cspk")
    Path("backup").mkdir()
    result = cli(capsys, "dataset", "cp", "data.cspk", "backup/data.cspk")
    assert result.code == 0, result.err
    assert "copied dataset" in result.out
    # Both are read, each where it is, and both are the one dataset.
    assert decrypt(capsys, "backup/data.cspk").code == 0
    assert Path("out.csv").read_text() == "name,age\nann,30\n"
    assert decrypt(capsys, "data.cspk").code == 0
    source = cli(capsys, "dataset", "verify", "data.cspk").out.split(",")[0].split(": ")[1]
    copy = cli(capsys, "dataset", "verify", "backup/data.cspk").out.split(",")[0].split(": ")[1]
    assert source == copy and source.startswith("dataset ")
    # Nothing is replaced, and no staging is left behind.
    refused(cli(capsys, "dataset", "cp", "data.cspk", "backup/data.cspk"), "exists")
    assert sorted(p.name for p in Path("backup").iterdir()) == ["data.cspk"]


def test_cp_refuses_a_dataset_that_is_not_the_registered_one(
    capsys: pytest.CaptureFixture[str], project: Path
) -> None:
    """A storage attacker's swap is not laundered by copying it: cp checks the source as a
    reader would, and leaves nothing at the destination."""
    encrypt(capsys, "plain-v1", "data.cspk")
    encrypt(capsys, "plain-v2", "other.cspk")
    shutil.rmtree("data.cspk")
    shutil.copytree("other.cspk", "data.cspk")
    refused(cli(capsys, "dataset", "cp", "data.cspk", "copy.cspk"), "replaced")
    assert not Path("copy.cspk").exists()
    assert not [p for p in Path().iterdir() if p.name.startswith(".copy.cspk")]
    refused(decrypt(capsys, "copy.cspk"), "does not exist")


def test_cp_checks_the_copy_it_made(
    capsys: pytest.CaptureFixture[str], project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Storage that swaps the source's manifest while it is copied (after the source was
    checked) gets nothing registered and nothing published: the copy is checked as copied."""
    encrypt(capsys, "plain-v1", "data.cspk")
    encrypt(capsys, "plain-v2", "other.cspk")
    real_copytree = shutil.copytree

    def swapping_copytree(src: Path, dst: Path, **kwargs: object) -> object:
        shutil.rmtree("data.cspk")
        real_copytree("other.cspk", "data.cspk")
        return real_copytree(src, dst, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(shutil, "copytree", swapping_copytree)
    refused(cli(capsys, "dataset", "cp", "data.cspk", "copy.cspk"), "changed while it was copied")
    monkeypatch.setattr(shutil, "copytree", real_copytree)
    assert not Path("copy.cspk").exists()
    assert not [p for p in Path().iterdir() if p.name.startswith(".copy.cspk")]
    with open_kms(None, TEST_CREDENTIALS) as kms:
        assert kms.dataset_at(dataset_location("copy.cspk")) is None
