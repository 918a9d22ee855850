"""The published container vectors (docs/vectors/container-v1): invalid ones, and the generators.

The valid known-answer vectors (``kat_v1.json``) are checked byte for byte, with cipherspark and
with Tink, by test_tink_interop.py. Here every vector of ``invalid_v1.json`` must be refused by
both cipherspark readers with exactly the error class it names, releasing no byte that is not
the base vector's plaintext, and Tink must give the verdict the vector records. The generators
must reproduce the published files byte for byte without cipherspark being importable: the
vectors are a second implementation of docs/format.md, not a recording of this one.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tink import core

from cipherspark import errors
from cipherspark.crypto import ContainerFile, decrypt_stream
from tests.crypto.test_tink_interop import tink_decrypt

ROOT = Path(__file__).parents[2]
VECTORS_DIR = ROOT / "docs" / "vectors" / "container-v1"
GENERATORS = {"kat_v1.json": "make_kat.py", "invalid_v1.json": "make_invalid.py"}


def _load(name: str) -> list[dict[str, Any]]:
    doc = json.loads((VECTORS_DIR / name).read_text(encoding="utf-8"))
    assert doc["format_version"] == 1
    return list(doc["vectors"])


KATS = {v["name"]: v for v in _load("kat_v1.json")}
INVALID = _load("invalid_v1.json")
TINK_CHECKED = [v for v in INVALID if v["tink"] is not None]


def error_class(vector: dict[str, Any]) -> type[errors.CipherSparkError]:
    cls: type[errors.CipherSparkError] = getattr(errors, vector["error"])
    assert issubclass(cls, errors.CipherSparkError)
    return cls


def base_plaintext(vector: dict[str, Any]) -> bytes:
    return bytes.fromhex(KATS[vector["base"]]["plaintext"])


# Each thing the spec says a reader detects, by the vector names that exercise it. A vector
# renamed or dropped from the generator fails here rather than leaving a gap unnoticed.
REQUIRED = {
    "flipped tag": {"tag-flipped-segment-0", "tag-flipped-last-segment"},
    "truncation at a segment boundary": {
        "truncated-at-segment-boundary",
        "truncated-to-first-segment",
    },
    "reordered segments": {"segments-reordered-1-2", "segments-reordered-2-3"},
    "duplicated segment": {"segment-duplicated"},
    "dropped segment": {"segment-dropped"},
    "missing last-segment flag": {"last-segment-not-flagged"},
    "early last-segment flag": {"middle-segment-flagged-last"},
    "extension": {
        "extended-by-last-segment",
        "extended-by-one-byte",
        "extended-after-full-last-segment",
    },
    "wrong key": {"wrong-key-one-bit", "wrong-key-zero", "wrong-key-of-another-vector"},
    "body header": {"body-header-length-byte", "salt-edited", "nonce-prefix-edited"},
    "magic": {"magic-first-byte", "magic-last-byte"},
    "version": {"version-0", "version-2"},
    "algorithm": {"algorithm-0", "algorithm-2"},
    "header_length": {
        "header-length-plus-one",
        "header-length-minus-one",
        "header-length-15",
        "header-length-65535",
    },
    "segment_size": {
        "header-segment-size-101",
        "segment-size-56",
        "segment-size-0",
        "segment-size-64mib-plus-1",
    },
    "key_id": {
        "header-key-id-edited",
        "key-id-length-past-header",
        "key-id-empty",
        "key-id-256-bytes",
        "key-id-not-utf8",
    },
    "wrapped_key": {
        "header-wrapped-key-edited",
        "wrapped-key-length-plus-one",
        "wrapped-key-empty",
        "wrapped-key-4097-bytes",
    },
    "content_type": {
        "header-content-type-edited",
        "content-type-length-minus-one",
        "content-type-not-ascii",
        "content-type-256-bytes",
    },
    "truncated header": {
        "truncated-inside-magic",
        "truncated-inside-fixed-fields",
        "truncated-inside-variable-fields",
        "empty-file",
    },
}


def test_invalid_vectors_cover_every_detected_change() -> None:
    names = [v["name"] for v in INVALID]
    assert len(set(names)) == len(names)
    missing = {
        what: sorted(wanted - set(names))
        for what, wanted in REQUIRED.items()
        if not wanted <= set(names)
    }
    assert not missing
    for vector in INVALID:
        assert vector["base"] in KATS
        assert vector["stage"] == ("body" if vector["error"] == "IntegrityError" else "header")
        error_class(vector)


@pytest.mark.parametrize("vector", INVALID, ids=lambda v: v["name"])
def test_decrypt_stream_refuses(vector: dict[str, Any]) -> None:
    key = bytes.fromhex(vector["data_key"])
    released = bytearray()
    with pytest.raises(errors.CipherSparkError) as raised:
        for chunk in decrypt_stream(io.BytesIO(bytes.fromhex(vector["container"])), lambda _h: key):
            released += chunk
    assert type(raised.value) is error_class(vector), repr(raised.value)
    # Segments that authenticated before the failure may have been yielded; they can only be
    # the base vector's own plaintext, from its start.
    assert base_plaintext(vector).startswith(bytes(released))
    if vector["stage"] == "header":
        assert not released


@pytest.mark.parametrize("vector", INVALID, ids=lambda v: v["name"])
def test_container_file_refuses(vector: dict[str, Any], tmp_path: Path) -> None:
    """The random-access reader (Spark splits) refuses too, opening or reading all segments."""
    path = tmp_path / "vector.cspk"
    path.write_bytes(bytes.fromhex(vector["container"]))
    key = bytes.fromhex(vector["data_key"])
    with pytest.raises(errors.CipherSparkError) as raised:
        container = ContainerFile(str(path), key)
        container.read_segments(0, container.segment_count)
    assert type(raised.value) is error_class(vector), repr(raised.value)


@pytest.mark.parametrize("vector", TINK_CHECKED, ids=lambda v: v["name"])
def test_tink_verdict(vector: dict[str, Any]) -> None:
    """Tink, given the body with the header bytes as associated data, says what the file says.

    "invalid": Tink refuses too. "valid": a header rule alone refuses the vector; Tink, which
    does not read the header, decrypts it. "prefix": Tink stops at the first full-size segment
    that authenticates as last and ignores the bytes after it, where cipherspark refuses.
    """
    tink = vector["tink"]
    container = bytes.fromhex(vector["container"])
    key = bytes.fromhex(vector["data_key"])
    aad, body = container[: tink["header_length"]], container[tink["header_length"] :]
    if tink["result"] == "invalid":
        with pytest.raises(core.TinkError):
            tink_decrypt(key, tink["segment_size"], body, aad)
        return
    expected = base_plaintext(vector)
    if tink["result"] == "prefix":
        expected = expected[: tink["plaintext_length"]]
    else:
        assert tink["result"] == "valid"
    assert tink_decrypt(key, tink["segment_size"], body, aad) == expected


def test_tink_verdicts_cover_the_body_changes() -> None:
    """Every change to the body, and every authenticated header edit, has Tink's verdict."""
    for vector in INVALID:
        if vector["stage"] == "body":
            assert vector["tink"] is not None, vector["name"]
            assert vector["tink"]["result"] in ("invalid", "prefix"), vector["name"]


def run_generator(script: Path, output: Path) -> None:
    """Run a vector generator into ``output`` with cipherspark made unimportable."""
    code = (
        "import runpy, sys\n"
        "sys.modules['cipherspark'] = None  # any import of cipherspark now fails\n"
        "script, output = sys.argv[1], sys.argv[2]\n"
        "sys.path.insert(0, str(__import__('pathlib').Path(script).parent))\n"
        "sys.argv = [script, output]\n"
        "runpy.run_path(script, run_name='__main__')\n"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(script), str(output)],
        check=True,
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )


@pytest.mark.parametrize("published", sorted(GENERATORS))
def test_generator_reproduces_the_published_file(published: str, tmp_path: Path) -> None:
    run_generator(VECTORS_DIR / GENERATORS[published], tmp_path)
    assert (tmp_path / published).read_bytes() == (VECTORS_DIR / published).read_bytes()
