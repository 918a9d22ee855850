"""encrypt_path / decrypt_path: round trips, CSV part folders, atomic outputs, input errors."""

from __future__ import annotations

import io
import os
import random
import shutil
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cipherspark.crypto import (
    CONTENT_TYPE_BINARY,
    CONTENT_TYPE_CSV_HEADER,
    ContainerFile,
    ContainerHeader,
    EncryptingWriter,
    is_container,
    read_header,
)
from cipherspark.crypto._streaming import BODY_HEADER_SIZE, TAG_SIZE
from cipherspark.crypto.manifest import DatasetIdentity, Manifest, describe_part, write_manifest
from cipherspark.datasets import register_dataset
from cipherspark.errors import (
    InputError,
    IntegrityError,
    NotEncryptedError,
    OutputExistsError,
    UsageError,
)
from cipherspark.files import decrypt_path, encrypt_path
from cipherspark.kms import LocalKms
from tests.conftest import TEST_KEY

SEGMENT = 4096


def listing(directory: Path) -> list[str]:
    """Every name under ``directory`` (recursively, hidden ones included)."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def random_bytes(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def csv_part(header: str, first_id: int, rows: int) -> bytes:
    lines = [header] + [f"{i},name-{i},{i % 70}" for i in range(first_id, first_id + rows)]
    return ("\n".join(lines) + "\n").encode()


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


# -- round trips -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "size"),
    [("data.bin", 50_000), ("people.csv", 12_345), ("one.bin", 1), ("exact.bin", SEGMENT - 56)],
)
def test_file_round_trip(tmp_path: Path, kms: LocalKms, name: str, size: int) -> None:
    src = tmp_path / name
    plaintext = random_bytes(size, seed=size)
    src.write_bytes(plaintext)
    enc, out = tmp_path / "enc.cspk", tmp_path / "out"
    seen: list[int] = []

    result = encrypt_path(src, enc, kms, TEST_KEY, segment_size=SEGMENT, progress=seen.append)
    assert (result.files, result.plaintext_bytes) == (1, size)
    assert result.ciphertext_bytes == enc.stat().st_size
    assert sum(seen) == size
    assert is_container(enc)
    with open(enc, "rb") as f:
        header, _ = read_header(f)
    assert header.key_id == TEST_KEY
    assert header.segment_size == SEGMENT
    expected_type = CONTENT_TYPE_CSV_HEADER if name.endswith(".csv") else CONTENT_TYPE_BINARY
    assert header.content_type == expected_type
    assert kms.unwrap_data_key(TEST_KEY, header.wrapped_key)  # a real wrapped data key

    seen.clear()
    decrypted = decrypt_path(enc, out, kms, progress=seen.append)
    assert (decrypted.files, decrypted.plaintext_bytes) == (1, size)
    assert sum(seen) == size
    assert out.read_bytes() == plaintext
    assert src.read_bytes() == plaintext  # the input is left alone
    # Nothing else was left behind (no temporary files).
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["kms", name, "enc.cspk", "out"])


def test_default_segment_size_round_trip(tmp_path: Path, kms: LocalKms) -> None:
    src = tmp_path / "big.bin"
    plaintext = random_bytes(3 * (1 << 20) + 17, seed=3)
    src.write_bytes(plaintext)
    enc = tmp_path / "big.cspk"
    encrypt_path(src, enc, kms, TEST_KEY)
    header = _header(enc)
    assert header.segment_size == 1 << 20
    data_key = kms.unwrap_data_key(TEST_KEY, header.wrapped_key)
    assert ContainerFile(str(enc), data_key).segment_count == 4
    decrypt_path(tmp_path / "big.cspk", tmp_path / "big.out", kms)
    assert (tmp_path / "big.out").read_bytes() == plaintext


def _header(path: Path) -> ContainerHeader:
    with open(path, "rb") as f:
        return read_header(f)[0]


def test_empty_file_round_trip(tmp_path: Path, kms: LocalKms) -> None:
    src = tmp_path / "empty.csv"
    src.write_bytes(b"")
    result = encrypt_path(src, tmp_path / "empty.cspk", kms, TEST_KEY, segment_size=SEGMENT)
    assert result.plaintext_bytes == 0
    header_size = len(_header(tmp_path / "empty.cspk").encode())
    assert (tmp_path / "empty.cspk").stat().st_size == header_size + BODY_HEADER_SIZE + TAG_SIZE
    decrypted = decrypt_path(tmp_path / "empty.cspk", tmp_path / "empty.out", kms)
    assert decrypted.plaintext_bytes == 0
    assert (tmp_path / "empty.out").exists()
    assert (tmp_path / "empty.out").read_bytes() == b""


def test_each_file_gets_its_own_data_key(tmp_path: Path, kms: LocalKms) -> None:
    src = tmp_path / "same.bin"
    src.write_bytes(b"same plaintext " * 100)
    encrypt_path(src, tmp_path / "a.cspk", kms, TEST_KEY, segment_size=SEGMENT)
    encrypt_path(src, tmp_path / "b.cspk", kms, TEST_KEY, segment_size=SEGMENT)
    a, b = (tmp_path / "a.cspk").read_bytes(), (tmp_path / "b.cspk").read_bytes()
    assert len(a) == len(b)
    assert _header(tmp_path / "a.cspk").wrapped_key != _header(tmp_path / "b.cspk").wrapped_key
    assert a[-100:] != b[-100:]


# -- folders of CSV parts --------------------------------------------------------------------------


def make_csv_parts(folder: Path) -> tuple[str, list[bytes]]:
    """A Spark-like output folder: CSV parts with a header each, plus files readers must skip."""
    folder.mkdir()
    header = "id,name,age"
    parts = [
        csv_part(header, 0, 400),
        csv_part(header, 400, 0),
        csv_part(header, 400, 1),
        csv_part(header, 401, 1500),
    ]
    for number, data in enumerate(parts):
        (folder / f"part-{number:05d}-abc.csv").write_bytes(data)
    (folder / "_SUCCESS").write_bytes(b"")
    (folder / ".part-00000-abc.csv.crc").write_bytes(b"crc")
    return header, parts


def test_folder_of_csv_parts_to_one_csv(tmp_path: Path, kms: LocalKms) -> None:
    header, parts = make_csv_parts(tmp_path / "plain")
    enc = tmp_path / "enc"
    result = encrypt_path(tmp_path / "plain", enc, kms, TEST_KEY, segment_size=SEGMENT)
    assert result.files == 4
    assert result.plaintext_bytes == sum(map(len, parts))
    names = sorted(p.name for p in enc.iterdir())
    assert names == ["_manifest.cspk"] + [f"part-{n:05d}-abc.csv.cspk" for n in range(4)]
    for path in enc.glob("part-*"):
        assert _header(path).content_type == CONTENT_TYPE_CSV_HEADER
    # One dataset, one data key: every part carries the same wrapped key.
    assert len({_header(p).wrapped_key for p in enc.iterdir()}) == 1

    out = tmp_path / "all.csv"
    decrypted = decrypt_path(enc, out, kms)
    text = out.read_text()
    assert decrypted.files == 4
    assert decrypted.plaintext_bytes == len(out.read_bytes())
    lines = text.splitlines()
    assert lines[0] == header
    assert lines.count(header) == 1
    assert lines[1:] == [f"{i},name-{i},{i % 70}" for i in range(1901)]
    assert text.endswith("\n")


def test_folder_of_headerless_parts_is_concatenated(tmp_path: Path, kms: LocalKms) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    chunks = [random_bytes(n, seed=n) for n in (10_000, 0, 5000)]
    for number, data in enumerate(chunks):
        (plain / f"part-{number}").write_bytes(data)
    encrypt_path(plain, tmp_path / "enc", kms, TEST_KEY, segment_size=SEGMENT)
    decrypt_path(tmp_path / "enc", tmp_path / "out", kms)
    assert (tmp_path / "out").read_bytes() == b"".join(chunks)


def test_csv_header_only_dropped_for_csv_parts(tmp_path: Path, kms: LocalKms) -> None:
    """Parts declared headerless keep their first line, even after a CSV part with a header."""
    enc = tmp_path / "enc"
    enc.mkdir()
    data_key = kms.generate_data_key(TEST_KEY)
    contents = [
        (CONTENT_TYPE_CSV_HEADER, b"h1,h2\n1,2\n"),
        (CONTENT_TYPE_CSV_HEADER, b"h1,h2\n3,4\n"),
        ("text/csv; header=absent", b"5,6\n"),
    ]
    for number, (content_type, data) in enumerate(contents):
        header = ContainerHeader(TEST_KEY, data_key.wrapped, 64, content_type)
        buf = io.BytesIO()
        writer = EncryptingWriter(buf, header, data_key.plaintext)
        writer.write(data)
        writer.close()
        (enc / f"part-{number}.cspk").write_bytes(buf.getvalue())
    parts = sorted(enc.iterdir())
    write_manifest(
        enc,
        Manifest(tuple(describe_part(p, 0) for p in parts), DatasetIdentity.new(TEST_KEY)),
        ContainerHeader(TEST_KEY, data_key.wrapped, 64),
        data_key.plaintext,
    )
    register_dataset(enc, kms)  # hand-built: registered as cipherspark's writers do
    decrypt_path(enc, tmp_path / "out.csv", kms)
    assert (tmp_path / "out.csv").read_bytes() == b"h1,h2\n1,2\n3,4\n5,6\n"


# -- failures leave nothing behind -----------------------------------------------------------------


def test_failure_in_a_late_segment_leaves_no_output(tmp_path: Path, kms: LocalKms) -> None:
    src = tmp_path / "data.bin"
    src.write_bytes(random_bytes(20 * SEGMENT, seed=9))
    enc = tmp_path / "data.cspk"
    encrypt_path(src, enc, kms, TEST_KEY, segment_size=SEGMENT)
    size = enc.stat().st_size
    assert size > 20 * SEGMENT
    flip_byte(enc, size - SEGMENT - 100)  # in the second-to-last segment
    before = listing(tmp_path)

    out = tmp_path / "data.out"
    with pytest.raises(IntegrityError, match="segment 19"):
        decrypt_path(enc, out, kms)
    assert not out.exists()
    assert listing(tmp_path) == before  # no temporary file either


def test_truncated_file_leaves_no_output(tmp_path: Path, kms: LocalKms) -> None:
    src = tmp_path / "data.bin"
    src.write_bytes(random_bytes(10 * SEGMENT, seed=10))
    enc = tmp_path / "data.cspk"
    encrypt_path(src, enc, kms, TEST_KEY, segment_size=SEGMENT)
    data = enc.read_bytes()
    enc.write_bytes(data[: len(data) - (len(data) - len(_header(enc).encode())) % SEGMENT])
    before = listing(tmp_path)
    with pytest.raises(IntegrityError):
        decrypt_path(enc, tmp_path / "out", kms)
    assert listing(tmp_path) == before


def test_failure_in_a_later_part_leaves_no_output(tmp_path: Path, kms: LocalKms) -> None:
    make_csv_parts(tmp_path / "plain")
    enc = tmp_path / "enc"
    encrypt_path(tmp_path / "plain", enc, kms, TEST_KEY, segment_size=SEGMENT)
    last = enc / "part-00003-abc.csv.cspk"
    flip_byte(last, last.stat().st_size - 1)
    before = listing(tmp_path)
    with pytest.raises(IntegrityError, match="part-00003"):
        decrypt_path(enc, tmp_path / "all.csv", kms)
    assert listing(tmp_path) == before


def test_failed_overwrite_keeps_the_old_output(tmp_path: Path, kms: LocalKms) -> None:
    src = tmp_path / "data.bin"
    src.write_bytes(random_bytes(8 * SEGMENT, seed=11))
    enc = tmp_path / "data.cspk"
    encrypt_path(src, enc, kms, TEST_KEY, segment_size=SEGMENT)
    flip_byte(enc, enc.stat().st_size - 20)
    out = tmp_path / "out"
    out.write_bytes(b"previous result")
    before = listing(tmp_path)
    with pytest.raises(IntegrityError):
        decrypt_path(enc, out, kms, overwrite=True)
    assert out.read_bytes() == b"previous result"
    assert listing(tmp_path) == before


def test_edited_wrapped_key_is_rejected(tmp_path: Path, kms: LocalKms) -> None:
    src = tmp_path / "data.bin"
    src.write_bytes(b"payload" * 1000)
    enc = tmp_path / "data.cspk"
    encrypt_path(src, enc, kms, TEST_KEY, segment_size=SEGMENT)
    header = _header(enc)
    wrapped_at = enc.read_bytes().index(header.wrapped_key)
    flip_byte(enc, wrapped_at + len(header.wrapped_key) - 1)
    with pytest.raises(IntegrityError):
        decrypt_path(enc, tmp_path / "out", kms)
    assert not (tmp_path / "out").exists()


# -- existing outputs and bad inputs ---------------------------------------------------------------


def test_existing_output_is_not_overwritten(tmp_path: Path, kms: LocalKms) -> None:
    src = tmp_path / "data.bin"
    src.write_bytes(b"new data" * 100)
    enc = tmp_path / "data.cspk"
    enc.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError):
        encrypt_path(src, enc, kms, TEST_KEY, segment_size=SEGMENT)
    assert enc.read_bytes() == b"keep me"
    # Not a container: not ours to replace, even with overwrite.
    with pytest.raises(OutputExistsError, match="not a cipherspark container"):
        encrypt_path(src, enc, kms, TEST_KEY, segment_size=SEGMENT, overwrite=True)
    assert enc.read_bytes() == b"keep me"

    enc.unlink()
    encrypt_path(src, enc, kms, TEST_KEY, segment_size=SEGMENT)
    encrypt_path(src, enc, kms, TEST_KEY, segment_size=SEGMENT, overwrite=True)
    assert is_container(enc)

    out = tmp_path / "out"
    out.write_bytes(b"keep me too")
    with pytest.raises(OutputExistsError):
        decrypt_path(enc, out, kms)
    assert out.read_bytes() == b"keep me too"
    decrypt_path(enc, out, kms, overwrite=True)
    assert out.read_bytes() == b"new data" * 100


def test_existing_output_folder_is_not_overwritten(tmp_path: Path, kms: LocalKms) -> None:
    make_csv_parts(tmp_path / "plain")
    enc = tmp_path / "enc"
    enc.mkdir()
    (enc / "keep").write_bytes(b"x")
    with pytest.raises(OutputExistsError):
        encrypt_path(tmp_path / "plain", enc, kms, TEST_KEY, segment_size=SEGMENT)
    assert listing(enc) == ["keep"]


def test_missing_input(tmp_path: Path, kms: LocalKms) -> None:
    with pytest.raises(InputError):
        encrypt_path(tmp_path / "nope", tmp_path / "out", kms, TEST_KEY)
    with pytest.raises(InputError):
        decrypt_path(tmp_path / "nope", tmp_path / "out", kms)
    assert not (tmp_path / "out").exists()


def test_empty_input_folder(tmp_path: Path, kms: LocalKms) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "_SUCCESS").write_bytes(b"")
    with pytest.raises(InputError):
        encrypt_path(tmp_path / "empty", tmp_path / "out", kms, TEST_KEY)
    with pytest.raises(InputError):
        decrypt_path(tmp_path / "empty", tmp_path / "out", kms)
    assert not (tmp_path / "out").exists()


def test_missing_output_folder(tmp_path: Path, kms: LocalKms) -> None:
    src = tmp_path / "data.bin"
    src.write_bytes(b"x")
    with pytest.raises(InputError):
        encrypt_path(src, tmp_path / "no" / "such" / "out", kms, TEST_KEY)


def test_plaintext_input_is_not_encrypted(tmp_path: Path, kms: LocalKms) -> None:
    src = tmp_path / "plain.csv"
    src.write_bytes(b"id,name\n1,alice\n")
    before = listing(tmp_path)
    with pytest.raises(NotEncryptedError, match=r"plain\.csv"):
        decrypt_path(src, tmp_path / "out.csv", kms)
    assert listing(tmp_path) == before

    empty = tmp_path / "empty.cspk"
    empty.write_bytes(b"")
    with pytest.raises(NotEncryptedError):
        decrypt_path(empty, tmp_path / "out.csv", kms)
    assert not (tmp_path / "out.csv").exists()


# -- confidentiality -------------------------------------------------------------------------------


def test_ciphertext_contains_no_plaintext_words(tmp_path: Path, kms: LocalKms) -> None:
    rng = random.Random(42)
    words = ["".join(rng.choices(string.ascii_letters, k=24)) for _ in range(200)]
    lines = [",".join(rng.sample(words, 5)) for _ in range(2000)]
    plaintext = ("id,a,b,c,d,e\n" + "\n".join(lines) + "\n").encode()
    src = tmp_path / "words.csv"
    src.write_bytes(plaintext)
    enc = tmp_path / "words.cspk"
    encrypt_path(src, enc, kms, TEST_KEY, segment_size=SEGMENT)
    ciphertext = enc.read_bytes()
    assert len(ciphertext) > len(plaintext)
    for word in words:
        assert word.encode() in plaintext
        assert word.encode() not in ciphertext
        assert word.lower().encode() not in ciphertext.lower()
    assert b"id,a,b,c,d,e" not in ciphertext
    decrypt_path(enc, tmp_path / "back.csv", kms)
    assert (tmp_path / "back.csv").read_bytes() == plaintext
    assert os.path.getsize(tmp_path / "back.csv") == len(plaintext)


def test_empty_first_csv_part_does_not_lose_the_header(tmp_path: Path, kms: LocalKms) -> None:
    """A 0-byte CSV part carries no header line; the header must come from the next part."""
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "part-0.csv").write_bytes(b"")
    (plain / "part-1.csv").write_bytes(b"id,name\n1,a\n")
    (plain / "part-2.csv").write_bytes(b"")
    (plain / "part-3.csv").write_bytes(b"id,name\n2,b\n")
    encrypt_path(plain, tmp_path / "enc", kms, TEST_KEY, segment_size=SEGMENT)
    decrypt_path(tmp_path / "enc", tmp_path / "out.csv", kms)
    assert (tmp_path / "out.csv").read_bytes() == b"id,name\n1,a\n2,b\n"


def test_folder_without_manifest_is_refused(tmp_path: Path, kms: LocalKms) -> None:
    make_csv_parts(tmp_path / "plain")
    enc = tmp_path / "enc"
    encrypt_path(tmp_path / "plain", enc, kms, TEST_KEY, segment_size=SEGMENT)
    (enc / "_manifest.cspk").unlink()
    with pytest.raises(IntegrityError, match="no dataset manifest"):
        decrypt_path(enc, tmp_path / "out.csv", kms)
    assert not (tmp_path / "out.csv").exists()


def test_encrypted_folder_manifest_counts_records(tmp_path: Path, kms: LocalKms) -> None:
    from cipherspark.crypto.manifest import read_manifest

    _, parts = make_csv_parts(tmp_path / "plain")
    enc = tmp_path / "enc"
    encrypt_path(tmp_path / "plain", enc, kms, TEST_KEY, segment_size=SEGMENT)
    manifest = read_manifest(enc, lambda h: kms.unwrap_data_key(h.key_id, h.wrapped_key))
    assert manifest is not None
    expected = [len([ln for ln in p.splitlines() if ln.strip()]) - (1 if p else 0) for p in parts]
    assert [e.rows for e in manifest.parts] == [max(0, n) for n in expected]


# -- storage that lies: verify where you decrypt, dataset identity ---------------------------------


def _two_runs(tmp_path: Path, kms: LocalKms, key: str = TEST_KEY) -> tuple[Path, Path]:
    """A victim dataset and an attacker's: same owner, same KMS key, same part names and sizes,
    other rows (so the attacker's parts are containers the reader can decrypt)."""
    folders = []
    for run in ("victim", "attacker"):
        plain = tmp_path / f"plain-{run}"
        plain.mkdir()
        for number in range(3):
            rows = "".join(f"{run[0]}{number}-{i:04d},{i % 90:02d}\n" for i in range(300))
            (plain / f"part-{number}.csv").write_text("name,age\n" + rows)
        encrypt_path(plain, tmp_path / run, kms, key, segment_size=SEGMENT)
        folders.append(tmp_path / run)
    return folders[0], folders[1]


def _replace(path: Path, data: bytes) -> None:
    """Put ``data`` at ``path`` by rename, as an attacker with write access to storage does."""
    staged = path.with_name(f".{path.name}.swap")
    staged.write_bytes(data)
    os.replace(staged, path)


def test_part_swapped_between_check_and_decryption_is_refused(
    tmp_path: Path, kms: LocalKms, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race ``decrypt`` lost 1 time in 200: the listing is checked, then a part is replaced
    before it is decrypted. Deterministic here: the swap runs right after the check returns."""
    from cipherspark import files
    from cipherspark.crypto.manifest import open_dataset as real

    victim, attacker = _two_runs(tmp_path, kms)
    swapped = victim / "part-1.csv.cspk"

    def check_then_swap(*args: Any, **kwargs: Any) -> Any:
        dataset = real(*args, **kwargs)
        _replace(swapped, (attacker / swapped.name).read_bytes())
        return dataset

    monkeypatch.setattr(files, "open_dataset", check_then_swap)
    before = listing(tmp_path)
    with pytest.raises(IntegrityError) as raised:
        decrypt_path(victim, tmp_path / "out.csv", kms)
    assert str(swapped) in str(raised.value)
    assert "a1-" not in str(raised.value)  # names the file, never a value
    assert listing(tmp_path) == before  # nothing published, nothing left behind


def test_part_swapped_while_it_is_decrypted_changes_nothing(
    tmp_path: Path, kms: LocalKms, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a part is opened and checked, every segment comes from that descriptor: replacing
    the path mid-decryption neither changes the output nor lets a byte of the attacker's in."""
    from cipherspark import files

    victim, attacker = _two_runs(tmp_path, kms)
    decrypt_path(victim, tmp_path / "expected.csv", kms)

    class SwapAfterOpen(ContainerFile):
        def __init__(self, path: Any, *args: Any, **kwargs: Any) -> None:
            super().__init__(path, *args, **kwargs)
            _replace(Path(path), (attacker / Path(path).name).read_bytes())

    monkeypatch.setattr(files, "ContainerFile", SwapAfterOpen)
    decrypt_path(victim, tmp_path / "out.csv", kms)
    assert (tmp_path / "out.csv").read_bytes() == (tmp_path / "expected.csv").read_bytes()
    assert b"a1-" not in (tmp_path / "out.csv").read_bytes()
    for name in ("part-0.csv.cspk", "part-1.csv.cspk", "part-2.csv.cspk"):
        assert (victim / name).read_bytes() == (attacker / name).read_bytes()  # all swapped


def test_single_file_is_checked_and_decrypted_from_one_descriptor(
    tmp_path: Path, kms: LocalKms, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file without a manifest: its header (and so the key pinned with key_id) is read from
    the descriptor that is decrypted; a replacement after the open is never read."""
    from cipherspark import files

    kms.create_key("other-key")
    for name, key in (("mine", TEST_KEY), ("theirs", "other-key")):
        (tmp_path / f"{name}.csv").write_bytes(csv_part("id,name,age", 0, 500))
        encrypt_path(
            tmp_path / f"{name}.csv", tmp_path / f"{name}.cspk", kms, key, segment_size=SEGMENT
        )
    theirs = (tmp_path / "theirs.cspk").read_bytes()

    class SwapAfterOpen(ContainerFile):
        def __init__(self, path: Any, *args: Any, **kwargs: Any) -> None:
            super().__init__(path, *args, **kwargs)
            _replace(Path(path), theirs)

    monkeypatch.setattr(files, "ContainerFile", SwapAfterOpen)
    decrypt_path(tmp_path / "mine.cspk", tmp_path / "out.csv", kms, key_id=TEST_KEY)
    assert (tmp_path / "out.csv").read_bytes() == (tmp_path / "mine.csv").read_bytes()
    monkeypatch.undo()
    # Now the path holds their file: the pin refuses it, from the header it would decrypt.
    with pytest.raises(IntegrityError, match="under key 'other-key', not 'test-key'"):
        decrypt_path(tmp_path / "mine.cspk", tmp_path / "out2.csv", kms, key_id=TEST_KEY)
    assert not (tmp_path / "out2.csv").exists()


def test_fifo_or_folder_where_a_file_should_be_is_an_input_error(
    tmp_path: Path, kms: LocalKms
) -> None:
    """Opened without blocking and refused unless a regular file (a FIFO would hang a reader)."""
    os.mkfifo(tmp_path / "fifo.cspk")
    with pytest.raises(InputError, match="not a regular file"):
        decrypt_path(tmp_path / "fifo.cspk", tmp_path / "out", kms)
    victim, _ = _two_runs(tmp_path, kms)
    (victim / "_manifest.cspk").unlink()
    (victim / "_manifest.cspk").mkdir()
    with pytest.raises(InputError, match="not a regular file"):
        decrypt_path(victim, tmp_path / "out", kms)
    assert not (tmp_path / "out").exists()


def test_decrypt_pins_key_and_dataset(tmp_path: Path, kms: LocalKms) -> None:
    from cipherspark.errors import UsageError

    victim, attacker = _two_runs(tmp_path, kms)
    kms.create_key("other-key")
    (tmp_path / "other").mkdir()
    _, under_other = _two_runs(tmp_path / "other", kms, key="other-key")
    identity = decrypt_path(victim, tmp_path / "v.csv", kms).dataset
    assert identity is not None and identity.key_id == TEST_KEY and identity.generation == 1
    result = decrypt_path(
        victim, tmp_path / "v2.csv", kms, key_id=TEST_KEY, dataset_id=identity.dataset_id
    )
    assert result.dataset == identity

    # The same folder path, now holding another complete dataset under the same key.
    shutil.rmtree(victim)
    shutil.copytree(attacker, victim)
    # Valid on its own (the manifest and parts are intact), so only the registry (not the
    # dataset's bytes) says it is not the dataset written here; the pins below refuse it even
    # with that check off.
    decrypt_path(victim, tmp_path / "unpinned.csv", kms, unsafe_skip_registry=True)
    with pytest.raises(IntegrityError, match="replaced by another dataset"):
        decrypt_path(victim, tmp_path / "out.csv", kms)
    with pytest.raises(IntegrityError) as raised:
        decrypt_path(
            victim,
            tmp_path / "out.csv",
            kms,
            dataset_id=identity.dataset_id,
            unsafe_skip_registry=True,
        )
    assert f"not {identity.dataset_id}" in str(raised.value)
    # ... or a dataset under another key the reader's KMS also unwraps.
    shutil.rmtree(victim)
    shutil.copytree(under_other, victim)
    with pytest.raises(IntegrityError) as raised:
        decrypt_path(victim, tmp_path / "out.csv", kms, key_id=TEST_KEY, unsafe_skip_registry=True)
    assert str(raised.value) == (
        f"{victim}: the dataset is under key 'other-key', not "
        "'test-key' (it may have been replaced by another dataset)"
    )
    assert not (tmp_path / "out.csv").exists()
    with pytest.raises(UsageError, match="single file"):
        decrypt_path(
            victim / "part-0.csv.cspk", tmp_path / "out.csv", kms, dataset_id=identity.dataset_id
        )


def test_overwriting_a_dataset_keeps_its_id_and_counts_generations(
    tmp_path: Path, kms: LocalKms
) -> None:
    make_csv_parts(tmp_path / "plain")
    first = encrypt_path(tmp_path / "plain", tmp_path / "enc", kms, TEST_KEY).dataset
    again = encrypt_path(
        tmp_path / "plain", tmp_path / "enc", kms, TEST_KEY, overwrite=True
    ).dataset
    other = encrypt_path(tmp_path / "plain", tmp_path / "other", kms, TEST_KEY).dataset
    assert first is not None and again is not None and other is not None
    assert (again.dataset_id, again.generation) == (first.dataset_id, 2)
    assert other.dataset_id != first.dataset_id and other.generation == 1
    assert decrypt_path(tmp_path / "enc", tmp_path / "out.csv", kms).dataset == again
    # A single file is not a dataset.
    (tmp_path / "one.csv").write_bytes(b"a\n1\n")
    assert encrypt_path(tmp_path / "one.csv", tmp_path / "one.cspk", kms, TEST_KEY).dataset is None


# -- the same, through the command line ----------------------------------------------------------


@pytest.fixture
def cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    """``cipherspark ...`` in an empty folder with the test credentials; returns (code, out,
    err) and checks that nothing printed shows a traceback."""
    from cipherspark.cli import main
    from cipherspark.kms import local
    from tests.conftest import TEST_CREDENTIALS

    monkeypatch.chdir(tmp_path)
    for name in ("CIPHERSPARK_KMS", "CIPHERSPARK_KEY", "CIPHERSPARK_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CIPHERSPARK_APP_ID", TEST_CREDENTIALS.app_id)
    monkeypatch.setenv("CIPHERSPARK_API_KEY", TEST_CREDENTIALS.api_key)
    monkeypatch.setattr(local, "_SCRYPT", {"n": 1 << 10, "r": 8, "p": 1})

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        return code, out, err

    return run


def _cli_runs(tmp_path: Path, run: Callable[..., tuple[int, str, str]]) -> dict[str, str]:
    """Three encrypted folders made with the CLI: the victim, another dataset under the same
    key, and one under another key; returns the victim's dataset id as ``encrypt`` printed it."""
    assert run("key", "create", TEST_KEY)[0] == 0
    assert run("key", "create", "other-key")[0] == 0
    ids = {}
    for name, key in (("victim", TEST_KEY), ("attacker", TEST_KEY), ("foreign", "other-key")):
        plain = tmp_path / f"plain-{name}"
        plain.mkdir()
        (plain / "part-0.csv").write_text(f"name,age\n{name}-0,30\n")
        (plain / "part-1.csv").write_text(f"name,age\n{name}-1,41\n")
        code, out, _ = run("encrypt", str(plain), f"{name}.enc", "--key", key)
        assert code == 0
        line = out.splitlines()[-1]
        assert line.startswith("dataset ") and f"under key {key}" in line
        ids[name] = line.split()[1]
    return ids


def test_cli_decrypt_refuses_a_dataset_under_another_key(
    tmp_path: Path, cli: Callable[..., tuple[int, str, str]]
) -> None:
    _cli_runs(tmp_path, cli)
    shutil.rmtree(tmp_path / "victim.enc")
    shutil.copytree(tmp_path / "foreign.enc", tmp_path / "victim.enc")
    # Without --key any key is accepted (the registry check, off here, would refuse the copy).
    assert cli("decrypt", "victim.enc", "readable.csv", "--unsafe-skip-registry")[0] == 0
    code, _, err = cli("decrypt", "victim.enc", "out.csv", "--key", TEST_KEY)
    assert code == 1
    assert err.splitlines() == [
        "cipherspark: error: victim.enc: the dataset is under key 'other-key', not 'test-key' "
        "(it may have been replaced by another dataset)"
    ]
    assert not (tmp_path / "out.csv").exists()


def test_cli_decrypt_key_defaults_from_the_environment(
    tmp_path: Path, cli: Callable[..., tuple[int, str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _cli_runs(tmp_path, cli)
    monkeypatch.setenv("CIPHERSPARK_KEY", TEST_KEY)
    assert cli("decrypt", "victim.enc", "v.csv")[0] == 0
    code, _, err = cli("decrypt", "foreign.enc", "f.csv")
    assert code == 1 and "not 'test-key'" in err
    assert cli("decrypt", "foreign.enc", "f.csv", "--key", "other-key")[0] == 0


def test_cli_decrypt_refuses_another_dataset_under_the_same_key(
    tmp_path: Path, cli: Callable[..., tuple[int, str, str]]
) -> None:
    ids = _cli_runs(tmp_path, cli)
    code, out, _ = cli(
        "decrypt", "victim.enc", "v.csv", "--dataset-id", ids["victim"], "--key", TEST_KEY
    )
    assert code == 0
    assert f"dataset {ids['victim']} (generation 1) under key {TEST_KEY}" in out
    # The whole folder replaced by another complete dataset of the same owner and key.
    shutil.rmtree(tmp_path / "victim.enc")
    shutil.copytree(tmp_path / "attacker.enc", tmp_path / "victim.enc")
    code, _, err = cli(
        "decrypt", "victim.enc", "out.csv", "--dataset-id", ids["victim"], "--key", TEST_KEY
    )
    assert code == 1
    assert err.splitlines() == [
        f"cipherspark: error: victim.enc holds dataset {ids['attacker']}, not {ids['victim']} "
        "(it may have been replaced by another dataset)"
    ]
    assert not (tmp_path / "out.csv").exists()
    code, _, err = cli("decrypt", "victim.enc", "out.csv", "--dataset-id", "nope")
    assert code == 2 and "not a dataset id" in err


# -- slips: the output is the input, or inside it; the input is encrypted already ---------------


def _folder_with_a_part(root: Path) -> Path:
    folder = root / "in"
    folder.mkdir()
    (folder / "part-0.csv").write_text("a,b\n1,2\n")
    return folder


@pytest.mark.parametrize(
    ("src", "dst", "words"),
    [
        ("in", "in", "is the input"),
        ("in", "in/out", "inside the input folder"),
        ("in/part-0.csv", "in", "holds the input"),
        ("in/part-0.csv", "in/../in/part-0.csv", "is the input"),
    ],
)
def test_an_output_that_is_or_holds_the_input_is_refused(
    tmp_path: Path, kms: LocalKms, src: str, dst: str, words: str
) -> None:
    _folder_with_a_part(tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(UsageError, match=words):
        encrypt_path(tmp_path / src, tmp_path / dst, kms, TEST_KEY, overwrite=True)
    with pytest.raises(UsageError, match=words):
        decrypt_path(tmp_path / src, tmp_path / dst, kms, overwrite=True)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_an_encrypted_input_is_encrypted_again_only_when_asked(
    tmp_path: Path, kms: LocalKms
) -> None:
    folder = _folder_with_a_part(tmp_path)
    encrypt_path(folder, tmp_path / "once", kms, TEST_KEY)
    encrypt_path(folder / "part-0.csv", tmp_path / "once.cspk", kms, TEST_KEY)
    for src in (tmp_path / "once", tmp_path / "once.cspk"):
        with pytest.raises(UsageError, match="already encrypted"):
            encrypt_path(src, tmp_path / "twice", kms, TEST_KEY)
        assert not (tmp_path / "twice").exists()
    encrypt_path(tmp_path / "once.cspk", tmp_path / "twice.cspk", kms, TEST_KEY,
                 allow_encrypted_input=True)
    decrypt_path(tmp_path / "twice.cspk", tmp_path / "back.cspk", kms)
    assert (tmp_path / "back.cspk").read_bytes() == (tmp_path / "once.cspk").read_bytes()
