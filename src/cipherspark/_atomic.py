"""Atomic publication of outputs, and files created safe from the start.

Every output is written under a fresh temporary name beside its destination, created
exclusively (``O_CREAT | O_EXCL | O_NOFOLLOW``) with its final mode, and renamed into place only
when complete. Nothing is ever written into a file that existed before, nothing is chmod-ed
afterwards, and a symbolic link at an output is refused (it could point anywhere).

``--overwrite`` replaces only what this tool wrote: a dataset folder (recognised by its
manifest), a container file, or, for plaintext outputs, a regular file. The replacement is one
``renameat2(RENAME_EXCHANGE)``: there is no moment with neither the old output nor the new.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Literal

from cipherspark.crypto.container import MAGIC
from cipherspark.crypto.manifest import MANIFEST_NAME
from cipherspark.errors import InputError, OutputExistsError

__all__ = [
    "Replaces",
    "atomic_output",
    "atomic_output_dir",
    "atomic_output_staged",
    "check_output",
    "create_file",
    "publish",
    "remove_path",
]

#: What ``--overwrite`` may replace at an output: ``"encrypted"``, a dataset folder or a container
#: file; ``"plaintext"``, also any regular file (the output of ``decrypt`` or ``generate``).
Replaces = Literal["encrypted", "plaintext"]

_EXCLUSIVE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return path.lstat()
    except FileNotFoundError:
        return None


def _is_container(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as f:
        return stat.S_ISREG(os.fstat(f.fileno()).st_mode) and f.read(len(MAGIC)) == MAGIC


def _refusal(path: Path, replaces: Replaces) -> str | None:
    """Why ``--overwrite`` must not replace what is at ``path`` (``None``: it may)."""
    st = _lstat(path)
    if st is None:
        return None
    if stat.S_ISLNK(st.st_mode):
        return _symlink_refusal(path)
    if stat.S_ISDIR(st.st_mode):
        manifest = path / MANIFEST_NAME
        if (st_m := _lstat(manifest)) is not None and stat.S_ISREG(st_m.st_mode):
            if _is_container(manifest):
                return None
        return (
            f"{path} is a folder that is not a cipherspark dataset (no {MANIFEST_NAME}): "
            "refusing to replace it, even with --overwrite"
        )
    if stat.S_ISREG(st.st_mode) and (replaces == "plaintext" or _is_container(path)):
        return None
    what = "regular file" if stat.S_ISREG(st.st_mode) else "file of another kind"
    return (
        f"{path} is a {what} that is not a cipherspark container: refusing to replace it, "
        "even with --overwrite"
    )


def _symlink_refusal(path: Path) -> str:
    return f"{path} is a symbolic link: refusing to write through or replace it"


def check_output(path: Path, overwrite: bool, *, replaces: Replaces = "encrypted") -> None:
    """Refuse an output that exists (unless ``overwrite`` and it is ours to replace, see
    :data:`Replaces`), a symbolic link at the output in any case, or a missing folder."""
    st = _lstat(path)
    if st is not None:
        if stat.S_ISLNK(st.st_mode):
            raise OutputExistsError(_symlink_refusal(path))
        if not overwrite:
            raise OutputExistsError(f"{path} exists already (pass --overwrite to replace it)")
        refusal = _refusal(path, replaces)
        if refusal is not None:
            raise OutputExistsError(refusal)
    if not path.parent.is_dir():
        raise InputError(f"the output's folder {path.parent} does not exist")


def remove_path(path: Path) -> None:
    """Remove a file or directory tree if present (a symbolic link itself, never its target)."""
    st = _lstat(path)
    if st is not None and stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _staging_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.cipherspark-{uuid.uuid4().hex[:12]}.tmp")


_libc: ctypes.CDLL | None
try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _renameat2 = _libc.renameat2
    _renameat2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    _renameat2.restype = ctypes.c_int
except (OSError, AttributeError):  # not glibc >= 2.28 / not Linux
    _libc = None


def _rename(src: Path, dst: Path, flags: int) -> None:
    """renameat2(2): RENAME_NOREPLACE fails if ``dst`` exists; RENAME_EXCHANGE swaps both."""
    if _libc is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    if _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(dst))


def publish(
    staging: Path, path: Path, overwrite: bool, *, replaces: Replaces = "encrypted"
) -> None:
    """Rename the complete ``staging`` file or folder to ``path``: the one place outputs appear,
    for the CLI and the Spark writer alike.

    Without ``overwrite`` the rename fails if anything (a file, a folder, a dangling link)
    appeared at ``path`` meanwhile. With it, what is there must still be ours to replace
    (:data:`Replaces`); it is exchanged with ``staging`` in one step, checked once more where
    it now lies (a folder swapped in between the check and the exchange is put back, intact),
    and only then removed.
    """
    st = _lstat(path)
    if st is not None and stat.S_ISLNK(st.st_mode):
        raise OutputExistsError(_symlink_refusal(path))
    if st is None or not overwrite:
        try:
            _rename(staging, path, _RENAME_NOREPLACE)
        except FileExistsError as exc:
            raise OutputExistsError(
                f"{path} appeared while writing (pass --overwrite to replace it)"
            ) from exc
        except OSError as exc:
            if exc.errno not in (errno.ENOSYS, errno.EINVAL):
                raise
            # No renameat2 here (or not on this file system): link(2) also refuses an existing
            # name, but only for files.
            if staging.is_dir():
                if path.exists() or path.is_symlink():
                    raise OutputExistsError(f"{path} appeared while writing") from exc
                os.rename(staging, path)
            else:
                try:
                    os.link(staging, path)
                except FileExistsError as exists:
                    raise OutputExistsError(f"{path} appeared while writing") from exists
                staging.unlink()
        return
    refusal = _refusal(path, replaces)
    if refusal is not None:
        raise OutputExistsError(refusal)
    try:
        _rename(staging, path, _RENAME_EXCHANGE)
    except OSError as exc:
        if exc.errno not in (errno.ENOSYS, errno.EINVAL):
            raise
        _publish_without_exchange(staging, path)
        return
    # ``staging`` now holds what was at ``path``.
    if _refusal(staging, replaces) is not None:
        _rename(staging, path, _RENAME_EXCHANGE)  # put it back; ours is at staging again
        raise OutputExistsError(f"{path} was replaced by something else while writing")
    remove_path(staging)


def _publish_without_exchange(staging: Path, path: Path) -> None:
    # Without RENAME_EXCHANGE a file still replaces a file atomically; a folder cannot replace
    # anything in one step, so the old one is moved aside first (a short gap, on such systems
    # only).
    if not staging.is_dir() and not path.is_dir():
        os.replace(staging, path)
        return
    old = _staging_name(path)
    os.rename(path, old)
    os.rename(staging, path)
    remove_path(old)


def _create(path: Path, mode: int) -> BinaryIO:
    """``path``, created now (never an existing file, never through a link) with ``mode``.

    The mode is given to open(2), so the file never exists with wider bits; the umask can only
    narrow it further.
    """
    return os.fdopen(os.open(path, _EXCLUSIVE, mode), "wb")


def create_file(path: Path, data: bytes, *, mode: int = 0o600, replace: bool = True) -> None:
    """Write ``data`` to a new file (``mode``, 0600 by default: for secrets and keys) and
    rename it to ``path``.

    Whatever was at ``path`` (a file, maybe hard-linked elsewhere or with wider bits, or a
    symbolic link) is replaced as a directory entry and never written into or followed. With
    ``replace=False`` the file is published with link(2), which raises ``FileExistsError`` if
    ``path`` exists: of two processes creating the same file, one fails.
    """
    tmp = _staging_name(path)
    try:
        with _create(tmp, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_output(
    path: Path, *, overwrite: bool, mode: int = 0o600, replaces: Replaces = "plaintext"
) -> Iterator[BinaryIO]:
    """A binary file that appears at ``path`` only if the block completes without error.

    It is created with ``mode`` (0600 unless the caller says otherwise: an output is the
    owner's until shown to be harmless) and, with ``overwrite``, replaces only what
    ``replaces`` allows.
    """
    with atomic_output_staged(path, overwrite=overwrite, mode=mode, replaces=replaces) as (f, _):
        yield f


@contextlib.contextmanager
def atomic_output_staged(
    path: Path, *, overwrite: bool, mode: int = 0o600, replaces: Replaces = "plaintext"
) -> Iterator[tuple[BinaryIO, Path]]:
    """:func:`atomic_output`, also giving the staging file's path (for a caller that reads
    back what it wrote before it is published)."""
    check_output(path, overwrite, replaces=replaces)
    staging = _staging_name(path)
    try:
        with _create(staging, mode) as f:
            yield f, staging
            f.flush()
            os.fsync(f.fileno())
        publish(staging, path, overwrite, replaces=replaces)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_output_dir(path: Path, *, overwrite: bool, mode: int = 0o755) -> Iterator[Path]:
    """A directory that appears at ``path``, complete, only if the block completes. With
    ``overwrite`` it replaces only a dataset folder or a container file."""
    check_output(path, overwrite)
    staging = _staging_name(path)
    staging.mkdir(mode=mode)
    try:
        yield staging
        publish(staging, path, overwrite)
    except BaseException:
        remove_path(staging)
        raise
