"""Running an operation so that it leaves exactly one audit line and one metrics count, whether
it succeeds or fails; and what an audit line may say about inputs that failed validation."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from cipherspark.errors import AttestationError, CipherSparkError, UsageError
from cipherspark.kms.base import validate_key_name
from cipherspark.kms.server.audit import AuditLog

__all__ = ["APP_ID", "Outcome", "Recorder", "app_label", "digest", "key_label"]

T = TypeVar("T")
#: What the server's app ids look like ('app-' and 16 hex digits).
APP_ID = re.compile(r"app-[0-9a-f]{16}")


def digest(data: str) -> str:
    """``sha256:`` and the hex SHA-256 of ``data`` (UTF-8; unpaired surrogates kept)."""
    return "sha256:" + hashlib.sha256(data.encode("utf-8", "surrogatepass")).hexdigest()


def key_label(name: str) -> str:
    """What the audit line names for a key: the name if it is a valid one, else its digest (a
    name that fails validation may be anything, of any size: it is never written as sent)."""
    try:
        return validate_key_name(name)
    except UsageError:
        return digest(name)


def app_label(app_id: str) -> str | None:
    """What the audit line names for a claimed app id: the id if it has the server's form, its
    digest if it is something else (a secret pasted into the wrong header, say), ``None`` if it
    is empty."""
    if not app_id:
        return None
    return app_id if APP_ID.fullmatch(app_id) else digest(app_id)


@dataclass
class Outcome:
    """What an operation learned while running, for its audit line: the key version concerned
    and details (``detail``; values are never secrets)."""

    version: int | None = None
    detail: dict[str, str] = field(default_factory=dict)


class Recorder:
    """The audit log and the operation counters (``/metrics``) of one service."""

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit
        self.metrics: Counter[tuple[str, str]] = Counter()

    def run(
        self,
        op: str,
        *,
        app: str | None,
        credential: str | None,
        key: str | None,
        request_id: str,
        action: Callable[[Outcome], T],
        detail: dict[str, str] | None = None,
    ) -> T:
        """``action(outcome)``, audited as ``op`` by ``app`` / ``credential`` on ``key`` (already
        a label: see :func:`key_label`); its cipherspark errors are audited and re-raised."""
        outcome = Outcome(detail=dict(detail or {}))
        try:
            result = action(outcome)
        except CipherSparkError as exc:
            failure = (
                f"denied:{exc.reason}" if isinstance(exc, AttestationError) else type(exc).__name__
            )
            self.record(op, app, credential, key, request_id, failure, outcome)
            raise
        self.record(op, app, credential, key, request_id, "ok", outcome)
        return result

    def record(
        self,
        op: str,
        app: str | None,
        credential: str | None,
        key: str | None,
        request_id: str,
        result: str,
        outcome: Outcome | None = None,
    ) -> None:
        """Write one audit line and count it (``ok`` or ``error``)."""
        outcome = outcome or Outcome()
        self.audit.record(
            request_id=request_id,
            app=app,
            op=op,
            key=key,
            version=outcome.version,
            result=result,
            credential=credential,
            detail=outcome.detail or None,
        )
        self.metrics[(op, "ok" if result == "ok" else "error")] += 1
