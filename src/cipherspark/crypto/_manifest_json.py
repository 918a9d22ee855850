"""The manifest document's one encoding: canonical JSON, parsed strictly.

A manifest is accepted only in the exact bytes its writer produces (``json.dumps`` with sorted
keys, no whitespace, ASCII escapes): a document has one encoding, so its digest names it, and
no reader can see a member a second parser would see differently (a duplicate key, trailing
bytes, ``1.0`` for ``1``, a string for a number). The checks here are the structure's; what the
document says about the folder is checked in :mod:`cipherspark.crypto.manifest`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from cipherspark._ddl import MAX_DDL_CHARS, canonical_ddl
from cipherspark.errors import FormatError, UsageError

__all__ = ["MAX_GENERATION", "canonical", "check_part_name", "parse_document"]

MAX_GENERATION = (1 << 63) - 1
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX32 = re.compile(r"[0-9a-f]{32}")
_TOP = {
    1: {"parts", "version"},
    2: {"dataset", "parts", "version"},
    3: {"dataset", "parts", "schema", "version"},
}
_ENTRY = {"header_sha256", "name", "rows", "size"}
_DATASET = {"generation", "id", "key_id"}


class _Malformed(ValueError):
    """One reason a document is refused (worded for the user; never holds row data)."""


def canonical(doc: object) -> bytes:
    """The canonical encoding of ``doc``: sorted keys, no whitespace, ASCII (``\\uXXXX``)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _Malformed(f"member {key!r} appears twice")
        seen[key] = value
    return seen


def _no_float(text: str) -> Any:
    raise _Malformed("a number is not an integer")


def _no_constant(text: str) -> Any:
    raise _Malformed(f"{text} is not JSON")


def _integer(value: object, what: str, low: int, high: int | None = None) -> int:
    # bool is an int in Python, but true is not a number in JSON.
    if type(value) is not int or value < low or (high is not None and value > high):
        raise _Malformed(f"{what} is not an integer in range")
    return value


def _members(value: object, expected: set[str], what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Malformed(f"{what} is not an object")
    if set(value) != expected:
        raise _Malformed(f"{what} must have exactly the members {', '.join(sorted(expected))}")
    return value


def check_part_name(name: object) -> str:
    """A part name as the folder listing can hold it: a plain file name, not hidden."""
    if (
        not isinstance(name, str)
        or not name
        or name.startswith(("_", "."))
        or "/" in name
        or "\0" in name
        or len(name.encode("utf-8", "surrogatepass")) > 255
    ):
        raise _Malformed("a part name is not a data file's name")
    try:
        name.encode()
    except UnicodeEncodeError:
        raise _Malformed("a part name is not valid Unicode") from None
    return name


def _entry(value: object) -> dict[str, Any]:
    entry = _members(value, _ENTRY, "a part entry")
    check_part_name(entry["name"])
    _integer(entry["size"], "a part's size", 0)
    _integer(entry["rows"], "a part's rows", 0)
    digest = entry["header_sha256"]
    if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
        raise _Malformed("a part's header_sha256 is not 64 lowercase hex digits")
    return entry


def _dataset(value: object) -> dict[str, Any]:
    dataset = _members(value, _DATASET, "dataset")
    if not isinstance(dataset["id"], str) or not _HEX32.fullmatch(dataset["id"]):
        raise _Malformed("the dataset id is not 32 lowercase hex digits")
    key_id = dataset["key_id"]
    if not isinstance(key_id, str) or not 0 < len(key_id.encode("utf-8", "replace")) <= 255:
        raise _Malformed("the dataset's key_id is not a key name")
    _integer(dataset["generation"], "the dataset's generation", 1, MAX_GENERATION)
    return dataset


def _schema(value: object) -> str:
    # Recorded by cipherspark's writers in the one canonical DDL spelling (cipherspark._ddl),
    # so that the document keeps one encoding and every reader parses the schema alike.
    if not isinstance(value, str) or not 0 < len(value) <= MAX_DDL_CHARS:
        raise _Malformed("its schema is not a DDL string")
    try:
        canonical = canonical_ddl(value)
    except UsageError:
        raise _Malformed("its schema is not Spark DDL") from None
    if canonical != value:
        raise _Malformed("its schema is not in canonical DDL form")
    return value


def _parse(data: bytes, version: int) -> dict[str, Any]:
    if not data.isascii():
        raise _Malformed("it is not ASCII")
    try:
        doc = json.loads(
            data.decode("ascii"),
            object_pairs_hook=_pairs,
            parse_float=_no_float,
            parse_constant=_no_constant,
        )
    except _Malformed:
        raise
    except ValueError as exc:  # JSONDecodeError, or an integer too long to convert
        raise _Malformed("it is not JSON") from exc
    doc = _members(doc, _TOP[version], "the document")
    if type(doc["version"]) is not int or doc["version"] != version:
        raise _Malformed(f"its version is not {version}, as its content type says")
    if version >= 2:
        _dataset(doc["dataset"])
    if version == 3:
        _schema(doc["schema"])
    if not isinstance(doc["parts"], list):
        raise _Malformed("parts is not an array")
    names = [_entry(entry)["name"] for entry in doc["parts"]]
    if len(set(names)) != len(names):
        raise _Malformed("it lists a part name twice")
    if version >= 2 and names != sorted(names):
        raise _Malformed("its parts are not in name order")
    if canonical(doc) != data:
        raise _Malformed("it is not in canonical form (whitespace, order or escapes)")
    return doc


def parse_document(data: bytes, version: int) -> dict[str, Any]:
    """The document ``data`` of manifest version ``version`` (1 to 3), checked member by member
    and for its canonical form; :class:`FormatError` saying why otherwise."""
    try:
        return _parse(data, version)
    except _Malformed as exc:
        raise FormatError(f"the dataset manifest is malformed: {exc}") from None
    except RecursionError:
        raise FormatError("the dataset manifest is malformed: it is nested too deeply") from None
