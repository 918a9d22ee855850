"""The CLI's input and output: results on stdout, progress on stderr, input files read whole.

Markup and highlighting are off: file names, key names and SQL are printed as they are (a ``[``
in a path must not be eaten as Rich markup). Rich looks ``sys.stdout`` up at each write, so one
console per stream serves every command (and pytest's capture).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console

from cipherspark.errors import InputError

__all__ = ["err", "out", "progress", "read_input", "warn"]

out = Console(highlight=False, markup=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, markup=False, soft_wrap=True)


def read_input(path: Path) -> bytes:
    """The bytes of a small input file (a policy, a quote); :class:`InputError` naming it."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc


def warn(message: str) -> None:
    """One ``cipherspark: warning: ...`` line on stderr (the command goes on)."""
    err.print(f"cipherspark: warning: {message}")


@contextmanager
def progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A transfer progress bar on stderr for large work on a terminal; silent otherwise."""
    if total < (64 << 20) or not err.is_terminal:
        yield lambda _n: None
        return
    # Imported here: rich.progress costs ~20 ms (python -X importtime) and only large transfers
    # on a terminal draw a bar; every other command, --help included, skips it.
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
