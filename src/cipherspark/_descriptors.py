"""Reads from one open file descriptor, never re-opening a path.

Readers that check a file and then decrypt it do both from one descriptor (``pread`` at
offsets), so a file replaced in between is never the one decrypted (docs/format.md, "Verify
where you decrypt"); this is the one helper they share.
"""

from __future__ import annotations

import os

__all__ = ["read_at"]


def read_at(fd: int, size: int, offset: int) -> bytes:
    """Up to ``size`` bytes of ``fd`` at ``offset`` (fewer only at the end of the file):
    ``os.pread`` may return less than asked before the end, so it is called until done."""
    chunks = []
    while size > 0:
        chunk = os.pread(fd, size, offset)
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
        offset += len(chunk)
    return b"".join(chunks)
