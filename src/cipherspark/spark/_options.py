"""The ``cipherspark_csv`` and ``cipherspark_text`` sources' options, parsed once into typed
values.

Spark hands a data source its options as strings. :class:`ReadOptions` and :class:`WriteOptions`
are what those strings mean, validated in one place: the readers, the writer, the schema
inference and :func:`~cipherspark.spark.encrypted_sql` (which re-reads a table with narrower
options) all work from these values, and :meth:`ReadOptions.to_options` is the one way back
to strings.

=================  ======================================================================
``path``           file or folder to read, folder to write (``load(path)`` / ``save(path)``)
``kms``            KMS URL (``file://...``); credentials come from the worker environment
``key``            (write) primary key that wraps the output's data key; (read) the key the
                   input must be under: a dataset or file under another key is refused
``datasetId``      (read) the dataset id the input folder's manifest must name
``manifestDigest`` (read) SHA-256 (hex) of the ``_manifest.cspk`` the folder must hold (of a
                   single file: of its header): the commit that was loaded. ``encrypted_sql``
                   sets it (and ``datasetGeneration``, that commit's generation, named when
                   it changed) on every relation it re-plans: a replaced dataset is refused
``header``         ``true`` / ``false``; when reading, defaults to what the container says
``inferSchema``    (read) ``true`` to infer column types from the first segment
``mode``           (read) ``PERMISSIVE`` (default) / ``DROPMALFORMED`` / ``FAILFAST``
``fileColumns``    (read) JSON list of all the file's columns, when the schema selects some
``partitionBytes`` (read) target plaintext bytes per partition, default 128 MiB
``minPartitions``  (read) the session's cores: partitions come in whole waves of this many
``countRows``      (read) ``true``: yield record counts (schema ``rows bigint``), not records
``pushedFilters``  (read) JSON filters rows must pass (set by ``encrypted_sql``; ``_filters``)
``unsafeSkipRegistry`` (read) ``true``: read the input even where the KMS's dataset registry
                   does not name it as the commit at its location (a copied, moved, replaced
                   or rolled-back dataset); docs/security.md
``segmentSize``    (write) ciphertext segment size, default 1 MiB
``wholetext``      (read, text) ``true``: one row per file holding all of it, as Spark's text
                   source (a file is then one partition)
``contentType``    (write, text) what the lines are: ``text`` (default, ``text/plain``) or
                   ``jsonLines`` (``application/x-ndjson``: what ``write_encrypted_json``
                   writes, so that readers and ``cipherspark sql`` know the table for JSON)
``schema``         (write, text) Spark DDL of the rows the lines hold, recorded in the
                   manifest (``write_encrypted_json`` sets it: the JSON's columns); the CSV
                   writer records the DataFrame's own schema
=================  ======================================================================

``header``, ``inferSchema``, ``mode``, ``fileColumns`` and ``countRows`` are CSV's alone.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from pyspark.sql.datasource import Filter

from cipherspark.crypto import (
    CONTENT_TYPE_JSON_LINES,
    CONTENT_TYPE_TEXT,
    DEFAULT_SEGMENT_SIZE,
)
from cipherspark.crypto.manifest import check_dataset_id
from cipherspark.errors import UsageError
from cipherspark.spark._csv import MODES
from cipherspark.spark._filters import filters_from_json, filters_to_json

__all__ = [
    "DEFAULT_PARTITION_BYTES",
    "FORMAT_NAME",
    "TEXT_FORMAT_NAME",
    "LoadPin",
    "ReadOptions",
    "WriteOptions",
]

FORMAT_NAME = "cipherspark_csv"
TEXT_FORMAT_NAME = "cipherspark_text"
#: The text writer's ``contentType`` values and the container content types they stand for.
TEXT_CONTENT_TYPES = {"text": CONTENT_TYPE_TEXT, "jsonLines": CONTENT_TYPE_JSON_LINES}
# Spark's own spark.sql.files.maxPartitionBytes default. A task streams its split a few segments
# at a time, so memory does not grow with it, while every task has a fixed cost (measured).
DEFAULT_PARTITION_BYTES = 128 << 20
_DIGEST = re.compile(r"[0-9a-f]{64}")


def _flag(options: Mapping[str, str], name: str) -> bool | None:
    value = options.get(name)
    if value is None:
        return None
    lowered = value.strip().lower()
    if lowered not in ("true", "false"):
        raise UsageError(f"option {name} must be true or false, not {value!r}")
    return lowered == "true"


def _int_option(options: Mapping[str, str], name: str, default: int) -> int:
    value = options.get(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError as exc:
        raise UsageError(f"option {name} must be an integer, not {value!r}") from exc
    if number <= 0:
        raise UsageError(f"option {name} must be positive")
    return number


def _column_list(value: str) -> tuple[str, ...]:
    try:
        names = json.loads(value)
    except ValueError as exc:
        raise UsageError("option fileColumns must be a JSON list of column names") from exc
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise UsageError("option fileColumns must be a JSON list of column names")
    return tuple(names)


def _dataset_id(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return check_dataset_id(value)
    except UsageError as exc:
        raise UsageError(f"option datasetId: {exc}") from exc


def _manifest_digest(value: str | None) -> str | None:
    if not value:
        return None
    if not _DIGEST.fullmatch(value):
        raise UsageError("option manifestDigest must be a SHA-256 digest (64 lowercase hex digits)")
    return value


def _required(options: Mapping[str, str], name: str) -> str:
    value = options.get(name)
    if not value:
        raise UsageError(f"the cipherspark data source needs the option {name!r}")
    return value


@dataclass(frozen=True)
class ReadOptions:
    """How to read one encrypted CSV relation. Everything a reader does comes from here (never
    from a query), which is why no state can pass from one query to the next."""

    path: str
    kms_url: str
    header: bool | None = None
    infer_schema: bool = False
    mode: str = "PERMISSIVE"
    file_columns: tuple[str, ...] | None = None
    partition_bytes: int = DEFAULT_PARTITION_BYTES
    min_partitions: int = 1
    count_rows: bool = False
    filters: tuple[Filter, ...] = ()
    #: The primary key the input must be under (option ``key``), if pinned.
    key_id: str | None = None
    #: The dataset id the input's manifest must name (option ``datasetId``), if pinned.
    dataset_id: str | None = None
    #: The SHA-256 of the manifest (of a single file: its header) the input must have now
    #: (option ``manifestDigest``): the commit that was loaded, if pinned.
    manifest_digest: str | None = None
    #: The generation of that commit (option ``datasetGeneration``), named when it changed.
    dataset_generation: int | None = None
    #: Read the input even if the dataset registry does not name it (``unsafeSkipRegistry``).
    unsafe_skip_registry: bool = False
    #: (text) One row per file (``wholetext``).
    wholetext: bool = False

    @classmethod
    def parse(cls, options: Mapping[str, str]) -> ReadOptions:
        """The options Spark passed, validated; :class:`UsageError` names a bad one."""
        mode = options.get("mode", "PERMISSIVE").upper()
        if mode not in MODES:
            raise UsageError(f"option mode must be one of {', '.join(MODES)}")
        columns = options.get("fileColumns")
        pushed = options.get("pushedFilters")
        try:
            filters = () if pushed is None else filters_from_json(pushed)
        except ValueError as exc:
            raise UsageError(f"option pushedFilters: {exc}") from exc
        digest = _manifest_digest(options.get("manifestDigest"))
        generation = options.get("datasetGeneration")
        if generation is not None and digest is None:
            raise UsageError("option datasetGeneration needs the option manifestDigest")
        return cls(
            path=_required(options, "path"),
            kms_url=_required(options, "kms"),
            header=_flag(options, "header"),
            infer_schema=bool(_flag(options, "inferSchema")),
            mode=mode,
            file_columns=None if columns is None else _column_list(columns),
            partition_bytes=_int_option(options, "partitionBytes", DEFAULT_PARTITION_BYTES),
            min_partitions=_int_option(options, "minPartitions", 1),
            count_rows=bool(_flag(options, "countRows")),
            filters=filters,
            key_id=options.get("key") or None,
            dataset_id=_dataset_id(options.get("datasetId")),
            manifest_digest=digest,
            dataset_generation=(
                None if generation is None else _int_option(options, "datasetGeneration", 1)
            ),
            unsafe_skip_registry=bool(_flag(options, "unsafeSkipRegistry")),
            wholetext=bool(_flag(options, "wholetext")),
        )

    def pinned_to(self, pin: LoadPin) -> ReadOptions:
        """These options, reading only the commit ``pin`` names (and, if it names one, only
        that dataset)."""
        return dataclasses.replace(
            self,
            manifest_digest=pin.digest,
            dataset_generation=pin.generation,
            dataset_id=pin.dataset_id if pin.dataset_id is not None else self.dataset_id,
        )

    def to_options(self) -> dict[str, str]:
        """The string options that :meth:`parse` reads back as this value (without ``path``,
        which ``load(path)`` sets)."""
        options = {
            "kms": self.kms_url,
            "inferSchema": str(self.infer_schema).lower(),
            "mode": self.mode,
            "partitionBytes": str(self.partition_bytes),
            "minPartitions": str(self.min_partitions),
        }
        if self.header is not None:
            options["header"] = str(self.header).lower()
        if self.file_columns is not None:
            options["fileColumns"] = json.dumps(list(self.file_columns))
        if self.count_rows:
            options["countRows"] = "true"
        if self.filters:
            options["pushedFilters"] = filters_to_json(self.filters)
        if self.key_id is not None:
            options["key"] = self.key_id
        if self.dataset_id is not None:
            options["datasetId"] = self.dataset_id
        if self.manifest_digest is not None:
            options["manifestDigest"] = self.manifest_digest
        if self.dataset_generation is not None:
            options["datasetGeneration"] = str(self.dataset_generation)
        if self.unsafe_skip_registry:
            options["unsafeSkipRegistry"] = "true"
        if self.wholetext:
            options["wholetext"] = "true"
        return options


@dataclass(frozen=True)
class LoadPin:
    """What a relation's read was planned over: the SHA-256 of the folder's ``_manifest.cspk``
    (of a single file: of its header, the digest a manifest entry records), and the dataset id
    and generation that manifest names (``None`` for a single file or a version 1 manifest).

    Every split carries it, so :func:`~cipherspark.spark.encrypted_sql` can pin the relations
    it re-plans to exactly what the DataFrame it narrows reads (:meth:`ReadOptions.pinned_to`).
    """

    digest: str
    dataset_id: str | None = None
    generation: int | None = None


@dataclass(frozen=True)
class WriteOptions:
    """How to write one encrypted CSV or text dataset."""

    path: str
    kms_url: str
    key_id: str
    header: bool = True
    segment_size: int = DEFAULT_SEGMENT_SIZE
    #: (text) The container content type of the lines written (option ``contentType``).
    content_type: str = CONTENT_TYPE_TEXT
    #: (text) The schema to record, canonical DDL (option ``schema``).
    schema: str | None = None

    @classmethod
    def parse(cls, options: Mapping[str, str]) -> WriteOptions:
        """The options Spark passed, validated; :class:`UsageError` names a bad one."""
        header = _flag(options, "header")
        return cls(
            path=_required(options, "path"),
            kms_url=_required(options, "kms"),
            key_id=_required(options, "key"),
            header=True if header is None else header,
            segment_size=_int_option(options, "segmentSize", DEFAULT_SEGMENT_SIZE),
            content_type=_content_type(options.get("contentType", "text")),
            schema=_schema_option(options.get("schema")),
        )


def _schema_option(value: str | None) -> str | None:
    from cipherspark._ddl import canonical_ddl

    return None if value is None else canonical_ddl(value)


def _content_type(value: str) -> str:
    if value not in TEXT_CONTENT_TYPES:
        raise UsageError(
            f"option contentType must be one of {', '.join(TEXT_CONTENT_TYPES)}, not {value!r}"
        )
    return TEXT_CONTENT_TYPES[value]
