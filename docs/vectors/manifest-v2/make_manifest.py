"""Regenerate ``manifest_v2.json``: dataset folders with version 2 manifests (dataset identity,
key binding, canonical JSON), valid and invalid, and the reader pins they are read with.

Run from the repository root (needs ``cryptography`` and ``tink``)::

    .venv/bin/python docs/vectors/manifest-v2/make_manifest.py [OUTPUT_DIR]

Built from ``docs/format.md`` ("Dataset manifest") alone, with the container helpers of
``../container-v1/make_kat.py`` and the folder helpers of ``../manifest-v1/make_manifest.py``
(loaded by path), never importing cipherspark. Every data key, salt, nonce prefix, part name
and dataset id is fixed, so the output is deterministic. Before anything is written, Tink
decrypts every container of the valid folders and refuses each body an invalid vector lists.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "container-v1"))
from make_kat import fixed_bytes, output_dir, tink_rejects, write_json  # noqa: E402


def _load_v1() -> ModuleType:
    """The version 1 generator, for its folder helpers (same file name, hence by path)."""
    spec = importlib.util.spec_from_file_location(
        "manifest_v1_generator", HERE.parent / "manifest-v1" / "make_manifest.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


v1 = _load_v1()
Folder = v1.Folder
DATASET, OTHER_RUN, OTHER_KEY, STRAY = v1.DATASET, v1.OTHER_RUN, v1.OTHER_KEY, v1.STRAY
OVERWRITE = v1.data_key("v2/overwrite", "kat-dataset-key")  # the dataset written again in place
KEYS = [DATASET, OTHER_RUN, OTHER_KEY, OVERWRITE]
S = v1.S
CSV = v1.CSV_HEADER_PRESENT
MANIFEST_NAME = v1.MANIFEST_NAME
OUTPUT_NAME = "manifest_v2.json"
CONTENT_TYPE = "application/vnd.cipherspark.manifest+json; version=2"
CONTENT_TYPE_V1 = v1.MANIFEST_CONTENT_TYPE


def dataset_id(label: str) -> str:
    """A dataset id: 16 fixed bytes as 32 lowercase hex digits (writers draw them at random)."""
    return fixed_bytes(f"manifest-v2/{label}/dataset-id", 16).hex()


ID = dataset_id("dataset")
OTHER_ID = dataset_id("other-run")
OTHER_KEY_ID = dataset_id("other-key")
ENCRYPT_ID = dataset_id("encrypt")


def encode(doc: object) -> bytes:
    """The canonical encoding: sorted keys, no whitespace, ASCII only (``\\uXXXX`` escapes)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("ascii")


def document(
    entries: list[dict[str, object]], key_id: str, ds_id: str, generation: int = 1
) -> dict[str, object]:
    """A version 2 document: the dataset's identity and its entries in name order."""
    return {
        "dataset": {"generation": generation, "id": ds_id, "key_id": key_id},
        "parts": sorted(entries, key=lambda e: str(e["name"])),
        "version": 2,
    }


def spark_folder(run: str, dk: object, ds_id: str, generation: int = 1) -> Folder:
    """Three CSV parts as the Spark writer leaves them, a _SUCCESS marker and a checksum file.

    Every run uses the part names of the run "dataset", so that one run's files can stand in
    for another's without a name telling them apart.
    """
    files: dict[str, bytes] = {}
    parts = []
    first = 0
    for number, rows in enumerate((5, 9, 3)):
        name = v1.spark_name("dataset", number)
        text = v1.csv_part(first, rows)
        first += rows
        files[name] = v1.container(dk, CSV, text, f"v2/{run}/part-{number}")
        parts.append((name, text, rows))
    entries = [v1.entry(name, files[name], rows) for name, _, rows in parts]
    plaintext = encode(document(entries, dk.key_id, ds_id, generation))
    files[MANIFEST_NAME] = v1.container(dk, CONTENT_TYPE, plaintext, f"v2/{run}/manifest")
    files["_SUCCESS"] = b""
    files[f".{parts[0][0]}.crc"] = fixed_bytes(f"manifest-v2/{run}/crc", 12)
    header_line = parts[0][1].split(b"\n", 1)[0] + b"\n"
    decrypted = header_line + b"".join(t[len(header_line) :] for _, t, _ in sorted(parts))
    return Folder(files, sorted(parts), plaintext, decrypted)


def encrypt_folder() -> Folder:
    """A folder as ``cipherspark encrypt SRC_FOLDER DST`` writes it: one part per source file,
    listed in name order."""
    sources = [
        ("données.csv", b"a,b\n1,2\n\n3,4\r\n\r\n"),  # blank lines are not records
        ("notes.txt", b"not csv: rows is 0\n"),
        ("people.csv", v1.csv_part(0, 4)),
    ]
    files: dict[str, bytes] = {}
    parts = []
    for source, text in sources:
        content_type = CSV if source.endswith(".csv") else v1.BINARY
        name = source + ".cspk"
        files[name] = v1.container(DATASET, content_type, text, f"v2/encrypt/{source}")
        parts.append((name, text, v1.count_rows(text, content_type)))
    entries = [v1.entry(n, files[n], rows) for n, _, rows in parts]
    plaintext = encode(document(entries, DATASET.key_id, ENCRYPT_ID))
    files[MANIFEST_NAME] = v1.container(DATASET, CONTENT_TYPE, plaintext, "v2/encrypt/manifest")
    decrypted = sources[0][1] + sources[1][1] + sources[2][1].split(b"\n", 1)[1]
    return Folder(files, sorted(parts), plaintext, decrypted)


@dataclass
class Invalid:
    name: str
    description: str
    files: dict[str, bytes]
    error: str
    stage: str  # "folder", "manifest", "listing", "part" or "pin"
    expect: dict[str, str] = field(default_factory=dict)  # the reader's pins
    tink_rejects: list[tuple[str, bytes]] = field(default_factory=list)


def invalid_vectors(base: Folder, other: Folder, other_key: Folder) -> list[Invalid]:
    p0, p1, p2 = (name for name, _, _ in base.parts)
    manifest = base.files[MANIFEST_NAME]
    doc = json.loads(base.manifest_plaintext)
    entries = doc["parts"]

    def changed(**changes: bytes | None) -> dict[str, bytes]:
        """The base folder with files replaced (bytes), added, or removed (None)."""
        files = dict(base.files)
        for key, value in changes.items():
            name = {"p0": p0, "p1": p1, "p2": p2, "manifest": MANIFEST_NAME}.get(key, key)
            if value is None:
                del files[name]
            else:
                files[name] = value
        return files

    def m(
        plaintext: bytes, label: str, content_type: str = CONTENT_TYPE, dk: object = DATASET
    ) -> bytes:
        """A manifest container under ``dk`` (default: the dataset's own data key)."""
        return v1.container(dk, content_type, plaintext, f"v2/dataset/{label}")

    def with_entry(index: int, **edits: object) -> bytes:
        edited = json.loads(base.manifest_plaintext)
        edited["parts"][index].update(edits)
        return encode(edited)

    def without_dataset_key(key: str) -> dict[str, object]:
        edited = json.loads(base.manifest_plaintext)
        edited["dataset"] = {k: v for k, v in edited["dataset"].items() if k != key}
        return edited

    mh = v1.header_length(manifest)
    text1 = base.parts[1][1]
    reencrypted = v1.container(DATASET, CSV, text1, "v2/dataset/part-1-again")
    assert len(reencrypted) == len(base.files[p1]) and reencrypted != base.files[p1]
    p0_data = base.files[p0]
    cut = p0_data[: v1.header_length(p0_data) + S]
    # p1 re-encrypted under another data key of the same KMS key, listed with its true digest
    # and size by a manifest under the dataset's key (only a key holder can write one).
    foreign_p1 = v1.container(OTHER_RUN, CSV, text1, "v2/dataset/part-1-other-data-key")
    mixed = encode(
        document(
            [e for e in entries if e["name"] != p1] + [v1.entry(p1, foreign_p1, 9)],
            DATASET.key_id,
            ID,
        )
    )
    # The two remaining parts, listed exactly, by a manifest under another KMS key.
    other_key_manifest = v1.container(
        OTHER_KEY,
        CONTENT_TYPE,
        encode(document([e for e in entries if e["name"] != p1], OTHER_KEY.key_id, ID)),
        "v2/other-key/substitute-manifest",
    )
    two = [e for e in entries if e["name"] != p1]
    dataset_member = encode(doc["dataset"])
    duplicate_parts = (
        b'{"dataset":'
        + dataset_member
        + b',"parts":'
        + encode(entries)
        + b',"parts":'
        + encode(two)
        + b',"version":2}'
    )
    v1_folder = v1.spark_folder("dataset", DATASET)

    return [
        Invalid(
            "no-data-files",
            "only a manifest listing no parts, and no data file",
            {MANIFEST_NAME: m(encode(document([], DATASET.key_id, ID)), "empty")},
            "InputError",
            "folder",
        ),
        # -- the manifest itself
        Invalid(
            "manifest-missing",
            "_manifest.cspk removed",
            changed(manifest=None),
            "IntegrityError",
            "manifest",
        ),
        Invalid(
            "manifest-byte-flipped",
            "last byte of the manifest (its final tag) XOR 0x01",
            changed(manifest=v1.xor_at(manifest, len(manifest) - 1)),
            "IntegrityError",
            "manifest",
            tink_rejects=[(MANIFEST_NAME, DATASET.key)],
        ),
        Invalid(
            "manifest-truncated-at-segment-boundary",
            "the manifest's final segment removed",
            changed(manifest=manifest[: mh + S * ((len(manifest) - mh - 1) // S)]),
            "IntegrityError",
            "manifest",
            tink_rejects=[(MANIFEST_NAME, DATASET.key)],
        ),
        Invalid(
            "manifest-under-another-data-key",
            "the dataset's header (key id, wrapped key) but a body under another data key",
            changed(
                manifest=v1.container(
                    DATASET, CONTENT_TYPE, base.manifest_plaintext, "v2/dataset/manifest", key=STRAY
                )
            ),
            "IntegrityError",
            "manifest",
            tink_rejects=[(MANIFEST_NAME, DATASET.key)],
        ),
        Invalid(
            "manifest-not-encrypted",
            "the manifest's JSON plaintext itself",
            changed(manifest=base.manifest_plaintext),
            "NotEncryptedError",
            "manifest",
        ),
        Invalid(
            "manifest-wrong-content-type",
            "a genuine container under the dataset's key holding the manifest JSON, "
            "but of content type text/csv; header=present",
            changed(manifest=m(base.manifest_plaintext, "csv-typed", CSV)),
            "FormatError",
            "manifest",
        ),
        Invalid(
            "manifest-version-2-in-a-version-1-container",
            "the version 2 document in a container of the version 1 manifest content type",
            changed(manifest=m(base.manifest_plaintext, "v1-typed", CONTENT_TYPE_V1)),
            "FormatError",
            "manifest",
        ),
        Invalid(
            "manifest-version-1-document",
            "a version 1 document (no dataset member) in a version 2 container",
            changed(manifest=m(v1.manifest_json(entries), "v1-document")),
            "FormatError",
            "manifest",
        ),
        Invalid(
            "manifest-json-malformed",
            "correctly encrypted, but the JSON lacks its last byte",
            changed(manifest=m(base.manifest_plaintext[:-1], "malformed")),
            "FormatError",
            "manifest",
        ),
        Invalid(
            "manifest-trailing-garbage",
            "correctly encrypted, the canonical document followed by the bytes 'garbage'",
            changed(manifest=m(base.manifest_plaintext + b"garbage", "trailing-garbage")),
            "FormatError",
            "manifest",
        ),
        Invalid(
            "manifest-trailing-newline",
            "correctly encrypted, the canonical document and a newline (valid JSON, "
            "not the canonical form)",
            changed(manifest=m(base.manifest_plaintext + b"\n", "trailing-newline")),
            "FormatError",
            "manifest",
        ),
        Invalid(
            "manifest-not-canonical",
            "correctly encrypted, the same document indented",
            changed(manifest=m(json.dumps(doc, sort_keys=True, indent=1).encode(), "indented")),
            "FormatError",
            "manifest",
        ),
        Invalid(
            "manifest-duplicate-json-key",
            f"{p1} removed; the manifest has two 'parts' members, all three parts and then "
            "the two remaining ones (a last-member-wins parser would accept the folder)",
            changed(p1=None, manifest=m(duplicate_parts, "duplicate-key")),
            "FormatError",
            "manifest",
        ),
        Invalid(
            "manifest-duplicate-part-name",
            f"the entry of {p0} listed twice",
            changed(manifest=m(encode({**doc, "parts": [entries[0], *entries]}), "twice")),
            "FormatError",
            "manifest",
        ),
        Invalid(
            "manifest-parts-out-of-order",
            "the entries in reverse name order",
            changed(manifest=m(encode({**doc, "parts": entries[::-1]}), "reversed")),
            "FormatError",
            "manifest",
        ),
        Invalid(
            "manifest-size-as-string",
            f"the size of {p1} written as a JSON string",
            changed(manifest=m(with_entry(1, size=str(entries[1]["size"])), "size-string")),
            "FormatError",
            "manifest",
        ),
        Invalid(
            "manifest-part-name-with-a-path",
            f"{p2} listed as ../{p2}",
            changed(manifest=m(with_entry(2, name=f"../{p2}"), "path-name")),
            "FormatError",
            "manifest",
        ),
        Invalid(
            "manifest-without-generation",
            "the dataset member lacks its generation",
            changed(manifest=m(encode(without_dataset_key("generation")), "no-generation")),
            "FormatError",
            "manifest",
        ),
        Invalid(
            "manifest-dataset-id-malformed",
            "a dataset id of 31 bytes",
            changed(
                manifest=m(
                    encode({**doc, "dataset": {**doc["dataset"], "id": "ab" * 31}}), "short-id"
                )
            ),
            "FormatError",
            "manifest",
        ),
        Invalid(
            "manifest-names-another-key",
            "encrypted under the dataset's key, but its dataset member names kat-other-key",
            changed(
                manifest=m(
                    encode({**doc, "dataset": {**doc["dataset"], "key_id": OTHER_KEY.key_id}}),
                    "names-other-key",
                )
            ),
            "IntegrityError",
            "manifest",
        ),
        # -- the listing: the folder's data files against the manifest
        Invalid("part-missing", f"{p1} removed", changed(p1=None), "IntegrityError", "listing"),
        Invalid(
            "part-added-copy",
            f"a copy of {p0} added as part-00003.csv.cspk",
            changed(**{"part-00003.csv.cspk": base.files[p0]}),
            "IntegrityError",
            "listing",
        ),
        Invalid(
            "part-added-from-another-run",
            "a part of another dataset (same KMS key, other data key) added under its own name",
            changed(**{v1.spark_name("other-run", 3): other.files[p0]}),
            "IntegrityError",
            "listing",
        ),
        Invalid(
            "parts-swapped",
            f"the contents of {p0} and {p2} exchanged (names kept)",
            changed(p0=base.files[p2], p2=base.files[p0]),
            "IntegrityError",
            "listing",
        ),
        Invalid(
            "part-replaced-by-reencryption",
            f"{p1} encrypted again: same key, header, plaintext and size, another salt",
            changed(p1=reencrypted),
            "IntegrityError",
            "listing",
        ),
        Invalid(
            "part-from-another-run",
            f"{p1} replaced by the part of that name of another dataset (same size)",
            changed(p1=other.files[p1]),
            "IntegrityError",
            "listing",
        ),
        Invalid(
            "part-truncated-at-segment-boundary",
            f"{p0} cut after its segment 0 (header and body header, hence the digest, unchanged)",
            changed(p0=cut),
            "IntegrityError",
            "listing",
        ),
        Invalid(
            "part-cut-inside-header",
            f"{p1} cut to its first 20 bytes",
            changed(p1=base.files[p1][:20]),
            "IntegrityError",
            "listing",
        ),
        Invalid(
            "part-entry-wrong-size",
            f"a manifest under the dataset's key whose entry for {p1} is one byte too large",
            changed(manifest=m(with_entry(1, size=int(entries[1]["size"]) + 1), "wrong-size")),
            "IntegrityError",
            "listing",
        ),
        Invalid(
            "manifest-from-another-run",
            "the manifest of another dataset (same part names and sizes, another data key "
            "the reader can unwrap)",
            changed(manifest=other.files[MANIFEST_NAME]),
            "IntegrityError",
            "listing",
        ),
        Invalid(
            "manifest-under-another-key",
            f"{p1} removed and the manifest replaced by one listing the two remaining parts "
            "exactly, encrypted under a data key of another KMS key the reader can also unwrap",
            changed(p1=None, manifest=other_key_manifest),
            "IntegrityError",
            "listing",
        ),
        Invalid(
            "part-under-another-data-key",
            f"{p1} re-encrypted under another data key of the same KMS key, listed with its "
            "true size and digest by a manifest under the dataset's own key",
            changed(p1=foreign_p1, manifest=m(mixed, "mixed-keys")),
            "IntegrityError",
            "listing",
        ),
        # -- a part's own authentication
        Invalid(
            "part-body-byte-flipped",
            f"last byte of {p1} (its final tag) XOR 0x01: size and header digest unchanged",
            changed(p1=v1.xor_at(base.files[p1], len(base.files[p1]) - 1)),
            "IntegrityError",
            "part",
            tink_rejects=[(p1, DATASET.key)],
        ),
        # -- what the reader pins: a complete, valid folder that is not the one expected
        Invalid(
            "pin-another-dataset-same-key",
            "the whole folder replaced by another dataset under the same KMS key (valid on "
            "its own); the reader pins the dataset id",
            dict(other.files),
            "IntegrityError",
            "pin",
            expect={"dataset_id": ID},
        ),
        Invalid(
            "pin-dataset-under-another-key",
            "the whole folder replaced by a dataset under another KMS key the reader can "
            "unwrap (valid on its own); the reader pins the key",
            dict(other_key.files),
            "IntegrityError",
            "pin",
            expect={"key_id": DATASET.key_id},
        ),
        Invalid(
            "pin-dataset-id-on-a-version-1-folder",
            "a valid folder with a version 1 manifest (no dataset id); the reader pins an id",
            dict(v1_folder.files),
            "IntegrityError",
            "pin",
            expect={"dataset_id": ID},
        ),
    ]


def hexfiles(files: dict[str, bytes]) -> dict[str, str]:
    return {name: files[name].hex() for name in sorted(files)}


def check_tink_valid(folder: Folder) -> None:
    """Tink decrypts every container of the folder to its plaintext (v1's check, our keys)."""
    saved = v1.KEYS
    v1.KEYS = KEYS
    try:
        v1.check_tink_valid(folder)
    finally:
        v1.KEYS = saved


def valid_vector(
    name: str, description: str, folder: Folder, expect: dict[str, str]
) -> dict[str, object]:
    """A valid folder as the JSON file records it (Tink checked it already)."""
    return {
        "name": name,
        "description": description,
        "files": hexfiles(folder.files),
        "expect": expect,
        "manifest_plaintext": folder.manifest_plaintext.decode("ascii"),
        "parts": [{"name": n, "plaintext": t.hex(), "rows": r} for n, t, r in folder.parts],
        "decrypted": folder.decrypted.hex(),
    }


def invalid_vector(vector: Invalid) -> dict[str, object]:
    """An invalid folder as the JSON file records it, after Tink refused each body it lists."""
    tink = []
    for file_name, key in vector.tink_rejects:
        data = vector.files[file_name]
        h = v1.header_length(data)
        segment_size = int.from_bytes(data[12:16], "big")
        if not tink_rejects(key, segment_size, data[h:], data[:h]):
            raise SystemExit(f"Tink accepts {file_name} of {vector.name!r}")
        tink.append(
            {
                "file": file_name,
                "data_key": key.hex(),
                "header_length": h,
                "segment_size": segment_size,
                "result": "invalid",
            }
        )
    return {
        "name": vector.name,
        "description": vector.description,
        "files": hexfiles(vector.files),
        "expect": vector.expect,
        "stage": vector.stage,
        "error": vector.error,
        "conformance": "must",
        "tink": tink,
    }


def build() -> dict[str, object]:
    spark = spark_folder("dataset", DATASET, ID)
    overwritten = spark_folder("overwritten", OVERWRITE, ID, generation=2)
    other = spark_folder("other-run", OTHER_RUN, OTHER_ID)
    other_key = spark_folder("other-key", OTHER_KEY, OTHER_KEY_ID)
    valid = []
    for name, description, folder, expect in [
        (
            "spark-3-parts",
            "three CSV parts as the Spark writer commits them, with a _SUCCESS marker and a "
            "hidden checksum file that are not parts; read with the key and dataset id pinned",
            spark,
            {"key_id": DATASET.key_id, "dataset_id": ID},
        ),
        (
            "spark-3-parts-generation-2",
            "the same dataset overwritten in place: same id, generation 2, a new data key",
            overwritten,
            {"key_id": DATASET.key_id, "dataset_id": ID},
        ),
        (
            "encrypt-folder",
            "a folder encrypted by 'cipherspark encrypt' (a non-ASCII file name, blank CSV "
            "lines, a non-CSV part); read without pins",
            encrypt_folder(),
            {},
        ),
    ]:
        check_tink_valid(folder)
        valid.append(valid_vector(name, description, folder, expect))
    check_tink_valid(other)
    check_tink_valid(other_key)
    invalid = [invalid_vector(v) for v in invalid_vectors(spark, other, other_key)]
    return {
        "description": "cipherspark dataset manifest v2 vectors: folders (file name -> bytes) "
        "a reader given the pins in 'expect' must accept, and folders it must refuse with the "
        "named error; produced by make_manifest.py, checked with Tink before saving",
        "format_version": 2,
        "manifest_name": MANIFEST_NAME,
        "manifest_content_type": CONTENT_TYPE,
        "keys": [
            {"key_id": k.key_id, "wrapped_key": k.wrapped.hex(), "data_key": k.key.hex()}
            for k in KEYS
        ],
        "valid": valid,
        "invalid": invalid,
    }


def main() -> None:
    output = output_dir(sys.argv) / OUTPUT_NAME
    write_json(output, build())
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
