"""Single-use, short-lived nonces for attested key release (kept in the server's memory).

A nonce is issued to one app for one key and can be taken once. Its age when taken is checked
against the key policy's ``max_evidence_age_seconds``; nonces older than the longest age any
policy may allow are dropped. A restart forgets every outstanding nonce, which only makes the
workers ask again.

Outstanding nonces are bounded *per app*: an app that asks for more than ``per_app`` loses its
own oldest ones, never another app's. (Memory is bounded by the number of apps, which the
operator controls, times ``per_app``.)
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
        per_app: int = 1024,
    ) -> None:
        self._clock = clock
        self._lifetime = lifetime
        self._per_app = per_app
        self._lock = threading.Lock()
        # app -> nonce -> (key, issued at), oldest first.
        self._issued: dict[str, OrderedDict[bytes, tuple[str, float]]] = {}

    def _expire(self, app: str, now: float) -> OrderedDict[bytes, tuple[str, float]]:
        issued = self._issued.setdefault(app, OrderedDict())
        while issued:
            oldest = next(iter(issued.values()))
            if now - oldest[1] <= self._lifetime and len(issued) < self._per_app:
                break
            issued.popitem(last=False)
        return issued

    def issue(self, app: str, key: str) -> bytes:
        """A fresh random nonce for ``app``'s use of ``key``."""
        nonce = os.urandom(NONCE_BYTES)
        now = self._clock()
        with self._lock:
            self._expire(app, now)[nonce] = (key, now)
        return nonce

    def outstanding(self, app: str) -> int:
        """How many of ``app``'s nonces are held (issued, not taken, not yet dropped)."""
        with self._lock:
            return len(self._issued.get(app, ()))

    def take(self, nonce: bytes, app: str, key: str) -> float:
        """Consume ``nonce``; its age in seconds. ``AttestationError(nonce)`` if not valid.

        Only ``app``'s own nonces are looked at: another app's nonce is as unknown as a made-up
        one (and stays usable by that app).
        """
        now = self._clock()
        with self._lock:
            issued = self._issued.get(app)
            entry = None if issued is None else issued.pop(nonce, None)
        if entry is None or now - entry[1] > self._lifetime:
            raise AttestationError(
                "unknown, already used or expired nonce (or one issued to another app)", "nonce"
            )
        if entry[0] != key:
            raise AttestationError("the nonce was issued for another key", "nonce")
        return now - entry[1]
