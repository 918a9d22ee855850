"""The published dataset-manifest vectors: docs/vectors/manifest-v1/manifest_v1.json (manifests
written before dataset identities, still read), docs/vectors/manifest-v2/manifest_v2.json
(what cipherspark writes when it knows no schema) and docs/vectors/manifest-v3/manifest_v3.json
(version 2 with the dataset's recorded schema).

Each vector is a dataset folder (file name -> bytes), read with the data keys the reader's KMS
unwraps and, in version 2, the reader's pins (``expect``: key and dataset id). The valid
folders must be accepted by cipherspark's folder reader (``open_dataset``, then
``decrypt_path``), give the recorded plaintext, and, for version 2, be what cipherspark's
writers produce byte for byte once salts and the dataset id are pinned; Tink must decrypt every
container in them. Each invalid folder must be refused with exactly the error class it names,
by the check (``stage``) it names, with nothing published; Tink must refuse the bodies the
vector lists.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest
from tink import core

from cipherspark import errors
from cipherspark.crypto import ContainerHeader, EncryptingWriter, decrypt_stream, read_header
from cipherspark.crypto._streaming import BODY_HEADER_SIZE, SegmentCipher

# The manifest module under test, imported in this one place.
from cipherspark.crypto.manifest import (
    MANIFEST_CONTENT_TYPE,
    MANIFEST_CONTENT_TYPE_V1,
    MANIFEST_CONTENT_TYPE_V3,
    MANIFEST_NAME,
    DatasetIdentity,
    Manifest,
    PartEntry,
    describe_part,
    list_parts,
    open_dataset,
    write_manifest,
)
from cipherspark.files import decrypt_path
from cipherspark.kms import KeyManagementService
from tests.crypto.test_tink_interop import tink_decrypt

ROOT = Path(__file__).parents[2]
VECTOR_FILES = {
    1: ROOT / "docs" / "vectors" / "manifest-v1" / "manifest_v1.json",
    2: ROOT / "docs" / "vectors" / "manifest-v2" / "manifest_v2.json",
    3: ROOT / "docs" / "vectors" / "manifest-v3" / "manifest_v3.json",
}
DOCS = {version: json.loads(path.read_text(encoding="utf-8"))
        for version, path in VECTOR_FILES.items()}
VALID = [(version, v) for version, doc in DOCS.items() for v in doc["valid"]]
INVALID = [(version, v) for version, doc in DOCS.items() for v in doc["invalid"]]
KEYS = {
    (k["key_id"], bytes.fromhex(k["wrapped_key"])): bytes.fromhex(k["data_key"])
    for doc in DOCS.values()
    for k in doc["keys"]
}


def _ids(case: tuple[int, dict[str, Any]]) -> str:
    return f"v{case[0]}-{case[1]['name']}"


def pins(vector: dict[str, Any]) -> dict[str, Any]:
    """The reader's pins as keyword arguments of open_dataset and decrypt_path."""
    expect = vector.get("expect", {})
    assert set(expect) <= {"key_id", "dataset_id"}
    return dict(expect)


class VectorKms:
    """The reader's KMS as the vectors define it: a table of (key id, wrapped key) -> data key.

    Only ``unwrap_data_key`` is used by readers. A pair not in the table fails as LocalKms fails
    for a wrapped key that does not unwrap (no vector relies on it).
    """

    def unwrap_data_key(self, key_id: str, wrapped: bytes) -> bytes:
        try:
            return KEYS[(key_id, wrapped)]
        except KeyError:
            raise errors.IntegrityError(f"the data key does not unwrap under {key_id!r}") from None


KMS = cast(KeyManagementService, VectorKms())


def data_key_for(header: ContainerHeader) -> bytes:
    return KMS.unwrap_data_key(header.key_id, header.wrapped_key)


def materialize(vector: dict[str, Any], root: Path) -> Path:
    folder = root / "dataset"
    folder.mkdir()
    for name, data in vector["files"].items():
        (folder / name).write_bytes(bytes.fromhex(data))
    return folder


def error_class(vector: dict[str, Any]) -> type[errors.CipherSparkError]:
    cls: type[errors.CipherSparkError] = getattr(errors, vector["error"])
    assert issubclass(cls, errors.CipherSparkError)
    return cls


def tink_split(data: bytes) -> tuple[int, int]:
    """Header length and segment size, read from the fixed part of a container header."""
    length, segment_size = struct.unpack_from(">HI", data, 10)
    return length, segment_size


def test_document_constants_match_the_code() -> None:
    assert [DOCS[v]["format_version"] for v in (1, 2, 3)] == [1, 2, 3]
    assert {doc["manifest_name"] for doc in DOCS.values()} == {MANIFEST_NAME}
    assert DOCS[1]["manifest_content_type"] == MANIFEST_CONTENT_TYPE_V1
    assert DOCS[2]["manifest_content_type"] == MANIFEST_CONTENT_TYPE
    assert DOCS[3]["manifest_content_type"] == MANIFEST_CONTENT_TYPE_V3
    # The two files agree on every key they share: one reader's KMS reads both.
    pairs = [(k["key_id"], k["wrapped_key"], k["data_key"]) for d in DOCS.values()
             for k in d["keys"]]
    assert len({(a, b) for a, b, _ in pairs}) == len(set(pairs))


# -- valid folders -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", VALID, ids=_ids)
def test_valid_folder_is_accepted(case: tuple[int, dict[str, Any]], tmp_path: Path) -> None:
    version, vector = case
    folder = materialize(vector, tmp_path)
    parts = list_parts(folder)
    # Files whose names start with "_" or "." (markers, checksums, the manifest) are not parts.
    assert [p.name for p in parts] == sorted(p["name"] for p in vector["parts"])

    dataset = open_dataset(folder, data_key_for, **pins(vector))
    manifest = dataset.manifest
    document = json.loads(vector["manifest_plaintext"])
    assert manifest.version == version == document["version"]
    assert manifest.to_json() == vector["manifest_plaintext"].encode("ascii")
    assert manifest.parts == tuple(PartEntry(**e) for e in document["parts"])
    assert manifest.rows == sum(p["rows"] for p in vector["parts"])
    assert [Path(p.path).name for p in dataset.parts] == [p.name for p in parts]
    if version >= 2:
        ds = document["dataset"]
        assert manifest.identity == DatasetIdentity(ds["id"], ds["key_id"], ds["generation"])
        assert dataset.key_id == ds["key_id"]
    # The recorded schema (version 3) is what the reader is given; earlier versions record none.
    assert dataset.schema == vector.get("schema")
    assert (dataset.schema is not None) == (version == 3)

    for part in vector["parts"]:
        with open(folder / part["name"], "rb") as f:
            plaintext = b"".join(decrypt_stream(f, data_key_for))
        assert plaintext == bytes.fromhex(part["plaintext"])

    out = tmp_path / "out"
    # The vectors define a dataset's bytes, not a registry (whose records name a location and
    # are tested in tests/test_cli_dataset.py): the reader runs with the registry check off.
    result = decrypt_path(folder, out, KMS, **pins(vector), unsafe_skip_registry=True)
    assert out.read_bytes() == bytes.fromhex(vector["decrypted"])
    assert result.dataset == manifest.identity


@pytest.mark.parametrize("case", VALID, ids=_ids)
def test_tink_decrypts_every_container(case: tuple[int, dict[str, Any]]) -> None:
    _, vector = case
    plaintexts = {p["name"]: bytes.fromhex(p["plaintext"]) for p in vector["parts"]}
    plaintexts[MANIFEST_NAME] = vector["manifest_plaintext"].encode("ascii")
    for name, plaintext in plaintexts.items():
        data = bytes.fromhex(vector["files"][name])
        header, raw = read_header(io.BytesIO(data))
        length, segment_size = tink_split(data)
        assert (length, segment_size) == (len(raw), header.segment_size)
        key = data_key_for(header)
        assert tink_decrypt(key, segment_size, data[length:], data[:length]) == plaintext, name


def _pinned(data: bytes) -> tuple[bytes, bytes]:
    """The salt and nonce prefix of a container, from its body header."""
    length, _ = tink_split(data)
    body_header = data[length : length + BODY_HEADER_SIZE]
    return body_header[1:33], body_header[33:]


@pytest.mark.parametrize("case", [c for c in VALID if c[0] >= 2], ids=_ids)
def test_cipherspark_writes_the_folder_byte_for_byte(
    case: tuple[int, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With each file's salt and nonce prefix pinned, cipherspark's writers give the vector:
    EncryptingWriter for the parts, describe_part for the entries, write_manifest for the rest
    (cipherspark writes version 2 manifests, and version 3 when it knows the schema)."""
    _, vector = case
    files = {name: bytes.fromhex(data) for name, data in vector["files"].items()}
    ds = json.loads(vector["manifest_plaintext"])["dataset"]
    identity = DatasetIdentity(ds["id"], ds["key_id"], ds["generation"])
    pinned: list[tuple[bytes, bytes]] = []

    def new(cls: type[SegmentCipher], data_key: bytes, aad: bytes) -> SegmentCipher:
        salt, prefix = pinned.pop(0)
        return cls(data_key, aad, salt, prefix)

    monkeypatch.setattr(SegmentCipher, "new", classmethod(new))
    out = tmp_path / "written"
    out.mkdir()
    entries = []
    header = None
    for part in vector["parts"]:
        original = files[part["name"]]
        header, _ = read_header(io.BytesIO(original))
        pinned.append(_pinned(original))
        with open(out / part["name"], "xb") as f:
            writer = EncryptingWriter(f, header, data_key_for(header))
            writer.write(bytes.fromhex(part["plaintext"]))
            writer.close()
        assert (out / part["name"]).read_bytes() == original, part["name"]
        entries.append(describe_part(out / part["name"], part["rows"]))
    assert header is not None
    pinned.append(_pinned(files[MANIFEST_NAME]))
    manifest = Manifest(tuple(entries), identity, vector.get("schema"))
    write_manifest(out, manifest, header, data_key_for(header))
    assert (out / MANIFEST_NAME).read_bytes() == files[MANIFEST_NAME]
    assert not pinned


# -- invalid folders -----------------------------------------------------------------------------

REQUIRED = {
    1: {
        "no-data-files", "manifest-missing", "manifest-byte-flipped",
        "manifest-under-another-data-key", "manifest-under-another-key",
        "manifest-from-another-run", "part-missing", "part-added-copy",
        "part-added-from-another-run", "parts-swapped", "part-replaced-by-reencryption",
        "part-truncated-at-segment-boundary", "part-body-byte-flipped",
    },
    2: {
        "no-data-files", "manifest-missing", "manifest-byte-flipped",
        "manifest-under-another-data-key", "manifest-under-another-key",
        "manifest-from-another-run", "part-missing", "part-added-from-another-run",
        "parts-swapped", "part-replaced-by-reencryption", "part-truncated-at-segment-boundary",
        "part-body-byte-flipped", "part-under-another-data-key", "part-entry-wrong-size",
        "manifest-duplicate-part-name", "manifest-duplicate-json-key",
        "manifest-trailing-garbage", "manifest-not-canonical", "manifest-names-another-key",
        "pin-another-dataset-same-key", "pin-dataset-under-another-key",
        "pin-dataset-id-on-a-version-1-folder",
    },
    3: {
        "manifest-byte-flipped", "version-3-without-schema", "schema-in-a-version-2-document",
        "version-3-document-in-a-version-2-container", "schema-not-canonical",
        "schema-unknown-type", "part-missing", "part-body-byte-flipped",
    },
}
STAGES = {
    1: {"folder", "manifest", "listing", "part"},
    2: {"folder", "manifest", "listing", "part", "pin"},
    3: {"manifest", "listing", "part"},
}


def test_invalid_vectors_cover_the_manifest_checks() -> None:
    for version, doc in DOCS.items():
        names = {v["name"] for v in doc["invalid"]}
        assert len(names) == len(doc["invalid"])
        assert REQUIRED[version] <= names, version
        assert {v["stage"] for v in doc["invalid"]} == STAGES[version]
        for vector in doc["invalid"]:
            error_class(vector)
            # Every check docs/format.md asks for is made: none is only recommended any more.
            assert vector["conformance"] == "must", vector["name"]
            assert (vector["stage"] == "pin") == bool(vector.get("expect")), vector["name"]


@pytest.mark.parametrize("case", INVALID, ids=_ids)
def test_invalid_folder_is_refused(case: tuple[int, dict[str, Any]], tmp_path: Path) -> None:
    _, vector = case
    folder = materialize(vector, tmp_path)
    expected = error_class(vector)
    out = tmp_path / "out"
    with pytest.raises(errors.CipherSparkError) as raised:
        decrypt_path(folder, out, KMS, **pins(vector), unsafe_skip_registry=True)
    assert type(raised.value) is expected, repr(raised.value)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset"]  # nothing left behind

    # The check the vector names is the one that refuses it.
    if vector["stage"] == "folder":
        assert not list_parts(folder)
    elif vector["stage"] == "part":
        open_dataset(folder, data_key_for, **pins(vector))
    elif vector["stage"] == "pin":
        open_dataset(folder, data_key_for)  # valid on its own: only the pin refuses it
    if vector["stage"] != "part":
        with pytest.raises(errors.CipherSparkError) as raised:
            open_dataset(folder, data_key_for, **pins(vector))
        assert type(raised.value) is expected, repr(raised.value)


@pytest.mark.parametrize("case", [c for c in INVALID if c[1]["tink"]], ids=_ids)
def test_tink_refuses_the_modified_bodies(case: tuple[int, dict[str, Any]]) -> None:
    _, vector = case
    for check in vector["tink"]:
        assert check["result"] == "invalid"
        data = bytes.fromhex(vector["files"][check["file"]])
        length = check["header_length"]
        with pytest.raises(core.TinkError):
            tink_decrypt(
                bytes.fromhex(check["data_key"]),
                check["segment_size"],
                data[length:],
                data[:length],
            )


@pytest.mark.parametrize("version", sorted(VECTOR_FILES))
def test_generator_reproduces_the_published_file(version: int, tmp_path: Path) -> None:
    """make_manifest.py, with cipherspark made unimportable, writes exactly the published file."""
    vector_file = VECTOR_FILES[version]
    script = vector_file.parent / "make_manifest.py"
    code = (
        "import runpy, sys\n"
        "sys.modules['cipherspark'] = None  # any import of cipherspark now fails\n"
        "sys.argv = sys.argv[1:]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(script), str(tmp_path)],
        check=True,
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )
    assert (tmp_path / vector_file.name).read_bytes() == vector_file.read_bytes()
