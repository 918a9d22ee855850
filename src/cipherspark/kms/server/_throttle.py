"""Throttling of failed logins, per source address and per claimed app id (leaky buckets).

Each failed login adds one to its source's bucket and to its app id's bucket; buckets drain at
``capacity`` per ``window``. While a bucket is full, logins from that source (or for that app
id) are refused before any password hashing, with the seconds until one more attempt fits.
Successful logins add nothing, and credentials already verified (the service's cache) are not
throttled, so a client that works keeps working while someone guesses beside it.

The tables are bounded (least recently touched entries go first), so random app ids or many
sources cannot grow them without limit. Callers pass app ids already reduced to a bounded label.
A refusal is worth an audit line once per source and app id per minute (:meth:`note`), not once
per refused request: the refusals themselves cost the server nothing else.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["LoginThrottle", "ThrottleLimit"]


@dataclass(frozen=True)
class ThrottleLimit:
    """At most ``capacity`` failed logins in a burst, refilling at ``capacity`` per
    ``window`` seconds."""

    capacity: int
    window: float

    @property
    def rate(self) -> float:
        """Failed logins forgiven per second."""
        return self.capacity / self.window


class _Buckets:
    def __init__(self, limit: ThrottleLimit, max_entries: int) -> None:
        self.limit = limit
        self._max = max_entries
        # key -> (level, last update)
        self._levels: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _level(self, key: str, now: float) -> float:
        found = self._levels.get(key)
        if found is None:
            return 0.0
        level, then = found
        return max(0.0, level - (now - then) * self.limit.rate)

    def wait(self, key: str, now: float) -> float:
        """Seconds until one more failure fits under the capacity (0: it fits now)."""
        excess = self._level(key, now) + 1 - self.limit.capacity
        return 0.0 if excess <= 0 else excess / self.limit.rate

    def add(self, key: str, now: float) -> None:
        self._levels[key] = (self._level(key, now) + 1, now)
        self._levels.move_to_end(key)
        while len(self._levels) > self._max:
            self._levels.popitem(last=False)


class LoginThrottle:
    """Failed-login buckets per source address and per claimed app id.

    Defaults: 30 failures per source and 10 per app id in a burst, each refilling over a
    minute.
    """

    def __init__(
        self,
        *,
        per_source: ThrottleLimit = ThrottleLimit(30, 60.0),
        per_app: ThrottleLimit = ThrottleLimit(10, 60.0),
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 10_000,
    ) -> None:
        self._sources = _Buckets(per_source, max_entries)
        self._apps = _Buckets(per_app, max_entries)
        self._clock = clock
        self._lock = threading.Lock()
        self._noted: OrderedDict[tuple[str | None, str | None], float] = OrderedDict()
        self._max = max_entries

    def retry_after(self, source: str | None, app_id: str | None) -> int | None:
        """Whole seconds to wait before a login from ``source`` for ``app_id`` is tried, or
        ``None`` when it may be tried now."""
        now = self._clock()
        with self._lock:
            wait = max(
                self._sources.wait(source, now) if source else 0.0,
                self._apps.wait(app_id, now) if app_id else 0.0,
            )
        # (less a hair, so float error does not round 20.000000001 s up to 21)
        return None if wait <= 0 else max(1, math.ceil(wait - 1e-6))

    def failed(self, source: str | None, app_id: str | None) -> None:
        """Count one failed login."""
        now = self._clock()
        with self._lock:
            if source:
                self._sources.add(source, now)
            if app_id:
                self._apps.add(app_id, now)

    def note(self, source: str | None, app_id: str | None) -> bool:
        """Whether a refusal for (``source``, ``app_id``) should be audited now: the first one,
        then at most one a minute."""
        now = self._clock()
        key = (source, app_id)
        with self._lock:
            last = self._noted.get(key)
            if last is not None and now - last < 60.0:
                return False
            self._noted[key] = now
            self._noted.move_to_end(key)
            while len(self._noted) > self._max:
                self._noted.popitem(last=False)
        return True
