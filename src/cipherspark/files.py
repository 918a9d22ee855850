"""Encrypt and decrypt files and Spark output directories, in constant memory.

Outputs are written under a temporary name and renamed only once every byte has been written
and, for decryption, authenticated: a failure leaves nothing behind. Decrypted plaintext is
created 0600, containers 0644 (less the umask); ``overwrite`` replaces only a dataset folder or a
container (and, for decryption, a regular file), never any other folder, and no output is
written through a symbolic link (:mod:`cipherspark._atomic`).

Decryption reads every input from one open descriptor per file: the size, the header that is
checked (against the dataset manifest's entry, and the key the caller pins) and every segment
that is decrypted come from that descriptor, so a file replaced after it was checked is never
the one decrypted.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cipherspark._atomic import atomic_output, atomic_output_dir, check_output
from cipherspark._dataset_registry import (
    check_file,
    check_folder,
    identity_for,
    register_file,
    register_folder,
    registered_at,
)
from cipherspark.crypto import (
    CONTENT_TYPE_BINARY,
    CONTENT_TYPE_CSV_HEADER,
    CONTENT_TYPE_JSON_LINES,
    CONTENT_TYPE_TEXT,
    DEFAULT_SEGMENT_SIZE,
    ContainerFile,
    ContainerHeader,
    EncryptingWriter,
    ExpectedPart,
)
from cipherspark.crypto._records import count_records
from cipherspark.crypto.manifest import (
    MANIFEST_NAME,
    DatasetIdentity,
    Manifest,
    describe_part,
    list_parts,
    open_dataset,
    write_manifest,
)
from cipherspark.errors import FormatError, InputError, IntegrityError, UsageError
from cipherspark.kms import KeyManagementService

__all__ = [
    "DecryptResult",
    "EncryptResult",
    "check_not_the_input",
    "decrypt_path",
    "encrypt_path",
    "guess_content_type",
    "verify_input",
]

Progress = Callable[[int], None]
_CHUNK = 1 << 20
# Containers are safe to share (storage is not trusted with anything else): the usual mode.
_CIPHERTEXT_MODE = 0o644
# Decrypted data is the owner's secret: 0600 from the moment the file exists, whatever the
# umask, so no other local user can open it while it is being written or after.
_PLAINTEXT_MODE = 0o600


@dataclass(frozen=True)
class EncryptResult:
    """What :func:`encrypt_path` wrote; ``dataset`` is the identity of a folder's dataset."""

    files: int
    plaintext_bytes: int
    ciphertext_bytes: int
    dataset: DatasetIdentity | None = None


@dataclass(frozen=True)
class DecryptResult:
    """What :func:`decrypt_path` wrote; ``dataset`` is the identity a folder's manifest names
    (``None`` for a single file, or a version 1 manifest)."""

    files: int
    plaintext_bytes: int
    dataset: DatasetIdentity | None = None


# By the name's last suffix, as Spark's readers take files: ``.json`` is JSON Lines, Spark's
# default for ``spark.read.json`` (a pretty-printed document needs ``multiLine`` there too).
_CONTENT_TYPES = {
    ".csv": CONTENT_TYPE_CSV_HEADER,
    ".json": CONTENT_TYPE_JSON_LINES,
    ".jsonl": CONTENT_TYPE_JSON_LINES,
    ".ndjson": CONTENT_TYPE_JSON_LINES,
    ".txt": CONTENT_TYPE_TEXT,
    ".text": CONTENT_TYPE_TEXT,
    ".log": CONTENT_TYPE_TEXT,
}


def guess_content_type(path: Path) -> str:
    """The content type a file's name suggests: CSV with a header (``.csv``), JSON Lines
    (``.json``, ``.jsonl``, ``.ndjson``), text (``.txt``, ``.text``, ``.log``), opaque bytes
    otherwise. ``encrypt --format`` overrides it."""
    return _CONTENT_TYPES.get(path.suffix.lower(), CONTENT_TYPE_BINARY)


def _input_files(src: Path) -> list[Path]:
    if not src.exists():
        raise InputError(f"{src} does not exist")
    if src.is_dir():
        parts = list_parts(src)
        if not parts:
            raise InputError(f"folder {src} holds no data files")
        return parts
    return [src]


def check_not_the_input(src: Path, dst: Path) -> None:
    """:class:`UsageError` if ``dst`` is ``src``, inside the folder ``src``, or a folder
    holding ``src``: writing there (``decrypt X X --overwrite``) would replace or mix into the
    only copy of the input."""
    source, target = src.resolve(), dst.resolve()
    if target == source:
        raise UsageError(f"the output {dst} is the input: write it elsewhere")
    if source in target.parents:
        raise UsageError(f"the output {dst} is inside the input folder {src}: write it elsewhere")
    if target in source.parents:
        raise UsageError(f"the output {dst} holds the input {src}: write it elsewhere")


def _check_plaintext_input(files: list[Path], src: Path) -> None:
    """:class:`UsageError` if an input file is a cipherspark container already (encrypting it
    again is almost always a slip: a second envelope nobody asked for)."""
    from cipherspark.crypto.container import is_container

    for part in files:
        if is_container(part):
            raise UsageError(
                f"{part} is already encrypted (a cipherspark container); to encrypt it once "
                "more, say so (--allow-encrypted-input, allow_encrypted_input=True)"
            )
    if src.is_dir() and (src / MANIFEST_NAME).exists():
        raise UsageError(
            f"{src} is already an encrypted dataset (it has {MANIFEST_NAME}); to encrypt it "
            "once more, say so (--allow-encrypted-input, allow_encrypted_input=True)"
        )


def _read_chunks(path: Path, progress: Progress | None) -> Iterator[bytes]:
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                if progress is not None:
                    progress(len(chunk))
                yield chunk
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc


def encrypt_path(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    kms: KeyManagementService,
    key_id: str,
    *,
    content_type: str | None = None,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
    overwrite: bool = False,
    progress: Progress | None = None,
    allow_encrypted_input: bool = False,
    schema: str | None = None,
) -> EncryptResult:
    """Encrypt a file to a container, or a folder of files to a folder of containers.

    A file gets a fresh data key from ``kms`` wrapped under primary key ``key_id``. A folder is
    a dataset: one fresh data key for all its parts (each with its own salt) and an encrypted
    manifest (:mod:`cipherspark.crypto.manifest`) so that a removed or swapped part is detected.
    The dataset gets a new id, or, replacing a dataset folder with ``overwrite``, that
    dataset's id and its next generation. ``progress`` receives plaintext byte counts as they
    are read. The output may be neither the input nor inside it, and an input that is encrypted
    already is refused unless ``allow_encrypted_input``.

    ``schema`` (Spark DDL: CSV and JSON Lines only) is recorded, canonical, in the dataset's
    manifest, so that readers take its types instead of inferring them; a file given a schema
    becomes a dataset folder of one part (a single container has no manifest to hold it).
    """
    src_path, dst_path = Path(src), Path(dst)
    files = _input_files(src_path)
    check_not_the_input(src_path, dst_path)
    if not allow_encrypted_input:
        _check_plaintext_input(files, src_path)
    if schema is not None:
        schema = _check_schema(schema, files, content_type)
    check_output(dst_path, overwrite)
    data_key = kms.generate_data_key(key_id)
    # Read before anything is written: the compare-and-swap's previous record.
    previous = registered_at(kms, dst_path)
    plain = cipher = 0
    identity = None
    if src_path.is_dir() or schema is not None:
        identity = identity_for(
            dst_path, key_id, overwrite=overwrite, previous=previous, data_key_for=_unwrapper(kms)
        )
        with atomic_output_dir(dst_path, overwrite=overwrite) as staging:
            entries = []
            for part in files:
                target = staging / (part.name + ".cspk")
                header = _header(part, key_id, data_key.wrapped, content_type, segment_size)
                p, c, rows = _encrypt_one(
                    part, target, header, data_key.plaintext, progress, overwrite=False
                )
                entries.append(describe_part(target, rows))
                plain += p
                cipher += c
            write_manifest(
                staging,
                Manifest(tuple(sorted(entries, key=lambda e: e.name)), identity, schema),
                _header(files[0], key_id, data_key.wrapped, None, segment_size),
                data_key.plaintext,
            )
            register_folder(
                kms,
                dst_path,
                staging,
                identity,
                previous=previous,
                wrapped_key=data_key.wrapped,
                data_key=data_key.plaintext,
            )
    else:
        header = _header(src_path, key_id, data_key.wrapped, content_type, segment_size)

        def register(header_sha256: str) -> None:
            register_file(
                kms, dst_path, header, header_sha256, previous=previous, data_key=data_key.plaintext
            )

        plain, cipher, _ = _encrypt_one(
            src_path,
            dst_path,
            header,
            data_key.plaintext,
            progress,
            overwrite=overwrite,
            before_publish=register,
        )
    return EncryptResult(len(files), plain, cipher, identity)


def _check_schema(schema: str, files: list[Path], content_type: str | None) -> str:
    """``schema`` in canonical form, if it can describe ``files``: :class:`UsageError` for DDL
    that is not, for content other than CSV and JSON Lines, and for CSV whose first line has
    another number of fields (caught here, not when a query first reads it)."""
    import csv

    from cipherspark._ddl import canonical_ddl, ddl_columns

    canonical = canonical_ddl(schema)
    columns = len(ddl_columns(canonical))
    for part in files:
        kind = content_type or guess_content_type(part)
        if kind == CONTENT_TYPE_JSON_LINES:
            continue
        if not kind.startswith("text/csv"):
            raise UsageError(
                f"--schema describes CSV or JSON Lines columns; {part.name} is {kind} "
                "(name the format with --format csv or json)"
            )
        try:
            with open(part, encoding="utf-8", errors="replace", newline="") as f:
                first = next(csv.reader([f.readline()]), [])
        except OSError as exc:
            raise InputError(f"cannot read {part}: {exc.strerror}") from exc
        if first and len(first) != columns:
            raise UsageError(
                f"--schema names {columns} column(s), but the first line of {part.name} has "
                f"{len(first)} field(s)"
            )
    return canonical


def _unwrapper(kms: KeyManagementService) -> Callable[[ContainerHeader], bytes]:
    """The header -> data key function of ``kms``, unwrapping each wrapped key once."""
    keys: dict[tuple[str, bytes], bytes] = {}

    def data_key_for(header: ContainerHeader) -> bytes:
        cache_key = (header.key_id, header.wrapped_key)
        if cache_key not in keys:
            keys[cache_key] = kms.unwrap_data_key(header.key_id, header.wrapped_key)
        return keys[cache_key]

    return data_key_for


def _header(
    src: Path, key_id: str, wrapped: bytes, content_type: str | None, segment_size: int
) -> ContainerHeader:
    return ContainerHeader(
        key_id=key_id,
        wrapped_key=wrapped,
        segment_size=segment_size,
        content_type=content_type or guess_content_type(src),
    )


def _encrypt_one(
    src: Path,
    dst: Path,
    header: ContainerHeader,
    data_key: bytes,
    progress: Progress | None,
    *,
    overwrite: bool,
    before_publish: Callable[[str], None] | None = None,
) -> tuple[int, int, int]:
    """Encrypt ``src`` to ``dst``; return plaintext bytes, ciphertext bytes and CSV records.

    ``before_publish`` is called with the container's header digest once it is complete and
    before it appears at ``dst`` (it registers the file); if it raises, nothing appears."""
    plain = records = 0
    carry = b""
    with atomic_output(
        dst, overwrite=overwrite, mode=_CIPHERTEXT_MODE, replaces="encrypted"
    ) as out:
        writer = EncryptingWriter(out, header, data_key)
        for chunk in _read_chunks(src, progress):
            writer.write(chunk)
            plain += len(chunk)
            # Count whole lines only; the partial last line waits for the next chunk.
            data = carry + chunk
            cut = data.rfind(b"\n") + 1
            records += count_records(data[:cut])
            carry = data[cut:]
        writer.close()
        cipher = out.tell()
        if before_publish is not None:
            before_publish(writer.header_sha256)
    records += count_records(carry)
    if header.csv_has_header and records:
        records -= 1
    return plain, cipher, records if header.content_type.startswith("text/csv") else 0


def _skip_first_line(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Drop everything up to and including the first newline of a chunked stream."""
    skipping = True
    for chunk in chunks:
        if skipping:
            newline = chunk.find(b"\n")
            if newline < 0:
                continue
            skipping = False
            chunk = chunk[newline + 1 :]
        if chunk:
            yield chunk


def decrypt_path(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    kms: KeyManagementService,
    *,
    key_id: str | None = None,
    dataset_id: str | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    unsafe_skip_registry: bool = False,
) -> DecryptResult:
    """Decrypt a container, or a folder of containers (Spark part files), to one file.

    Parts are concatenated in name order; for CSV parts with a header, the header is written
    once. A folder must carry a dataset manifest and hold exactly the parts it lists, all under
    the manifest's data key; each part is then opened once and checked against its entry before
    it is decrypted from that same descriptor. ``key_id`` refuses an input under another
    primary key, ``dataset_id`` a folder that is another dataset. The input must be the commit
    the KMS's dataset registry names at its location (:mod:`cipherspark.kms.registry`) unless
    ``unsafe_skip_registry``. The output appears only after every segment of every part has
    authenticated. ``progress`` receives plaintext byte counts.
    """
    src_path, dst_path = Path(src), Path(dst)
    if not src_path.exists():
        raise InputError(f"{src_path} does not exist")
    check_not_the_input(src_path, dst_path)
    check_output(dst_path, overwrite, replaces="plaintext")
    data_key_for = _unwrapper(kms)
    identity = None
    expected: list[ExpectedPart | None]
    if src_path.is_dir():
        dataset = open_dataset(src_path, data_key_for, key_id=key_id, dataset_id=dataset_id)
        if not unsafe_skip_registry:
            check_folder(kms, src_path, dataset)
        identity = dataset.identity
        paths = [Path(p.path) for p in dataset.parts]
        expected = list(dataset.parts)
    else:
        if dataset_id is not None:
            raise UsageError(f"{src_path} is a single file: it has no dataset id to check")
        # Decrypted only if it is still the file checked (its size, header and digest).
        paths, expected = [src_path], [_single_file(src_path, kms, key_id, unsafe_skip_registry)]
    pinned = _pinned(data_key_for, key_id)
    written = 0
    # True once a CSV part with a header has written bytes (hence its header line): later such
    # parts drop their first line. An empty part (no header line at all) does not count.
    csv_header_written = False
    with atomic_output(
        dst_path, overwrite=overwrite, mode=_PLAINTEXT_MODE, replaces="plaintext"
    ) as out:
        for part, entry in zip(paths, expected, strict=True):
            try:
                with ContainerFile(part, pinned, expected=entry) as container:
                    has_header = container.header.csv_has_header
                    chunks: Iterable[bytes] = container.iter_segments()
                    if csv_header_written and has_header:
                        chunks = _skip_first_line(chunks)
                    for chunk in chunks:
                        out.write(chunk)
                        written += len(chunk)
                        if progress is not None:
                            progress(len(chunk))
                        if chunk and has_header:
                            csv_header_written = True
            except (InputError, FormatError, IntegrityError) as exc:
                # Name the part: a folder can hold many.
                message = str(exc)
                raise type(exc)(message if str(part) in message else f"{part}: {message}") from exc
    return DecryptResult(len(paths), written, identity)


def _pinned(
    data_key_for: Callable[[ContainerHeader], bytes], key_id: str | None
) -> Callable[[ContainerHeader], bytes]:
    """``data_key_for``, refusing (before any unwrap) a header under another key than ``key_id``."""
    if key_id is None:
        return data_key_for

    def data_key(header: ContainerHeader) -> bytes:
        if header.key_id != key_id:
            raise IntegrityError(
                f"the file is under key {header.key_id!r}, not {key_id!r} "
                "(it may have been replaced by another file)"
            )
        return data_key_for(header)

    return data_key


def verify_input(
    src: str | os.PathLike[str],
    kms: KeyManagementService,
    *,
    key_id: str | None = None,
    dataset_id: str | None = None,
    unsafe_skip_registry: bool = False,
) -> DatasetIdentity | None:
    """Check ``src`` as a reader will, without decrypting its data: a folder's manifest, key
    binding and listing, a file's header, and (unless ``unsafe_skip_registry``) that it is the
    commit the dataset registry names at its location; refuse an input under another key than
    ``key_id`` or a folder that is not dataset ``dataset_id``. Returns the folder's dataset
    identity.

    This is an early, cheap refusal (the job commands make it before starting Spark); it does
    not replace the readers' own checks, which are made again where the data is decrypted.
    """
    path = Path(src)
    if not path.exists():
        raise InputError(f"{path} does not exist")
    if path.is_dir():
        dataset = open_dataset(path, _unwrapper(kms), key_id=key_id, dataset_id=dataset_id)
        if not unsafe_skip_registry:
            check_folder(kms, path, dataset)
        return dataset.identity
    if dataset_id is not None:
        raise UsageError(f"{path} is a single file: it has no dataset id to check")
    _single_file(path, kms, key_id, unsafe_skip_registry)
    return None


def _single_file(
    path: Path, kms: KeyManagementService, key_id: str | None, unsafe_skip_registry: bool
) -> ExpectedPart:
    """The single encrypted file at ``path`` as it is now, checked: under ``key_id`` if given
    (the more specific refusal, so first), and the registered commit at its location."""
    try:
        part = ExpectedPart.of(path)
    except (InputError, FormatError, IntegrityError) as exc:
        # Name the file, as the per-part errors of decrypting do.
        message = str(exc)
        raise type(exc)(message if str(path) in message else f"{path}: {message}") from exc
    if key_id is not None and part.header.key_id != key_id:
        raise IntegrityError(
            f"{path}: the file is under key {part.header.key_id!r}, not {key_id!r} "
            "(it may have been replaced by another file)"
        )
    if not unsafe_skip_registry:
        check_file(kms, path, part)
    return part
