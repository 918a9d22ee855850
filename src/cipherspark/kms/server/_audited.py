"""Running an operation so that it leaves exactly one audit line and one metrics count, whether
it succeeds or fails; and what an audit line may say about inputs that failed validation.

A state-changing operation (:data:`MUTATING_OPS`) runs inside one storage transaction, and its
``ok`` entry is staged in the database's audit outbox in that same transaction (see
:mod:`._store`): after a crash there is no state change without its line. Its failures are
audited after the rollback; reads, nonces and failed logins are appended directly (there is no
state for them to match)."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from cipherspark.errors import AttestationError, CipherSparkError, UsageError
from cipherspark.kms.base import validate_key_name
from cipherspark.kms.server.audit import AuditLog

__all__ = [
    "APP_ID",
    "MUTATING_OPS",
    "AuditedStore",
    "Outcome",
    "Recorder",
    "app_label",
    "digest",
    "key_label",
]

T = TypeVar("T")
#: What the server's app ids look like ('app-' and 16 hex digits).
APP_ID = re.compile(r"app-[0-9a-f]{16}")
#: Operations that change the stored state: audited in the transaction of the change. The open
#: check refuses a database that lacks the change of any ``ok`` line of these in the log.
MUTATING_OPS = frozenset(
    {
        "admin_token.rotate",
        "app.create",
        "app.disable",
        "app.enable",
        "credential.create",
        "credential.revoke",
        "dataset.move",
        "dataset.register",
        "key.cancel_deletion",
        "key.config",
        "key.create",
        "key.disable",
        "key.enable",
        "key.policy",
        "key.purge",
        "key.rotate",
        "key.schedule_deletion",
        "restore",
        "simulated_platform.add",
        "simulated_platform.remove",
        "store.seal",
    }
)


class AuditedStore(Protocol):
    """What the recorder needs of the storage: a transaction, and an entry staged in it."""

    def transaction(self) -> AbstractContextManager[object]:
        """A write transaction (inner calls join the outer one)."""
        ...

    def stage_audit(
        self,
        *,
        request_id: str,
        app: str | None,
        op: str,
        key: str | None,
        version: int | None,
        credential: str | None,
        detail: dict[str, str] | None,
    ) -> None:
        """Stage the transaction's ``ok`` audit entry in the outbox."""
        ...


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

    def __init__(self, audit: AuditLog, store: AuditedStore | None = None) -> None:
        self.audit = audit
        self.store = store
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
        store = self.store if op in MUTATING_OPS else None
        try:
            if store is None:
                result = action(outcome)
            else:
                with store.transaction():
                    result = action(outcome)
                    store.stage_audit(
                        request_id=request_id,
                        app=app,
                        op=op,
                        key=key,
                        version=outcome.version,
                        credential=credential,
                        detail=outcome.detail or None,
                    )
        except CipherSparkError as exc:
            failure = (
                f"denied:{exc.reason}" if isinstance(exc, AttestationError) else type(exc).__name__
            )
            # After the rollback: the failure changed nothing, its line is appended directly.
            self.record(op, app, credential, key, request_id, failure, outcome)
            raise
        if store is None:
            self.record(op, app, credential, key, request_id, "ok", outcome)
        else:
            self.metrics[(op, "ok")] += 1
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
