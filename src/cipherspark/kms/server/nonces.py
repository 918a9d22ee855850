"""Single-use, short-lived nonces for attested key release (kept in the server's memory).

A nonce is issued to one app for one key and can be taken once. Its age when taken is checked
against the key policy's ``max_evidence_age_seconds``; nonces older than the longest age any
policy may allow are dropped. A restart forgets every outstanding nonce, which only makes the
workers ask again.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from cipherspark.attestation.policy import MAX_EVIDENCE_AGE_LIMIT
from cipherspark.errors import AttestationError

__all__ = ["NONCE_BYTES", "NonceStore"]

NONCE_BYTES = 32


class NonceStore:
    """Issues nonces bound to (app, key) and takes each back at most once."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        lifetime: float = MAX_EVIDENCE_AGE_LIMIT,
        limit: int = 100_000,
    ) -> None:
        self._clock = clock
        self._lifetime = lifetime
        self._limit = limit
        self._lock = threading.Lock()
        self._issued: OrderedDict[bytes, tuple[str, str, float]] = OrderedDict()

    def _expire(self, now: float) -> None:
        while self._issued:
            oldest = next(iter(self._issued.values()))
            if now - oldest[2] <= self._lifetime and len(self._issued) < self._limit:
                break
            self._issued.popitem(last=False)

    def issue(self, app: str, key: str) -> bytes:
        """A fresh random nonce for ``app``'s use of ``key``."""
        nonce = os.urandom(NONCE_BYTES)
        now = self._clock()
        with self._lock:
            self._expire(now)
            self._issued[nonce] = (app, key, now)
        return nonce

    def take(self, nonce: bytes, app: str, key: str) -> float:
        """Consume ``nonce``; its age in seconds. ``AttestationError(nonce)`` if not valid."""
        now = self._clock()
        with self._lock:
            self._expire(now)
            entry = self._issued.pop(nonce, None)
        if entry is None:
            raise AttestationError("unknown, already used or expired nonce", "nonce")
        if entry[:2] != (app, key):
            raise AttestationError("the nonce was issued for another key or app", "nonce")
        return now - entry[2]
