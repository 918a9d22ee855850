"""Dataset manifests without Spark: the manifest format, its authentication, and the checks
``decrypt_path`` makes on hand-built dataset folders (missing, extra, swapped, foreign and
truncated parts)."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from cipherspark.crypto import (
    BODY_HEADER_SIZE,
    CONTENT_TYPE_CSV_HEADER,
    ContainerHeader,
    EncryptingWriter,
    read_header,
)
from cipherspark.crypto.manifest import (
    MANIFEST_CONTENT_TYPE,
    MANIFEST_NAME,
    DatasetIdentity,
    Manifest,
    PartEntry,
    describe_part,
    list_parts,
    open_dataset,
    read_manifest,
    write_manifest,
)
from cipherspark.datasets import register_dataset
from cipherspark.errors import (
    CipherSparkError,
    FormatError,
    IntegrityError,
    NotEncryptedError,
)
from cipherspark.files import decrypt_path, encrypt_path
from cipherspark.kms import LocalKms
from tests.conftest import TEST_KEY

SEGMENT = 256  # small segments: every part spans several
CSV_HEADER = b"id,name,score\n"


def csv_part(first_id: int, rows: int) -> bytes:
    """A CSV part with a header line; rows have a fixed width, so equal counts, equal sizes."""
    return CSV_HEADER + b"".join(
        f"{i:05d},name-{i:05d},{i % 97:02d}\n".encode() for i in range(first_id, first_id + rows))


@dataclass(frozen=True)
class Built:
    """A hand-built dataset folder, as the Spark writer would leave it."""

    folder: Path
    header: ContainerHeader
    data_key: bytes
    texts: tuple[bytes, ...]

    @property
    def parts(self) -> list[Path]:
        return list_parts(self.folder)

    @property
    def plaintext(self) -> bytes:
        """What decrypting the folder gives: every part's rows under one header line."""
        return CSV_HEADER + b"".join(t[len(CSV_HEADER):] for t in self.texts)


PART_ROWS = (40, 0, 25, 60)


def build_dataset(folder: Path, kms: LocalKms, rows: tuple[int, ...] = PART_ROWS, *,
                  manifest: bool = True) -> Built:
    """Parts encrypted under one data key (as the Spark writer does), plus their manifest."""
    folder.mkdir()
    data_key = kms.generate_data_key(TEST_KEY)
    header = ContainerHeader(key_id=TEST_KEY, wrapped_key=data_key.wrapped,
                             segment_size=SEGMENT, content_type=CONTENT_TYPE_CSV_HEADER)
    texts = []
    entries = []
    first = 0
    for number, count in enumerate(rows):
        text = csv_part(first, count)
        first += count
        path = folder / f"part-{number:05d}.csv.cspk"
        with open(path, "xb") as out:
            writer = EncryptingWriter(out, header, data_key.plaintext)
            writer.write(text)
            writer.close()
        texts.append(text)
        entries.append(describe_part(path, count))
    if manifest:
        write_manifest(folder, Manifest(tuple(entries), DatasetIdentity.new(TEST_KEY)), header,
                       data_key.plaintext)
        # Registered where it was built, as cipherspark's writers do: the tampering below is
        # then caught by the manifest and part checks these tests are about (the registry's own
        # refusals are tests/test_cli_dataset.py's).
        register_dataset(folder, kms)
    return Built(folder, header, data_key.plaintext, tuple(texts))


def key_of(built: Built) -> Callable[[ContainerHeader], bytes]:
    def data_key_for(header: ContainerHeader) -> bytes:
        assert header.wrapped_key == built.header.wrapped_key
        return built.data_key

    return data_key_for


def flip_bit(path: Path, offset: int, bit: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))


def header_size(path: Path) -> int:
    with open(path, "rb") as f:
        return len(read_header(f)[1])


# -- the manifest document -------------------------------------------------------------------------

IDENTITY = DatasetIdentity("0123456789abcdef" * 2, "k", 3)
SAMPLE = Manifest((
    PartEntry("part-00000-a.csv.cspk", 1234, 10, "ab" * 32),
    PartEntry("part-00001-b.csv.cspk", 99, 0, "cd" * 32),
    PartEntry("part-00002-c.csv.cspk", 5000, 32, "ef" * 32),
), IDENTITY)
EMPTY = Manifest((), IDENTITY)


def test_manifest_json_round_trip() -> None:
    data = SAMPLE.to_json()
    assert Manifest.from_json(data) == SAMPLE
    assert SAMPLE.rows == 42
    assert EMPTY.rows == 0
    assert Manifest.from_json(EMPTY.to_json()) == EMPTY
    doc = json.loads(data)
    assert doc["version"] == 2
    assert doc["dataset"] == {"id": IDENTITY.dataset_id, "key_id": "k", "generation": 3}
    assert [p["name"] for p in doc["parts"]] == [p.name for p in SAMPLE.parts]
    # One encoding only: the same document with keys in another order, or indented, is refused.
    shuffled = json.dumps({"version": 2, "dataset": doc["dataset"],
                           "parts": [dict(reversed(list(p.items()))) for p in doc["parts"]]}
                          ).encode()
    assert json.loads(shuffled) == doc and shuffled != data
    for other in (shuffled, json.dumps(doc, indent=2, sort_keys=True).encode(), data + b"\n"):
        with pytest.raises(FormatError, match="canonical"):
            Manifest.from_json(other)
    # Entries are written in name order whatever order they were given in.
    reversed_parts = Manifest(tuple(reversed(SAMPLE.parts)), IDENTITY)
    assert reversed_parts.to_json() == data


def test_version_1_documents_are_still_read() -> None:
    """Manifests written before dataset identities: version 1, no "dataset" member."""
    v1 = json.dumps({"parts": [vars(p) for p in SAMPLE.parts], "version": 1}, sort_keys=True,
                    separators=(",", ":")).encode()
    manifest = Manifest.from_json(v1, version=1)
    assert manifest == Manifest(SAMPLE.parts, None)
    assert manifest.version == 1 and manifest.to_json() == v1
    with pytest.raises(FormatError):
        Manifest.from_json(v1)  # a version 1 document is not a version 2 one
    with pytest.raises(FormatError):
        Manifest.from_json(SAMPLE.to_json(), version=1)


# Every case but the encoding ones is canonical JSON: each is refused by its own rule.
def _canonical(doc: object) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _doc(**changes: object) -> bytes:
    doc: dict[str, object] = json.loads(SAMPLE.to_json())
    doc.update(changes)
    return _canonical(doc)


def _part_without(key: str) -> bytes:
    doc = json.loads(SAMPLE.to_json())
    del doc["parts"][1][key]
    return _canonical(doc)


def _entry(**changes: object) -> bytes:
    doc = json.loads(SAMPLE.to_json())
    doc["parts"][1].update(changes)
    return _canonical(doc)


def _dataset(**changes: object) -> bytes:
    doc = json.loads(SAMPLE.to_json())
    doc["dataset"].update(changes)
    return _canonical(doc)


CANONICAL = SAMPLE.to_json()
MALFORMED = {
    "not_json": b"{not json",
    "empty": b"",
    "not_utf8": b"\xff\xfe{}",
    "utf16": CANONICAL.decode().encode("utf-16"),
    "a_list": b"[1, 2]",
    "a_string": b'"manifest"',
    "no_version": json.dumps({"parts": []}).encode(),
    "version_1": _doc(version=1),
    "version_3": _doc(version=3),
    "version_0": _doc(version=0),
    "version_text": _doc(version="2"),
    "version_float": CANONICAL.replace(b'"version":2', b'"version":2.0'),
    "version_true": CANONICAL.replace(b'"version":2', b'"version":true'),
    "no_parts": json.dumps({"version": 2}).encode(),
    "parts_a_number": _doc(parts=5),
    "parts_of_numbers": _doc(parts=[1, 2]),
    "parts_of_strings": _doc(parts=["part-00000"]),
    "part_without_name": _part_without("name"),
    "part_without_size": _part_without("size"),
    "part_without_rows": _part_without("rows"),
    "part_without_digest": _part_without("header_sha256"),
    "size_not_a_number": _doc(parts=[{"name": "p", "size": "big", "rows": 1,
                                      "header_sha256": "00"}]),
    "rows_null": _doc(parts=[{"name": "p", "size": 1, "rows": None, "header_sha256": "00"}]),
    # Strictness: one encoding, exact members and types.
    "trailing_garbage": CANONICAL + b"x",
    "trailing_newline": CANONICAL + b"\n",
    "leading_space": b" " + CANONICAL,
    "duplicate_top_key": CANONICAL[:-1] + b',"version":2}',
    "duplicate_entry_key": CANONICAL.replace(b'"size":99', b'"size":99,"size":98'),
    "extra_member": _canonical({**json.loads(CANONICAL), "extra": 1}),
    "extra_entry_member": _entry(extra=1),
    "size_a_string": _entry(size="99"),
    "size_a_float": CANONICAL.replace(b'"size":99', b'"size":99.0'),
    "size_negative": _entry(size=-1),
    "rows_true": _entry(rows=True),
    "rows_negative": _entry(rows=-1),
    "name_a_number": _entry(name=5),
    "name_empty": _entry(name=""),
    "name_hidden": _entry(name=".part-00001-b.csv.cspk"),
    "name_underscore": _entry(name="_manifest.cspk"),
    "name_with_slash": _entry(name="../part-00001-b.csv.cspk"),
    "digest_uppercase": _entry(header_sha256="CD" * 32),
    "digest_short": _entry(header_sha256="cd" * 31),
    "duplicate_name": _entry(name="part-00000-a.csv.cspk"),
    "not_in_name_order": _entry(name="part-00009-z.csv.cspk"),
    "escaped_letter": CANONICAL.replace(b"part-00001-b", b"\\u0070art-00001-b"),
    "nan": CANONICAL.replace(b'"rows":0', b'"rows":NaN'),
    "no_dataset": _canonical({k: v for k, v in json.loads(CANONICAL).items() if k != "dataset"}),
    "dataset_id_short": _dataset(id="ab" * 15),
    "dataset_id_uppercase": _dataset(id="AB" * 16),
    "dataset_key_empty": _dataset(key_id=""),
    "dataset_key_a_number": _dataset(key_id=7),
    "generation_0": _dataset(generation=0),
    "generation_a_string": _dataset(generation="3"),
    "dataset_extra_member": _dataset(created="today"),
}


def test_the_strict_cases_differ_from_the_canonical_document_only_as_named() -> None:
    assert Manifest.from_json(CANONICAL) == SAMPLE
    # The same document, another encoding ("\u0070" is "p"): refused all the same.
    assert MALFORMED["escaped_letter"] != CANONICAL
    assert json.loads(MALFORMED["escaped_letter"]) == json.loads(CANONICAL)
    assert json.loads(MALFORMED["duplicate_top_key"]) == json.loads(CANONICAL)


ENCODING_CASES = {"not_json", "empty", "not_utf8", "utf16", "a_list", "a_string",
                  "trailing_garbage", "trailing_newline", "leading_space", "duplicate_top_key",
                  "duplicate_entry_key", "escaped_letter", "nan", "version_float", "size_a_float"}


# The reason given, where one rule alone refuses the case (checks are made in this order:
# JSON with unique members, the members, the names, the canonical form).
REASONS = {
    "duplicate_top_key": "member 'version' appears twice",
    "duplicate_entry_key": "member 'size' appears twice",
    "duplicate_name": "lists a part name twice",
    "not_in_name_order": "not in name order",
    "trailing_garbage": "not JSON",
    "trailing_newline": "canonical",
    "escaped_letter": "canonical",
    "size_a_float": "not an integer",
    "rows_true": "rows is not an integer",
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_manifest_json_is_a_format_error(case: str) -> None:
    with pytest.raises(FormatError, match="malformed") as raised:
        Manifest.from_json(MALFORMED[case])
    if case not in ENCODING_CASES:
        # Refused by the rule the case breaks, not merely for not being canonical.
        assert "canonical" not in str(raised.value), case
    if case in REASONS:
        assert REASONS[case] in str(raised.value)


def test_version_1_manifest_listing_a_name_twice_is_refused() -> None:
    """Version 1 readers kept the last entry and counted its rows twice; now it is refused."""
    entries = [vars(p) for p in SAMPLE.parts]
    doc = {"parts": [*entries, entries[1]], "version": 1}
    with pytest.raises(FormatError, match="lists a part name twice"):
        Manifest.from_json(_canonical(doc), version=1)


def test_describe_part(tmp_path: Path, kms: LocalKms) -> None:
    built = build_dataset(tmp_path / "ds", kms, rows=(30, 30))
    first, second = built.parts
    entry = describe_part(first, 30)
    assert entry.name == first.name
    assert entry.size == first.stat().st_size
    assert entry.rows == 30
    data = first.read_bytes()
    prefix = data[: header_size(first) + BODY_HEADER_SIZE]
    assert entry.header_sha256 == hashlib.sha256(prefix).hexdigest()
    # Same container header, same plaintext length: only the random body header tells the
    # two parts apart, and the digest does.
    other = describe_part(second, 30)
    assert first.read_bytes()[: header_size(first)] == second.read_bytes()[: header_size(first)]
    assert other.size == entry.size
    assert other.header_sha256 != entry.header_sha256


def test_write_then_read_manifest(tmp_path: Path, kms: LocalKms) -> None:
    built = build_dataset(tmp_path / "ds", kms)
    manifest = read_manifest(built.folder, key_of(built))
    assert manifest is not None
    assert manifest.rows == sum(PART_ROWS)
    assert [p.name for p in manifest.parts] == [p.name for p in built.parts]
    assert [p.rows for p in manifest.parts] == list(PART_ROWS)
    assert manifest.parts == tuple(describe_part(p, n) for p, n in zip(built.parts, PART_ROWS,
                                                                      strict=True))
    dataset = open_dataset(built.folder, key_of(built))  # the committed folder passes
    assert dataset.manifest == manifest
    assert [p.path for p in dataset.parts] == [str(p.absolute()) for p in built.parts]
    assert dataset.key_id == TEST_KEY and dataset.identity == manifest.identity
    # The manifest is a container of its own content type, under the dataset's key id and
    # wrapped data key, and it is not plaintext.
    path = built.folder / MANIFEST_NAME
    with open(path, "rb") as f:
        header, _ = read_header(f)
    assert header.content_type == MANIFEST_CONTENT_TYPE
    assert (header.key_id, header.wrapped_key) == (TEST_KEY, built.header.wrapped_key)
    assert b"part-00000" not in path.read_bytes()
    # The manifest is not a data file.
    assert MANIFEST_NAME not in [p.name for p in built.parts]


def test_folder_without_manifest_reads_none(tmp_path: Path, kms: LocalKms) -> None:
    built = build_dataset(tmp_path / "ds", kms, manifest=False)

    def no_key(header: ContainerHeader) -> bytes:
        raise AssertionError("no key should be needed")

    assert read_manifest(built.folder, no_key) is None


def test_write_manifest_does_not_replace_an_existing_one(tmp_path: Path, kms: LocalKms) -> None:
    built = build_dataset(tmp_path / "ds", kms)
    before = (built.folder / MANIFEST_NAME).read_bytes()
    with pytest.raises(FileExistsError):
        write_manifest(built.folder, Manifest((), DatasetIdentity.new(TEST_KEY)), built.header,
                       built.data_key)
    assert (built.folder / MANIFEST_NAME).read_bytes() == before


def test_manifest_under_another_data_key_is_an_integrity_error(tmp_path: Path,
                                                               kms: LocalKms) -> None:
    built = build_dataset(tmp_path / "ds", kms)
    manifest = read_manifest(built.folder, key_of(built))
    assert manifest is not None
    (built.folder / MANIFEST_NAME).unlink()
    # The dataset's header (key id, wrapped key) but a body under some other data key.
    other = kms.generate_data_key(TEST_KEY).plaintext
    write_manifest(built.folder, manifest, built.header, other)
    with pytest.raises(IntegrityError):
        read_manifest(built.folder, key_of(built))
    with pytest.raises(IntegrityError):
        decrypt_path(built.folder, tmp_path / "out.csv", kms)
    assert not (tmp_path / "out.csv").exists()


def test_every_bit_of_the_manifest_body_is_authenticated(tmp_path: Path, kms: LocalKms) -> None:
    built = build_dataset(tmp_path / "ds", kms)
    path = built.folder / MANIFEST_NAME
    original = path.read_bytes()
    body_start = header_size(path)
    for offset in range(body_start, len(original)):
        path.write_bytes(original)
        flip_bit(path, offset, bit=offset % 8)
        with pytest.raises(IntegrityError):
            read_manifest(built.folder, key_of(built))
    # Truncation and extension too.
    for data in (original[:-1], original[: body_start + BODY_HEADER_SIZE], original + b"\0"):
        path.write_bytes(data)
        with pytest.raises(IntegrityError):
            read_manifest(built.folder, key_of(built))
    path.write_bytes(original)
    assert read_manifest(built.folder, key_of(built)) is not None


def test_every_bit_of_the_manifest_header_is_checked(tmp_path: Path, kms: LocalKms) -> None:
    """A flipped header bit never yields a manifest: the header is the body's associated data
    (or the wrapped key no longer unwraps, or the header no longer parses)."""
    built = build_dataset(tmp_path / "ds", kms)
    path = built.folder / MANIFEST_NAME
    original = path.read_bytes()

    def data_key_for(header: ContainerHeader) -> bytes:
        return kms.unwrap_data_key(header.key_id, header.wrapped_key)

    for offset in range(header_size(path)):
        path.write_bytes(original)
        flip_bit(path, offset, bit=(offset * 3) % 8)
        with pytest.raises(CipherSparkError):
            read_manifest(built.folder, data_key_for)


def test_bit_flip_in_the_manifest_fails_decrypt_path(tmp_path: Path, kms: LocalKms) -> None:
    built = build_dataset(tmp_path / "ds", kms)
    path = built.folder / MANIFEST_NAME
    flip_bit(path, path.stat().st_size - 20)
    with pytest.raises(IntegrityError):
        decrypt_path(built.folder, tmp_path / "out.csv", kms)
    assert not (tmp_path / "out.csv").exists()


def test_csv_container_named_like_a_manifest_is_a_format_error(tmp_path: Path,
                                                               kms: LocalKms) -> None:
    built = build_dataset(tmp_path / "ds", kms)
    path = built.folder / MANIFEST_NAME
    path.unlink()
    # A genuine container under the dataset's own key, but holding CSV.
    with open(path, "xb") as out:
        writer = EncryptingWriter(out, built.header, built.data_key)
        writer.write(Manifest((), DatasetIdentity.new(TEST_KEY)).to_json())
        writer.close()
    with pytest.raises(FormatError, match="not a dataset manifest"):
        read_manifest(built.folder, key_of(built))
    with pytest.raises(FormatError):
        decrypt_path(built.folder, tmp_path / "out.csv", kms)
    assert not (tmp_path / "out.csv").exists()


def test_plaintext_manifest_is_refused(tmp_path: Path, kms: LocalKms) -> None:
    built = build_dataset(tmp_path / "ds", kms)
    manifest = read_manifest(built.folder, key_of(built))
    assert manifest is not None
    (built.folder / MANIFEST_NAME).write_bytes(manifest.to_json())
    with pytest.raises(NotEncryptedError):
        read_manifest(built.folder, key_of(built))
    with pytest.raises(NotEncryptedError):
        decrypt_path(built.folder, tmp_path / "out.csv", kms)
    assert not (tmp_path / "out.csv").exists()


def test_huge_manifest_is_refused_before_reading(tmp_path: Path, kms: LocalKms) -> None:
    built = build_dataset(tmp_path / "ds", kms)
    with open(built.folder / MANIFEST_NAME, "r+b") as f:
        f.truncate((64 << 20) + 1)  # sparse: costs no disk

    def no_key(header: ContainerHeader) -> bytes:
        raise AssertionError("a huge manifest must not be decrypted")

    with pytest.raises(FormatError, match="implausibly large"):
        read_manifest(built.folder, no_key)


# -- open_dataset: the listing ---------------------------------------------------------------------

def test_open_dataset_names_the_difference(tmp_path: Path, kms: LocalKms) -> None:
    built = build_dataset(tmp_path / "ds", kms)
    parts = built.parts
    open_dataset(built.folder, key_of(built))

    hidden = parts[2].with_name("." + parts[2].name)
    parts[2].rename(hidden)
    with pytest.raises(IntegrityError, match=f"{parts[2].name} listed in the manifest is missing"):
        open_dataset(built.folder, key_of(built))
    hidden.rename(parts[2])

    extra = built.folder / "part-00009.csv.cspk"
    shutil.copyfile(parts[0], extra)
    with pytest.raises(IntegrityError, match=f"{extra.name} is not in the manifest"):
        open_dataset(built.folder, key_of(built))
    extra.unlink()

    # Swapped contents: both names present, sizes may even agree; the digests do not.
    a, b = parts[0], parts[3]
    a_data, b_data = a.read_bytes(), b.read_bytes()
    a.write_bytes(b_data)
    b.write_bytes(a_data)
    with pytest.raises(IntegrityError, match="is not the one committed"):
        open_dataset(built.folder, key_of(built))
    a.write_bytes(a_data)
    b.write_bytes(b_data)

    # Resized: one byte more at the end, header untouched.
    with open(parts[1], "ab") as f:
        f.write(b"\0")
    with pytest.raises(IntegrityError, match=f"{parts[1].name} is not the one committed"):
        open_dataset(built.folder, key_of(built))


# -- decrypt_path on dataset folders --------------------------------------------------------------

def test_decrypt_hand_built_dataset(tmp_path: Path, kms: LocalKms) -> None:
    built = build_dataset(tmp_path / "ds", kms)
    result = decrypt_path(built.folder, tmp_path / "out.csv", kms)
    assert result.files == len(PART_ROWS)  # the manifest is not a part
    assert (tmp_path / "out.csv").read_bytes() == built.plaintext
    assert built.plaintext.count(b"\n") == 1 + sum(PART_ROWS)


def test_folder_without_manifest_is_refused(tmp_path: Path, kms: LocalKms) -> None:
    built = build_dataset(tmp_path / "ds", kms, manifest=False)
    assert not (built.folder / MANIFEST_NAME).exists()
    with pytest.raises(IntegrityError, match="no dataset manifest"):
        decrypt_path(built.folder, tmp_path / "out.csv", kms)
    assert not (tmp_path / "out.csv").exists()
    # A folder encrypted with encrypt_path carries a manifest, and decrypts.
    plain = tmp_path / "plain"
    plain.mkdir()
    for number, text in enumerate(built.texts):
        (plain / f"part-{number}.csv").write_bytes(text)
    encrypt_path(plain, tmp_path / "enc", kms, TEST_KEY, segment_size=SEGMENT)
    assert (tmp_path / "enc" / MANIFEST_NAME).exists()
    decrypt_path(tmp_path / "enc", tmp_path / "enc.csv", kms)
    assert (tmp_path / "enc.csv").read_bytes() == built.plaintext


def test_manifest_over_parts_under_other_data_keys_is_refused(tmp_path: Path,
                                                               kms: LocalKms) -> None:
    """Parts made by encrypt_path (a data key each) and a manifest under the first part's key:
    the second part is not under the manifest's data key, so the folder is not one dataset
    (format.md: every part under the manifest's key id and wrapped key)."""
    folder = tmp_path / "ds"
    folder.mkdir()
    texts = [csv_part(0, 12), csv_part(12, 30)]
    for number, text in enumerate(texts):
        plain = tmp_path / f"p{number}.csv"
        plain.write_bytes(text)
        encrypt_path(plain, folder / f"part-{number}.csv.cspk", kms, TEST_KEY,
                     segment_size=SEGMENT)
    parts = list_parts(folder)
    with open(parts[0], "rb") as f:
        header, _ = read_header(f)
    entries = tuple(describe_part(p, n) for p, n in zip(parts, (12, 30), strict=True))
    write_manifest(folder, Manifest(entries, DatasetIdentity.new(TEST_KEY)), header,
                   kms.unwrap_data_key(header.key_id, header.wrapped_key))

    with pytest.raises(IntegrityError, match=r"part-1\.csv\.cspk is not under the data key"):
        decrypt_path(folder, tmp_path / "out.csv", kms)
    assert not (tmp_path / "out.csv").exists()


# Tampering with a dataset folder. Each takes the folder and another run's folder (same part
# names, other data key) and returns the error class reading must fail with.
Tamper = Callable[[Path, Path], type[CipherSparkError]]


def _data_parts(folder: Path) -> list[Path]:
    parts = list_parts(folder)
    assert len(parts) >= 3
    return parts


def remove_part(folder: Path, other: Path) -> type[CipherSparkError]:
    _data_parts(folder)[1].unlink()
    return IntegrityError


def add_copied_part(folder: Path, other: Path) -> type[CipherSparkError]:
    source = _data_parts(folder)[0]
    shutil.copyfile(source, folder / source.name.replace("part-", "part-9"))
    return IntegrityError


def swap_parts(folder: Path, other: Path) -> type[CipherSparkError]:
    a, b = _data_parts(folder)[0], _data_parts(folder)[-1]
    temporary = folder / ".swap"
    a.rename(temporary)
    b.rename(a)
    temporary.rename(b)
    return IntegrityError


def swap_same_size_parts(folder: Path, other: Path) -> type[CipherSparkError]:
    parts = _data_parts(folder)
    by_size: dict[int, list[Path]] = {}
    for part in parts:
        by_size.setdefault(part.stat().st_size, []).append(part)
    same = next(group for group in by_size.values() if len(group) >= 2)
    a, b = same[0], same[1]
    a_data, b_data = a.read_bytes(), b.read_bytes()
    a.write_bytes(b_data)
    b.write_bytes(a_data)
    return IntegrityError


def foreign_part(folder: Path, other: Path) -> type[CipherSparkError]:
    target = _data_parts(folder)[1]
    source = _data_parts(other)[1]
    target.write_bytes(source.read_bytes())
    return IntegrityError


def truncate_part(folder: Path, other: Path) -> type[CipherSparkError]:
    part = _data_parts(folder)[0]
    data = part.read_bytes()
    part.write_bytes(data[: len(data) - SEGMENT])  # exactly one segment fewer
    return IntegrityError


def truncate_part_into_its_header(folder: Path, other: Path) -> type[CipherSparkError]:
    part = _data_parts(folder)[0]
    part.write_bytes(part.read_bytes()[:20])  # its container header no longer parses
    return IntegrityError


def empty_part(folder: Path, other: Path) -> type[CipherSparkError]:
    _data_parts(folder)[1].write_bytes(b"")
    return IntegrityError


def flip_bit_in_part_body(folder: Path, other: Path) -> type[CipherSparkError]:
    part = _data_parts(folder)[2]
    flip_bit(part, part.stat().st_size - 30)  # size and header digest unchanged
    return IntegrityError


def foreign_manifest(folder: Path, other: Path) -> type[CipherSparkError]:
    shutil.copyfile(other / MANIFEST_NAME, folder / MANIFEST_NAME)
    return IntegrityError


TAMPERS: dict[str, Tamper] = {
    "remove_part": remove_part,
    "add_copied_part": add_copied_part,
    "swap_parts": swap_parts,
    "swap_same_size_parts": swap_same_size_parts,
    "foreign_part": foreign_part,
    "truncate_part": truncate_part,
    "truncate_part_into_its_header": truncate_part_into_its_header,
    "empty_part": empty_part,
    "flip_bit_in_part_body": flip_bit_in_part_body,
    "foreign_manifest": foreign_manifest,
}


@pytest.mark.parametrize("case", sorted(TAMPERS))
def test_tampered_dataset_does_not_decrypt(case: str, tmp_path: Path, kms: LocalKms) -> None:
    rows = (40, 25, 60, 25)  # two parts of the same size, for swap_same_size_parts
    built = build_dataset(tmp_path / "ds", kms, rows)
    other = build_dataset(tmp_path / "other", kms, rows)
    decrypt_path(built.folder, tmp_path / "before.csv", kms)  # intact, it decrypts
    assert (tmp_path / "before.csv").read_bytes() == built.plaintext

    expected = TAMPERS[case](built.folder, other.folder)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(expected) as raised:
        decrypt_path(built.folder, tmp_path / "out.csv", kms)
    assert type(raised.value) is expected
    assert str(built.folder) in str(raised.value)
    # Nothing was published, nor left behind.
    assert not (tmp_path / "out.csv").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_tampering_is_caught_before_any_part_is_decrypted(tmp_path: Path, kms: LocalKms) -> None:
    """The listing is checked first: a missing last part fails before reading the first one."""
    built = build_dataset(tmp_path / "ds", kms)
    built.parts[-1].unlink()
    seen: list[int] = []
    with pytest.raises(IntegrityError, match="missing"):
        decrypt_path(built.folder, tmp_path / "out.csv", kms, progress=seen.append)
    assert seen == []
