"""Regenerate ``manifest_v3.json``: dataset folders with version 3 manifests (version 2 and the
dataset's recorded schema, canonical Spark DDL), valid and invalid.

Run from the repository root (needs ``cryptography`` and ``tink``)::

    .venv/bin/python docs/vectors/manifest-v3/make_manifest.py [OUTPUT_DIR]

Built from ``docs/format.md`` ("Recorded schema") alone, with the helpers of
``../manifest-v2/make_manifest.py`` and ``../manifest-v1/make_manifest.py`` (loaded by path),
never importing cipherspark. Deterministic, as the other generators; Tink decrypts every
container of the valid folders, and refuses each body an invalid vector lists, before anything
is written.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "container-v1"))
from make_kat import output_dir, write_json  # noqa: E402


def _load(folder: str, name: str) -> ModuleType:
    """Another generator (same file name as this one, hence by path)."""
    spec = importlib.util.spec_from_file_location(name, HERE.parent / folder / "make_manifest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


v2 = _load("manifest-v2", "manifest_v2_generator")
v1 = v2.v1
Folder, Invalid = v2.Folder, v2.Invalid
DATASET, OTHER_RUN, OTHER_KEY = v2.DATASET, v2.OTHER_RUN, v2.OTHER_KEY
KEYS = [DATASET, OTHER_RUN, OTHER_KEY]
MANIFEST_NAME = v2.MANIFEST_NAME
CSV = v2.CSV
JSON_LINES = "application/x-ndjson"
OUTPUT_NAME = "manifest_v3.json"
CONTENT_TYPE = "application/vnd.cipherspark.manifest+json; version=3"
CONTENT_TYPE_V2 = v2.CONTENT_TYPE

# The columns of v1.csv_part (id,name,job,age), as a writer records them: canonical DDL.
PEOPLE = "`id` INT, `name` STRING, `job` STRING, `age` INT"
# One of each construct the canonical form spells (quoted names with a backquote, nesting).
NESTED = (
    "`id` BIGINT, `who``s` STRUCT<`name`: STRING, `tags`: ARRAY<STRING>>, "
    "`pay` DECIMAL(12,2), `days` MAP<STRING, DATE>"
)
ID = v2.ID
JSON_ID = v2.dataset_id("v3/json")


def document(
    entries: list[dict[str, object]], key_id: str, ds_id: str, schema: object, generation: int = 1
) -> dict[str, object]:
    """A version 3 document: version 2's members and the schema."""
    doc = v2.document(entries, key_id, ds_id, generation)
    return {**doc, "schema": schema, "version": 3}


def spark_folder() -> Folder:
    """Version 2's three Spark parts, committed by a version 3 manifest recording their
    columns."""
    base = v2.spark_folder("dataset", DATASET, ID)
    files = dict(base.files)
    entries = [v1.entry(name, files[name], rows) for name, _, rows in base.parts]
    plaintext = v2.encode(document(entries, DATASET.key_id, ID, PEOPLE))
    files[MANIFEST_NAME] = v1.container(DATASET, CONTENT_TYPE, plaintext, "v3/spark/manifest")
    return Folder(files, base.parts, plaintext, base.decrypted)


def json_folder() -> Folder:
    """A JSON Lines file encrypted with a schema (``encrypt FILE --schema``): a folder of one
    part, named after the file."""
    text = (
        b'{"id":1,"who`s":{"name":"ann","tags":["a"]},"pay":10.50,"days":{"x":"2024-02-29"}}\n'
        b'{"id":2,"who`s":null,"pay":null,"days":{}}\n'
    )
    name = "people.json.cspk"
    files = {name: v1.container(DATASET, JSON_LINES, text, "v3/json/part")}
    entries = [v1.entry(name, files[name], 0)]
    plaintext = v2.encode(document(entries, DATASET.key_id, JSON_ID, NESTED))
    files[MANIFEST_NAME] = v1.container(DATASET, CONTENT_TYPE, plaintext, "v3/json/manifest")
    return Folder(files, [(name, text, 0)], plaintext, text)


def invalid_vectors(base: Folder) -> list[Invalid]:
    doc = json.loads(base.manifest_plaintext)
    p0, p1, _ = (name for name, _, _ in base.parts)

    def with_manifest(plaintext: bytes, label: str, content_type: str = CONTENT_TYPE) -> dict:
        files = dict(base.files)
        files[MANIFEST_NAME] = v1.container(DATASET, content_type, plaintext, f"v3/invalid/{label}")
        return files

    def schema(value: object, label: str) -> dict:
        return with_manifest(v2.encode({**doc, "schema": value}), label)

    without = {k: v for k, v in doc.items() if k != "schema"}
    manifest = base.files[MANIFEST_NAME]
    flipped = dict(base.files)
    flipped[MANIFEST_NAME] = v1.xor_at(manifest, len(manifest) - 1)
    missing = dict(base.files)
    del missing[p1]
    body_flipped = dict(base.files)
    body_flipped[p0] = v1.xor_at(base.files[p0], len(base.files[p0]) - 1)
    m = "manifest"
    return [
        Invalid(
            "manifest-byte-flipped",
            "last byte of the manifest (its final tag, hence the schema's authentication) XOR 0x01",
            flipped,
            "IntegrityError",
            m,
            tink_rejects=[(MANIFEST_NAME, DATASET.key)],
        ),
        Invalid(
            "version-3-without-schema",
            "a version 3 document without its schema member",
            with_manifest(v2.encode(without), "no-schema"),
            "FormatError",
            m,
        ),
        Invalid(
            "schema-in-a-version-2-document",
            "the schema member in a version 2 document (and container)",
            with_manifest(
                v2.encode({**doc, "version": 2}), "v2-with-schema", content_type=CONTENT_TYPE_V2
            ),
            "FormatError",
            m,
        ),
        Invalid(
            "version-3-document-in-a-version-2-container",
            "the valid version 3 document in a container of the version 2 content type",
            with_manifest(base.manifest_plaintext, "v3-in-v2", content_type=CONTENT_TYPE_V2),
            "FormatError",
            m,
        ),
        Invalid(
            "version-2-document-in-a-version-3-container",
            "a version 2 document (no schema) in a container of the version 3 content type",
            with_manifest(v2.encode({**without, "version": 2}), "v2-in-v3"),
            "FormatError",
            m,
        ),
        Invalid(
            "schema-not-a-string",
            "the schema is the number 4",
            schema(4, "number"),
            "FormatError",
            m,
        ),
        Invalid(
            "schema-empty", "the schema is the empty string", schema("", "empty"), "FormatError", m
        ),
        Invalid(
            "schema-not-canonical",
            "the same columns as a user would write them: 'id int, name string, job string, "
            "age int' (valid Spark DDL, not the canonical spelling)",
            schema("id int, name string, job string, age int", "lower-case"),
            "FormatError",
            m,
        ),
        Invalid(
            "schema-not-canonical-spacing",
            "the canonical columns joined by ',' without a space",
            schema(PEOPLE.replace(", ", ","), "spacing"),
            "FormatError",
            m,
        ),
        Invalid(
            "schema-unknown-type",
            "a column of type FROB",
            schema("`id` FROB", "unknown-type"),
            "FormatError",
            m,
        ),
        Invalid(
            "schema-duplicate-column",
            "two columns whose names differ only in case (Spark refuses them)",
            schema("`id` INT, `ID` INT", "duplicate"),
            "FormatError",
            m,
        ),
        Invalid(
            "schema-decimal-out-of-range",
            "a DECIMAL(39,2) column (Spark's precision is at most 38)",
            schema("`id` DECIMAL(39,2)", "decimal"),
            "FormatError",
            m,
        ),
        Invalid(
            "schema-not-null",
            "a column marked NOT NULL (recorded schemas are nullable, as file sources read)",
            schema("`id` INT NOT NULL", "not-null"),
            "FormatError",
            m,
        ),
        Invalid("part-missing", f"{p1} removed", missing, "IntegrityError", "listing"),
        Invalid(
            "part-body-byte-flipped",
            f"last byte of {p0} (its final tag) XOR 0x01: size and header digest unchanged",
            body_flipped,
            "IntegrityError",
            "part",
            tink_rejects=[(p0, DATASET.key)],
        ),
    ]


def check_tink_valid(folder: Folder) -> None:
    """Tink decrypts every container of the folder to its plaintext."""
    saved = v1.KEYS
    v1.KEYS = KEYS
    try:
        v1.check_tink_valid(folder)
    finally:
        v1.KEYS = saved


def build() -> dict[str, object]:
    spark = spark_folder()
    valid = []
    for name, description, folder, expect in [
        (
            "spark-3-parts-with-schema",
            "three CSV parts as the Spark writer commits them, recording the DataFrame's "
            "columns; read with the key and dataset id pinned",
            spark,
            {"key_id": DATASET.key_id, "dataset_id": ID},
        ),
        (
            "encrypt-json-file-with-schema",
            "a JSON Lines file encrypted with --schema: a dataset folder of one part whose "
            "schema quotes a backquote in a name and nests a struct, an array and a map",
            json_folder(),
            {},
        ),
    ]:
        check_tink_valid(folder)
        vector = v2.valid_vector(name, description, folder, expect)
        vector["schema"] = json.loads(folder.manifest_plaintext)["schema"]
        valid.append(vector)
    invalid = [v2.invalid_vector(v) for v in invalid_vectors(spark)]
    return {
        "description": "cipherspark dataset manifest v3 vectors (version 2 and a recorded "
        "schema): folders (file name -> bytes) a reader given the pins in 'expect' must accept, "
        "with the schema they record, and folders it must refuse with the named error; "
        "produced by make_manifest.py, checked with Tink before saving",
        "format_version": 3,
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
