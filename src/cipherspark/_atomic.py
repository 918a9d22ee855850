"""Atomic publication of outputs: write under a temporary name, rename only on success."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from cipherspark.errors import InputError, OutputExistsError

__all__ = ["atomic_output", "atomic_output_dir", "check_output", "publish", "remove_path"]


def check_output(path: Path, overwrite: bool) -> None:
    """Raise :class:`OutputExistsError` if ``path`` exists and ``overwrite`` is false."""
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists already (pass --overwrite to replace it)")
    if not path.parent.is_dir():
        raise InputError(f"the output's folder {path.parent} does not exist")


def remove_path(path: Path) -> None:
    """Remove a file or directory tree if present."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _staging_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.cipherspark-{uuid.uuid4().hex[:12]}.tmp")


def publish(staging: Path, path: Path, overwrite: bool) -> None:
    """Rename the complete ``staging`` file or folder to ``path`` (replacing it only with
    ``overwrite``): the one place outputs appear, for the CLI and the Spark writer alike."""
    if path.exists():
        if not overwrite:
            raise OutputExistsError(
                f"{path} appeared while writing (pass --overwrite to replace it)"
            )
        if (path.is_dir() and not path.is_symlink()) or staging.is_dir():
            # os.replace cannot replace a non-empty directory, nor a file by a directory:
            # move the old one aside first.
            old = _staging_name(path)
            os.replace(path, old)
            os.replace(staging, path)
            remove_path(old)
            return
    os.replace(staging, path)


@contextlib.contextmanager
def atomic_output(path: Path, *, overwrite: bool) -> Iterator[BinaryIO]:
    """A binary file that appears at ``path`` only if the block completes without error."""
    check_output(path, overwrite)
    staging = _staging_name(path)
    try:
        with open(staging, "xb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        publish(staging, path, overwrite)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_output_dir(path: Path, *, overwrite: bool) -> Iterator[Path]:
    """A directory that appears at ``path``, complete, only if the block completes."""
    check_output(path, overwrite)
    staging = _staging_name(path)
    staging.mkdir()
    try:
        yield staging
        publish(staging, path, overwrite)
    except BaseException:
        remove_path(staging)
        raise
