"""Migrating Intel BigDL PPML's encrypted files to cipherspark datasets (``migrate bigdl``).

Every input file is verified before anything is written (its HMAC over the whole ciphertext,
which BigDL itself never checks); one failure refuses the whole migration, naming the file.
Then each file is decrypted again, its MAC recomputed on the way, and re-encrypted into a
cipherspark container under a fresh data key from the cipherspark KMS; a folder becomes a
dataset with its authenticated manifest. The output is staged and renamed into place only when
complete: on any failure nothing is left behind. Plaintext never touches the disk.

BigDL's encrypted Parquet (Parquet Modular Encryption, files starting ``PARE``) follows the same
rules and becomes cipherspark's encrypted Parquet (:mod:`cipherspark.jobs._bigdl_parquet`,
imported only for such input: it needs pyarrow). A folder of both kinds is refused.

No Spark: BigDL's files are not splittable (one CBC stream per file), so one process reads them;
its Parquet is decrypted and re-encrypted by pyarrow, row group by row group.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Literal

from cipherspark._atomic import atomic_output, atomic_output_dir, check_output
from cipherspark._dataset_registry import (
    identity_for,
    register_file,
    register_folder,
    registered_at,
)
from cipherspark.crypto import DEFAULT_SEGMENT_SIZE, ContainerHeader, EncryptingWriter
from cipherspark.crypto._bigdl import BigDLFile, BigDLKeys, Layout
from cipherspark.crypto._records import count_records
from cipherspark.crypto.manifest import (
    DatasetIdentity,
    Manifest,
    describe_part,
    write_manifest,
)
from cipherspark.errors import CipherSparkError, InputError, IntegrityError
from cipherspark.files import guess_content_type
from cipherspark.kms import KeyManagementService

if TYPE_CHECKING:
    from cipherspark.jobs._bigdl_parquet import BigDLParquet, ParquetLayout

__all__ = [
    "BigDLSource",
    "FileCheck",
    "MigrateResult",
    "bigdl_inputs",
    "check_bigdl",
    "migrate_bigdl",
]

Progress = Callable[[int], None]

# What Spark and BigDL leave beside the part files: the success marker, BigDL's .meta (a data
# key that append mode overwrites: every file's own header is what counts), Hadoop checksums.
_NOT_DATA = ("_SUCCESS", ".meta")


@dataclass(frozen=True)
class BigDLSource:
    """How to read the BigDL input: its key service, and what the older layouts need.

    ``v1_data_key`` is the wrapped data key text of v1 files (BigDL 2.1/2.2's data-key file);
    ``allow_unauthenticated`` admits nativeaescbc files, which have no MAC.
    """

    keys: BigDLKeys
    v1_data_key: str | None = None
    allow_unauthenticated: bool = False

    def open(self, path: Path) -> BigDLFile:
        """``path`` opened as a BigDL file (layout detected, keys derived)."""
        return BigDLFile(
            path,
            self.keys,
            v1_data_key=self.v1_data_key,
            allow_unauthenticated=self.allow_unauthenticated,
        )


@dataclass(frozen=True)
class FileCheck:
    """One input file's verification: its layout (``None`` if unreadable) and the outcome.

    ``verified`` is false with ``problem`` set when it failed, and false with no problem for a
    nativeaescbc file, which cannot be verified at all, or an AES_GCM_CTR_V1 Parquet file, whose
    page data has no MAC.
    """

    path: Path
    size: int
    layout: Layout | ParquetLayout | None
    verified: bool
    problem: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the file may be migrated."""
        return self.problem is None


@dataclass(frozen=True)
class MigrateResult:
    """What :func:`migrate_bigdl` wrote; ``unverified`` are nativeaescbc inputs (no MAC) and
    AES_GCM_CTR_V1 Parquet inputs (no MAC on page data). ``dataset`` is ``None`` for a file and
    for Parquet (an encrypted Parquet table has no manifest)."""

    files: int
    plaintext_bytes: int
    ciphertext_bytes: int
    dataset: DatasetIdentity | None
    unverified: tuple[Path, ...]


def bigdl_inputs(src: Path) -> list[Path]:
    """The BigDL files of ``src``: itself, or a folder's data files (``_SUCCESS``, ``.meta``,
    ``.crc`` and other hidden names left out, as Hadoop leaves them out), in name order."""
    if not src.exists():
        raise InputError(f"{src} does not exist")
    if not src.is_dir():
        return [src]
    try:
        entries = sorted(src.iterdir())
    except OSError as exc:
        raise InputError(f"cannot read folder {src}: {exc.strerror}") from exc
    files = [
        p
        for p in entries
        if p.is_file()
        and p.name not in _NOT_DATA
        and not p.name.startswith(("_", "."))
        and not p.name.endswith(".crc")
    ]
    if not files:
        raise InputError(f"folder {src} holds no BigDL data files")
    return files


_InputKind = Literal["cbc", "parquet"]

# The first and last four bytes of a Parquet file: PARE with an encrypted footer, PAR1 without.
_PARQUET_MAGICS = (b"PARE", b"PAR1")


def _looks_like_parquet(path: Path) -> bool:
    """Whether ``path`` starts or ends like a Parquet file. BigDL's CBC files never start so
    (v2: a length <= 376, v1: 0x80) and end with a random MAC; one end is enough, so that a
    damaged Parquet file is reported as one."""
    try:
        with path.open("rb") as f:
            head = f.read(4)
            size = f.seek(0, os.SEEK_END)
            f.seek(max(size - 4, 0))
            tail = f.read(4)
    except OSError:
        return False  # reported by the CBC reader, which names the file and the reason
    return head in _PARQUET_MAGICS or tail in _PARQUET_MAGICS


def _input_kind(src: Path, files: list[Path]) -> _InputKind:
    """Whether the input is BigDL CBC files or BigDL Parquet: a folder of both is refused (they
    become different outputs, a dataset folder and a Parquet table)."""
    parquet = [p for p in files if _looks_like_parquet(p)]
    if not parquet:
        return "cbc"
    if len(parquet) < len(files):
        other = next(p for p in files if p not in parquet)
        raise InputError(
            f"{src} mixes Parquet files ({parquet[0].name}) and other files ({other.name}): "
            "migrate BigDL's Parquet and its CBC files from separate folders; nothing written"
        )
    return "parquet"


def _parquet_input(src: Path, source: BigDLSource) -> BigDLParquet:
    from cipherspark.jobs._bigdl_parquet import BigDLParquet

    return BigDLParquet.for_input(
        src,
        source.keys,
        v1_data_key=source.v1_data_key,
        allow_unauthenticated=source.allow_unauthenticated,
    )


def _failed(path: Path, exc: CipherSparkError) -> FileCheck:
    size = path.stat().st_size if path.exists() else 0
    return FileCheck(path, size, None, False, str(exc))


def check_bigdl(
    src: Path, source: BigDLSource, *, progress: Progress | None = None
) -> list[FileCheck]:
    """Verify every BigDL file of ``src`` without writing anything; one :class:`FileCheck` each.

    CBC files are checked without decrypting (MAC and padding); Parquet files are decrypted
    in full (every AES-GCM tag). A file that fails (format, key, MAC) is reported, not raised:
    the caller sees them all. What concerns the input as a whole raises: a folder mixing CBC
    and Parquet, and for Parquet a missing or malformed ``.meta``.
    """
    files = bigdl_inputs(src)
    checks = []
    if _input_kind(src, files) == "parquet":
        parquet = _parquet_input(src, source)
        for path in files:
            try:
                layout = parquet.verify(path, progress)
                checks.append(FileCheck(path, path.stat().st_size, layout, layout.authenticated))
            except CipherSparkError as exc:
                checks.append(_failed(path, exc))
        return checks
    for path in files:
        try:
            with source.open(path) as bigdl:
                bigdl.verify(progress)
                checks.append(FileCheck(path, bigdl.size, bigdl.layout, bigdl.layout.authenticated))
        except CipherSparkError as exc:
            checks.append(_failed(path, exc))
    return checks


def _part_name(path: Path) -> str:
    """``part-00000-....csv.cbc`` -> ``part-00000-....csv.cspk``."""
    return path.name.removesuffix(".cbc") + ".cspk"


def _encrypt_into(
    chunks: Iterable[bytes], out: BinaryIO, header: ContainerHeader, data_key: bytes
) -> tuple[int, int, str]:
    """Encrypt ``chunks`` into ``out``; return plaintext bytes, CSV records (less a header)
    and the container's header digest."""
    writer = EncryptingWriter(out, header, data_key)
    plain = records = 0
    carry = b""
    for chunk in chunks:
        writer.write(chunk)
        plain += len(chunk)
        # Whole lines only: the partial last line waits for the next chunk.
        data = carry + chunk
        cut = data.rfind(b"\n") + 1
        records += count_records(data[:cut])
        carry = data[cut:]
    writer.close()
    records += count_records(carry)
    if header.csv_has_header and records:
        records -= 1
    rows = records if header.content_type.startswith("text/csv") else 0
    return plain, rows, writer.header_sha256


def migrate_bigdl(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    kms: KeyManagementService,
    key_id: str,
    source: BigDLSource,
    *,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
    overwrite: bool = False,
    progress: Progress | None = None,
    register: bool = True,
) -> MigrateResult:
    """Verify every BigDL file of ``src``, then re-encrypt them to ``dst`` under ``key_id``.

    A file becomes one container; a folder becomes a dataset folder (one fresh data key, a
    manifest). The content type is guessed from the name without ``.cbc`` (``.csv``: CSV with
    a header), as ``cipherspark encrypt`` guesses it. ``progress`` receives ciphertext byte
    counts of both passes (twice the inputs' size in all). ``register=False`` leaves the KMS's
    dataset registry alone: for private, short-lived copies (``cipherspark.ppml``'s staging)
    that no reader resolves through the registry and that would otherwise leave stale records.

    BigDL Parquet (a file, or a folder of parts with its ``.meta``) becomes cipherspark's
    encrypted Parquet at ``dst``, a file or a folder of the same part names, read by
    :func:`cipherspark.spark.read_encrypted_parquet` and ``cipherspark sql``. Encrypted
    Parquet tables have no registry record, so ``register`` does not apply to them.
    """
    src_path, dst_path = Path(src), Path(dst)
    files = bigdl_inputs(src_path)
    check_output(dst_path, overwrite)
    checks = check_bigdl(src_path, source, progress=progress)
    failed = [c for c in checks if not c.ok]
    if failed:
        others = f" (and {len(failed) - 1} more file(s))" if len(failed) > 1 else ""
        raise IntegrityError(f"refusing to migrate: {failed[0].problem}{others}; nothing written")
    unverified = tuple(c.path for c in checks if not c.verified)
    if _input_kind(src_path, files) == "parquet":
        # Verified above with one decryption; this second one is what is written (a file
        # changed since fails its AES-GCM tags there, and the staged output is removed).
        plain, cipher = _parquet_input(src_path, source).migrate(
            src_path, files, dst_path, kms, key_id, overwrite=overwrite, progress=progress
        )
        return MigrateResult(len(files), plain, cipher, None, unverified)
    data_key = kms.generate_data_key(key_id)

    def header_for(name: str) -> ContainerHeader:
        return ContainerHeader(
            key_id=key_id,
            wrapped_key=data_key.wrapped,
            segment_size=segment_size,
            content_type=guess_content_type(Path(name.removesuffix(".cbc"))),
        )

    # Read before anything is written: the compare-and-swap's previous record.
    previous = registered_at(kms, dst_path)
    plain = cipher = 0
    if not src_path.is_dir():
        header = header_for(src_path.name)
        with source.open(src_path) as bigdl, atomic_output(dst_path, overwrite=overwrite) as out:
            plain, _, digest = _encrypt_into(
                bigdl.plaintext(progress, verified_earlier=True), out, header, data_key.plaintext
            )
            cipher = out.tell()
            if register:
                register_file(
                    kms, dst_path, header, digest, previous=previous, data_key=data_key.plaintext
                )
        return MigrateResult(1, plain, cipher, None, unverified)

    identity = identity_for(
        dst_path,
        key_id,
        overwrite=overwrite,
        previous=previous,
        data_key_for=lambda h: kms.unwrap_data_key(h.key_id, h.wrapped_key),
    )
    with atomic_output_dir(dst_path, overwrite=overwrite) as staging:
        entries = []
        for path in files:
            target = staging / _part_name(path)
            header = header_for(path.name)
            with source.open(path) as bigdl, open(target, "xb") as out:
                # check_bigdl verified it on another descriptor; this pass recomputes the MAC
                # and raises before the last chunk if the file changed since (the staging
                # folder is then removed).
                chunks = bigdl.plaintext(progress, verified_earlier=True)
                p, rows, _ = _encrypt_into(chunks, out, header, data_key.plaintext)
                out.flush()
                os.fsync(out.fileno())
                cipher += out.tell()
            plain += p
            entries.append(describe_part(target, rows))
        write_manifest(
            staging,
            Manifest(tuple(sorted(entries, key=lambda e: e.name)), identity),
            header_for(files[0].name),
            data_key.plaintext,
        )
        if register:
            register_folder(
                kms,
                dst_path,
                staging,
                identity,
                previous=previous,
                wrapped_key=data_key.wrapped,
                data_key=data_key.plaintext,
            )
    return MigrateResult(len(files), plain, cipher, identity, unverified)
