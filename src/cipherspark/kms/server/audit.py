"""The audit log: one JSON line per key operation, chained with HMACs.

Each line records who (APP ID and credential id), what (operation), which key and version, the
result, the request id and a small ``detail`` object (e.g. a policy change's old and new digests,
a failed login's source address), plus a sequence number and ``mac`` = HMAC-SHA256(audit key,
previous mac || this entry). The audit key is derived from the root key, so without it nobody
can rewrite a line and recompute the chain: an edited, inserted, reordered or deleted line
breaks verification.
Removing lines from the *end* cannot be detected from the file alone; keep the last verified
``seq`` and ``mac`` elsewhere (``cipherspark kms audit verify`` prints them) to catch that.

Entries never hold key material, API keys or plaintext: only the fixed fields below. Lines
written before ``credential`` and ``detail`` existed have neither field, and still verify.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cipherspark.errors import KmsError, VerificationError

__all__ = ["AuditLog", "AuditReport", "audit_key", "verify_audit_log"]

_GENESIS = "0" * 64
_LEGACY_FIELDS = frozenset({"ts", "seq", "request_id", "app", "op", "key", "version", "result"})
_FIELDS = _LEGACY_FIELDS | {"credential", "detail"}


def audit_key(root: bytes) -> bytes:
    """The HMAC key of the audit chain, derived from the root key."""
    return hmac.new(root, b"cipherspark/kms-server/v1/audit-log", hashlib.sha256).digest()


def _canonical(entry: dict[str, object]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":")).encode()


def _mac(key: bytes, prev: str, entry: dict[str, object]) -> str:
    return hmac.new(key, prev.encode() + b"\n" + _canonical(entry), hashlib.sha256).hexdigest()


def _last_line(path: Path) -> bytes | None:
    """The last complete line of ``path`` (read backwards, so large logs open quickly)."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        if end == 0:
            return None
        block = b""
        pos = end
        while pos > 0:
            step = min(4096, pos)
            pos -= step
            f.seek(pos)
            block = f.read(step) + block
            lines = block.rstrip(b"\n").split(b"\n")
            if len(lines) > 1 or pos == 0:
                return lines[-1]
    return None


class AuditLog:
    """Appends chained entries to an audit file (one ``write`` per line, O_APPEND)."""

    def __init__(self, path: Path, root: bytes) -> None:
        self._path = path
        self._key = audit_key(root)
        self._lock = threading.Lock()
        self._seq, self._prev = 0, _GENESIS
        try:
            if path.exists():
                last = _last_line(path)
                if last:
                    doc = json.loads(last)
                    self._seq, self._prev = int(doc["seq"]), str(doc["mac"])
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KmsError(
                f"cannot open the audit log {path}: its last line is damaged "
                "(run 'cipherspark kms audit verify')"
            ) from exc

    def record(
        self,
        *,
        request_id: str,
        app: str | None,
        op: str,
        key: str | None,
        version: int | None,
        result: str,
        credential: str | None = None,
        detail: Mapping[str, str] | None = None,
    ) -> None:
        """Append one entry; never pass key material or secrets in any field."""
        with self._lock:
            entry: dict[str, object] = {
                "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "seq": self._seq + 1,
                "request_id": request_id,
                "app": app,
                "op": op,
                "key": key,
                "version": version,
                "result": result,
                "credential": credential,
                "detail": dict(detail) if detail else None,
            }
            mac = _mac(self._key, self._prev, entry)
            line = _canonical({**entry, "mac": mac}) + b"\n"
            try:
                os.write(self._fd, line)
            except OSError as exc:
                raise KmsError(f"cannot write the audit log {self._path}: {exc}") from exc
            self._seq += 1
            self._prev = mac

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            os.close(self._fd)


@dataclass(frozen=True)
class AuditReport:
    """A verified audit log: how many entries, and the last ``seq`` and ``mac`` to keep."""

    entries: int
    last_seq: int
    last_mac: str


def verify_audit_log(path: Path, root: bytes) -> AuditReport:
    """Check every line of the audit log; :class:`VerificationError` names the first bad one."""
    key = audit_key(root)
    prev, seq = _GENESIS, 0
    try:
        with open(path, "rb") as f:
            for number, raw in enumerate(f, start=1):
                try:
                    doc = json.loads(raw)
                    mac = doc.pop("mac")
                    if set(doc) not in (_FIELDS, _LEGACY_FIELDS):
                        raise ValueError("unexpected fields")
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    raise VerificationError(
                        f"audit log {path} line {number} is not a valid entry"
                    ) from exc
                if doc["seq"] != seq + 1:
                    raise VerificationError(
                        f"audit log {path} line {number}: sequence {doc['seq']} follows "
                        f"{seq}: lines were deleted, inserted or reordered"
                    )
                if not hmac.compare_digest(str(mac), _mac(key, prev, doc)):
                    raise VerificationError(
                        f"audit log {path} line {number} (seq {seq + 1}) fails its MAC: it or a "
                        "line before it was edited"
                    )
                prev, seq = str(mac), seq + 1
    except OSError as exc:
        raise KmsError(f"cannot read the audit log {path}: {exc.strerror}") from exc
    return AuditReport(entries=seq, last_seq=seq, last_mac=prev)
