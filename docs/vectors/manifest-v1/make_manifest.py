"""Regenerate ``manifest_v1.json``: dataset folders, valid and invalid, with the expected outcome.

Run from the repository root (needs ``cryptography`` and ``tink``)::

    .venv/bin/python docs/vectors/manifest-v1/make_manifest.py [OUTPUT_DIR]

Every folder is built from ``docs/format.md`` ("Dataset manifest") alone, with the container
helpers of ``../container-v1/make_kat.py`` and without importing cipherspark, so the vectors are
an independent second implementation of the manifest. Data keys, salts, nonce prefixes and part
names are fixed; the output is deterministic. Before anything is written, Tink decrypts every
container of the valid folders, and refuses each body an invalid vector says it refuses.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# The container helpers are shared with the container vectors; that folder's name is not an
# importable package name, hence the path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "container-v1"))
from make_kat import (
    BODY_HEADER_SIZE,
    body_header,
    encode_header,
    encrypt_segments,
    fixed_bytes,
    output_dir,
    split_plaintext,
    tink_decrypt,
    tink_rejects,
    write_json,
)

OUTPUT_NAME = "manifest_v1.json"
MANIFEST_NAME = "_manifest.cspk"
MANIFEST_CONTENT_TYPE = "application/vnd.cipherspark.manifest+json; version=1"
CSV_HEADER_PRESENT = "text/csv; header=present"
BINARY = "application/octet-stream"
S = 100  # small segments, so that parts and manifests span several


@dataclass(frozen=True)
class DataKey:
    """A data key as the reader's KMS sees it: (key id, wrapped key) unwraps to ``key``."""

    key_id: str
    wrapped: bytes
    key: bytes


def data_key(label: str, key_id: str) -> DataKey:
    return DataKey(
        key_id,
        b"\x01" + fixed_bytes(f"manifest/{label}/wrapped-key", 60),
        fixed_bytes(f"manifest/{label}/data-key", 32),
    )


DATASET = data_key("dataset", "kat-dataset-key")
OTHER_RUN = data_key("other-run", "kat-dataset-key")  # another dataset under the same KMS key
OTHER_KEY = data_key("other-key", "kat-other-key")  # a second KMS key the reader may use
STRAY = fixed_bytes("manifest/stray/data-key", 32)  # a data key no header leads to
KEYS = [DATASET, OTHER_RUN, OTHER_KEY]


def container(
    dk: DataKey,
    content_type: str,
    plaintext: bytes,
    label: str,
    *,
    key: bytes | None = None,
    segment_size: int = S,
) -> bytes:
    """A container (header || body) with salt and nonce prefix derived from ``label``."""
    header = encode_header(dk.key_id, dk.wrapped, segment_size, content_type)
    salt = fixed_bytes(f"manifest/{label}/salt", 32)
    prefix = fixed_bytes(f"manifest/{label}/nonce-prefix", 7)
    segments = encrypt_segments(
        key or dk.key, header, salt, prefix, split_plaintext(segment_size, plaintext)
    )
    return header + body_header(salt, prefix) + b"".join(segments)


def header_length(data: bytes) -> int:
    return int.from_bytes(data[10:12], "big")


def count_rows(text: bytes, content_type: str) -> int:
    """``rows`` as ``cipherspark encrypt`` records it (docs/format.md, "Manifest plaintext")."""
    if not content_type.startswith("text/csv"):
        return 0
    lines = text.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the text ends with a newline: no line after it
    records = sum(1 for line in lines if line not in (b"", b"\r"))
    if content_type == CSV_HEADER_PRESENT and records:
        records -= 1
    return records


def entry(name: str, data: bytes, rows: int) -> dict[str, object]:
    """A part's manifest entry: the digest covers container header and body header."""
    digest = hashlib.sha256(data[: header_length(data) + BODY_HEADER_SIZE]).hexdigest()
    return {"header_sha256": digest, "name": name, "rows": rows, "size": len(data)}


def manifest_json(entries: list[dict[str, object]], version: object = 1) -> bytes:
    """The canonical encoding: sorted keys, no spaces, ASCII only (``\\uXXXX`` escapes)."""
    return json.dumps(
        {"parts": entries, "version": version}, sort_keys=True, separators=(",", ":")
    ).encode("ascii")


def csv_part(first: int, rows: int) -> bytes:
    lines = ["id,name,job,age"]
    lines += [
        f"{i},person-{i:04d},{['Developer', 'Tester', 'Manager'][i % 3]},{20 + i % 45}"
        for i in range(first, first + rows)
    ]
    return ("\n".join(lines) + "\n").encode()


def spark_name(run: str, number: int) -> str:
    """A part name shaped like the Spark writer's: part-NNNNN-<32 hex digits>.csv.cspk."""
    return f"part-{number:05d}-{fixed_bytes(f'manifest/{run}/uuid/{number}', 16).hex()}.csv.cspk"


@dataclass
class Folder:
    """A dataset folder: file name -> bytes, plus what decrypting it must give."""

    files: dict[str, bytes]
    parts: list[tuple[str, bytes, int]]  # (name, plaintext, rows) of every data file
    manifest_plaintext: bytes
    decrypted: bytes  # what `cipherspark decrypt FOLDER OUT` writes


def spark_folder(run: str, dk: DataKey) -> Folder:
    """Three CSV parts as the Spark writer leaves them, plus files readers must ignore.

    Every run gets the same part names (those of the run "dataset"), so that one run's files
    and manifest can stand in for another's without a name telling them apart.
    """
    files: dict[str, bytes] = {}
    parts = []
    first = 0
    for number, rows in enumerate((5, 9, 3)):
        name = spark_name("dataset", number)
        text = csv_part(first, rows)
        first += rows
        files[name] = container(dk, CSV_HEADER_PRESENT, text, f"{run}/part-{number}")
        parts.append((name, text, rows))
    entries = [entry(name, files[name], rows) for name, _, rows in sorted(parts)]
    plaintext = manifest_json(entries)
    files[MANIFEST_NAME] = container(dk, MANIFEST_CONTENT_TYPE, plaintext, f"{run}/manifest")
    # Not data files (their names start with "_" or "."): no reader may take them for parts.
    files["_SUCCESS"] = b""
    files[f".{parts[0][0]}.crc"] = fixed_bytes(f"manifest/{run}/crc", 12)
    header_line = parts[0][1].split(b"\n", 1)[0] + b"\n"
    decrypted = header_line + b"".join(t[len(header_line) :] for _, t, _ in sorted(parts))
    return Folder(files, sorted(parts), plaintext, decrypted)


def encrypt_folder() -> Folder:
    """A folder as ``cipherspark encrypt SRC_FOLDER DST`` writes it: one part per source file."""
    sources = [
        ("données.csv", b"a,b\n1,2\n\n3,4\r\n\r\n"),  # blank lines are not records
        ("notes.txt", b"not csv: rows is 0\n"),
        ("people.csv", csv_part(0, 4)),
    ]
    files: dict[str, bytes] = {}
    parts = []
    for source, text in sources:
        content_type = CSV_HEADER_PRESENT if source.endswith(".csv") else BINARY
        name = source + ".cspk"
        files[name] = container(DATASET, content_type, text, f"encrypt/{source}")
        parts.append((name, text, count_rows(text, content_type)))
    plaintext = manifest_json([entry(n, files[n], rows) for n, _, rows in parts])
    files[MANIFEST_NAME] = container(DATASET, MANIFEST_CONTENT_TYPE, plaintext, "encrypt/manifest")
    # decrypt: parts in name order; a CSV part with a header drops its header line once a
    # previous CSV part has written one; other parts are copied whole.
    decrypted = sources[0][1] + sources[1][1] + sources[2][1].split(b"\n", 1)[1]
    return Folder(files, parts, plaintext, decrypted)


@dataclass
class Invalid:
    name: str
    description: str
    files: dict[str, bytes]
    error: str
    stage: str  # "folder", "manifest", "listing" or "part": which check refuses it
    # Bodies Tink must refuse: (file name, data key used to read it).
    tink_rejects: list[tuple[str, bytes]] = field(default_factory=list)
    # "should" would mark a check docs/format.md recommends and cipherspark does not make yet;
    # none is left (the manifest's binding to the parts' key is checked since manifest v2).
    conformance: str = "must"


def xor_at(data: bytes, offset: int, mask: int = 0x01) -> bytes:
    buf = bytearray(data)
    buf[offset] ^= mask
    return bytes(buf)


def invalid_vectors(base: Folder, other: Folder) -> list[Invalid]:
    names = [name for name, _, _ in base.parts]
    p0, p1, p2 = names
    manifest = base.files[MANIFEST_NAME]

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

    def with_files(edit: Callable[[dict[str, bytes]], None]) -> dict[str, bytes]:
        files = dict(base.files)
        edit(files)
        return files

    text1 = base.parts[1][1]
    reencrypted = container(DATASET, CSV_HEADER_PRESENT, text1, "dataset/part-1-again")
    assert len(reencrypted) == len(base.files[p1]) and reencrypted != base.files[p1]
    p0_data = base.files[p0]
    cut = p0_data[: header_length(p0_data) + S]  # segment 0 only: cut at a segment boundary
    entries = json.loads(base.manifest_plaintext)["parts"]
    other_key_manifest = container(
        OTHER_KEY,
        MANIFEST_CONTENT_TYPE,
        manifest_json([e for e in entries if e["name"] != p1]),
        "other-key/manifest",
    )
    ct_at = manifest.index(b"json;")
    ss_at = 12  # segment_size, in the fixed part of the header
    edited_s = manifest[:ss_at] + (S + 1).to_bytes(4, "big") + manifest[ss_at + 4 :]

    def m(plaintext: bytes, label: str, content_type: str = MANIFEST_CONTENT_TYPE) -> bytes:
        return container(DATASET, content_type, plaintext, f"dataset/{label}")

    no_digest = manifest_json(
        [{k: v for k, v in e.items() if k != "header_sha256"} for e in entries]
    )
    mh = header_length(manifest)
    return [
        # -- the folder as a whole
        Invalid(
            "no-data-files",
            "only a manifest listing no parts, and no data file",
            {MANIFEST_NAME: m(manifest_json([]), "empty-manifest")},
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
            changed(manifest=xor_at(manifest, len(manifest) - 1)),
            "IntegrityError",
            "manifest",
            [(MANIFEST_NAME, DATASET.key)],
        ),
        Invalid(
            "manifest-body-header-edited",
            "first salt byte of the manifest XOR 0x01",
            changed(manifest=xor_at(manifest, mh + 1)),
            "IntegrityError",
            "manifest",
            [(MANIFEST_NAME, DATASET.key)],
        ),
        Invalid(
            "manifest-truncated-at-segment-boundary",
            "the manifest's final segment removed",
            changed(manifest=manifest[: mh + S * ((len(manifest) - mh - 1) // S)]),
            "IntegrityError",
            "manifest",
            [(MANIFEST_NAME, DATASET.key)],
        ),
        Invalid(
            "manifest-content-type-edited",
            "manifest content type ...+json -> ...+jsoN",
            changed(manifest=manifest[:ct_at] + b"jsoN" + manifest[ct_at + 4 :]),
            "FormatError",
            "manifest",
        ),
        Invalid(
            "manifest-segment-size-edited",
            "manifest segment size 100 -> 101",
            changed(manifest=edited_s),
            "IntegrityError",
            "manifest",
            [(MANIFEST_NAME, DATASET.key)],
        ),
        Invalid(
            "manifest-under-another-data-key",
            "the dataset's header (key id, wrapped key) "
            "but a body encrypted under another data key",
            changed(
                manifest=container(
                    DATASET,
                    MANIFEST_CONTENT_TYPE,
                    base.manifest_plaintext,
                    "dataset/manifest",
                    key=STRAY,
                )
            ),
            "IntegrityError",
            "manifest",
            [(MANIFEST_NAME, DATASET.key)],
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
            "a genuine container under the dataset's key "
            "holding the manifest JSON, but of content type text/csv; header=present",
            changed(manifest=m(base.manifest_plaintext, "csv-typed", CSV_HEADER_PRESENT)),
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
            "manifest-version-2",
            "correctly encrypted, version 2",
            changed(manifest=m(manifest_json(entries, 2), "version-2")),
            "FormatError",
            "manifest",
        ),
        Invalid(
            "manifest-entry-without-digest",
            "correctly encrypted, entries lack header_sha256",
            changed(manifest=m(no_digest, "no-digest")),
            "FormatError",
            "manifest",
        ),
        # -- the listing: the folder's data files against the manifest
        Invalid("part-missing", f"{p1} removed", changed(p1=None), "IntegrityError", "listing"),
        Invalid(
            "part-renamed",
            f"{p1} renamed to part-00009.csv.cspk",
            with_files(lambda f: f.__setitem__("part-00009.csv.cspk", f.pop(p1))),
            "IntegrityError",
            "listing",
        ),
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
            changed(**{spark_name("other-run", 3): other.files[p0]}),
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
            f"{p1} encrypted again: same key, header and "
            "plaintext, hence same size, but another salt",
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
            "part-header-edited",
            f"content type of {p2}: header=present -> header=Present",
            changed(p2=base.files[p2].replace(b"=present", b"=Present", 1)),
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
        Invalid("part-empty", f"{p1} emptied", changed(p1=b""), "IntegrityError", "listing"),
        Invalid(
            "manifest-from-another-run",
            "the manifest of another dataset (same part names "
            "and sizes, another data key the reader can unwrap)",
            changed(manifest=other.files[MANIFEST_NAME]),
            "IntegrityError",
            "listing",
        ),
        Invalid(
            "manifest-under-another-key",
            f"{p1} removed and the manifest replaced by one "
            "listing the two remaining parts exactly, encrypted under a data key of another "
            "KMS key the reader can also unwrap",
            changed(p1=None, manifest=other_key_manifest),
            "IntegrityError",
            "listing",
        ),
        # -- a part's own authentication (the listing cannot see inside bodies)
        Invalid(
            "part-body-byte-flipped",
            f"last byte of {p1} (its final tag) XOR 0x01: size and header digest unchanged",
            changed(p1=xor_at(base.files[p1], len(base.files[p1]) - 1)),
            "IntegrityError",
            "part",
            [(p1, DATASET.key)],
        ),
    ]


def hexfiles(files: dict[str, bytes]) -> dict[str, str]:
    return {name: files[name].hex() for name in sorted(files)}


def check_tink_valid(folder: Folder) -> None:
    keys = {(k.key_id, k.wrapped): k.key for k in KEYS}
    plaintexts = {name: text for name, text, _ in folder.parts}
    plaintexts[MANIFEST_NAME] = folder.manifest_plaintext
    for name, text in plaintexts.items():
        data = folder.files[name]
        h = header_length(data)
        key_id_size = int.from_bytes(data[16:18], "big")
        key_id = data[18 : 18 + key_id_size].decode()
        wrapped_at = 18 + key_id_size
        wrapped = data[
            wrapped_at + 2 : wrapped_at
            + 2
            + int.from_bytes(data[wrapped_at : wrapped_at + 2], "big")
        ]
        key = keys[(key_id, wrapped)]
        segment_size = int.from_bytes(data[12:16], "big")
        if tink_decrypt(key, segment_size, data[h:], data[:h]) != text:
            raise SystemExit(f"Tink does not decrypt {name}")


def build() -> dict[str, object]:
    spark = spark_folder("dataset", DATASET)
    other = spark_folder("other-run", OTHER_RUN)
    valid = []
    for name, description, folder in [
        (
            "spark-3-parts",
            "three CSV parts as the Spark writer commits them, with a _SUCCESS "
            "marker and a hidden checksum file that are not parts",
            spark,
        ),
        (
            "encrypt-folder",
            "a folder encrypted by 'cipherspark encrypt' (a non-ASCII file "
            "name, blank CSV lines, a non-CSV part)",
            encrypt_folder(),
        ),
    ]:
        check_tink_valid(folder)
        valid.append(
            {
                "name": name,
                "description": description,
                "files": hexfiles(folder.files),
                "manifest_plaintext": folder.manifest_plaintext.decode("ascii"),
                "parts": [{"name": n, "plaintext": t.hex(), "rows": r} for n, t, r in folder.parts],
                "decrypted": folder.decrypted.hex(),
            }
        )
    check_tink_valid(other)
    invalid = []
    for vector in invalid_vectors(spark, other):
        tink = []
        for file_name, key in vector.tink_rejects:
            data = vector.files[file_name]
            h = header_length(data)
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
        invalid.append(
            {
                "name": vector.name,
                "description": vector.description,
                "files": hexfiles(vector.files),
                "stage": vector.stage,
                "error": vector.error,
                "conformance": vector.conformance,
                "tink": tink,
            }
        )
    return {
        "description": "cipherspark dataset manifest v1 vectors: folders (file name -> bytes) "
        "a reader must accept, and folders it must refuse with the named error; "
        "produced by make_manifest.py, checked with Tink before saving",
        "format_version": 1,
        "manifest_name": MANIFEST_NAME,
        "manifest_content_type": MANIFEST_CONTENT_TYPE,
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
