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

import fcntl
import hashlib
import hmac
import json
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cipherspark.errors import KmsError, StoreChangedError, VerificationError

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


def _reverse_lines(path: Path) -> Iterator[bytes]:
    """The complete lines of ``path``, last first (read backwards in blocks, so the end of a
    large log is found quickly)."""
    with open(path, "rb") as f:
        pos = f.seek(0, os.SEEK_END)
        tail = b""
        while pos > 0:
            step = min(1 << 16, pos)
            pos -= step
            f.seek(pos)
            tail = f.read(step) + tail
            lines = tail.split(b"\n")
            tail = lines[0]
            for line in reversed(lines[1:]):
                if line:
                    yield line
        if tail:
            yield tail


def _entry(raw: bytes, path: Path) -> dict[str, object]:
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or not isinstance(doc.get("seq"), int):
            raise ValueError("not an entry")
        return doc
    except ValueError as exc:
        raise KmsError(
            f"the audit log {path} is damaged (run 'cipherspark kms audit verify')"
        ) from exc


class AuditLog:
    """Appends chained entries to an audit file (one ``write`` per line, O_APPEND).

    Appends hold an exclusive ``flock`` on the file and re-read its last line if another
    process appended meanwhile (``kms backup`` records its line while the server runs), so
    the chain stays one chain. :meth:`reserved` holds the file for a whole database
    transaction: the entry it stages (:meth:`entry`) is the next one, and nothing else is
    appended before it (:meth:`append_line`, after the commit).

    A last line cut short by a crash mid-write is repaired at open: every complete line is
    verified first (anything else damaged refuses), then the torn tail is cut off and
    :attr:`repaired` describes it for the ``audit_repair`` entry the opener writes.
    """

    def __init__(self, path: Path, root: bytes) -> None:
        self._path = path
        self._key = audit_key(root)
        self._lock = threading.RLock()
        self._held = 0
        self._seq, self._prev, self._size = 0, _GENESIS, 0
        #: The torn tail cut off at open (its length and digest, never its bytes), or None.
        self.repaired: dict[str, str] | None = None
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise KmsError(f"cannot open the audit log {path}: {exc.strerror}") from exc
        try:
            # The tail is repaired before the head is read (reserved() reads it).
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                self._repair_torn_tail()
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            with self.reserved():
                pass
        except BaseException:
            os.close(self._fd)
            raise

    def _repair_torn_tail(self) -> None:
        size = os.fstat(self._fd).st_size
        if size == 0 or os.pread(self._fd, 1, size - 1) == b"\n":
            return
        block, end = b"", size
        while end > 0 and b"\n" not in block:
            start = max(0, end - (1 << 16))
            block = os.pread(self._fd, end - start, start) + block
            end = start
        cut = end + block.rfind(b"\n") + 1 if b"\n" in block else 0
        torn = os.pread(self._fd, size - cut, cut)
        try:
            _verify(self._path, self._key, limit=cut)
        except VerificationError as exc:
            raise KmsError(f"{exc}; the audit log is damaged, not only its torn last line") from exc
        os.ftruncate(self._fd, cut)
        os.fsync(self._fd)
        self.repaired = {
            "torn_bytes": str(len(torn)),
            "torn_digest": "sha256:" + hashlib.sha256(torn).hexdigest(),
        }

    def _refresh(self) -> None:
        # Another process may have appended since our last write: chain onto its last line.
        size = os.fstat(self._fd).st_size
        if size == self._size:
            return
        last = next(_reverse_lines(self._path), None)
        if last is None:
            self._seq, self._prev = 0, _GENESIS
        else:
            doc = _entry(last, self._path)
            self._seq, self._prev = int(doc["seq"]), str(doc["mac"])  # type: ignore[call-overload]
        self._size = size

    @contextmanager
    def reserved(self) -> Iterator[None]:
        """Hold the log (this thread, and other processes by flock) for the block: the head
        does not move except by this thread's :meth:`append_line`."""
        with self._lock:
            if self._held:
                self._held += 1
                try:
                    yield
                finally:
                    self._held -= 1
                return
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            self._held = 1
            try:
                self._refresh()
                yield
            finally:
                self._held = 0
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    @property
    def head(self) -> tuple[int, str]:
        """(seq, mac) of the last entry (``(0, "0"*64)`` for an empty log)."""
        with self._lock:
            return self._seq, self._prev

    def entry(
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
    ) -> tuple[int, str, bytes]:
        """(seq, mac, line) of the next entry, not yet written: call inside :meth:`reserved`.
        Never pass key material or secrets in any field."""
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
        return self._seq + 1, mac, _canonical({**entry, "mac": mac}) + b"\n"

    def append_line(self, seq: int, mac: str, line: bytes) -> None:
        """Write an entry made by :meth:`entry` (or replayed from the outbox) as the next line."""
        with self.reserved():
            if seq != self._seq + 1:
                raise KmsError(f"audit entry {seq} does not follow {self._seq} in {self._path}")
            try:
                os.write(self._fd, line)
            except OSError as exc:
                raise KmsError(f"cannot write the audit log {self._path}: {exc}") from exc
            self._seq, self._prev = seq, mac
            self._size += len(line)

    def replay(self, line: bytes) -> None:
        """Append an entry staged in the database's outbox, once its chain MAC checks against
        the log's head (the outbox is in the database, which an attacker may edit)."""
        with self.reserved():
            doc = _entry(line.rstrip(b"\n"), self._path)
            mac = str(doc.pop("mac", ""))
            if doc["seq"] != self._seq + 1 or not hmac.compare_digest(
                mac, _mac(self._key, self._prev, doc)
            ):
                raise StoreChangedError(
                    f"the KMS database's audit outbox entry {doc['seq']} does not continue the "
                    f"audit log {self._path}: the database was changed outside the server"
                )
            self.append_line(int(str(doc["seq"])), mac, line.rstrip(b"\n") + b"\n")

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
    ) -> tuple[int, str]:
        """Append one entry now; its (seq, mac). Never pass key material or secrets."""
        with self.reserved():
            seq, mac, line = self.entry(
                request_id=request_id,
                app=app,
                op=op,
                key=key,
                version=version,
                result=result,
                credential=credential,
                detail=detail,
            )
            self.append_line(seq, mac, line)
            return seq, mac

    def since(self, seq: int) -> tuple[str | None, list[dict[str, object]]]:
        """(the mac of entry ``seq``, or ``None`` if the log has no such entry; the entries
        after it, newest first). Reads backwards from the end."""
        if seq == 0:
            return _GENESIS, [_entry(raw, self._path) for raw in _reverse_lines(self._path)]
        later: list[dict[str, object]] = []
        for raw in _reverse_lines(self._path):
            doc = _entry(raw, self._path)
            if doc["seq"] == seq:
                return str(doc.get("mac")), later
            if int(doc["seq"]) < seq:  # type: ignore[call-overload]
                break
            later.append(doc)
        return None, later

    def has_op(self, op: str) -> bool:
        """Whether any entry of the log is an ``op`` (a scan of the whole file)."""
        needle = _canonical({"op": op})[1:-1]
        with open(self._path, "rb") as f:
            return any(needle in raw and _entry(raw, self._path).get("op") == op for raw in f)

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
    return _verify(path, audit_key(root))


def _check_line(path: Path, key: bytes, number: int, raw: bytes, prev: str, seq: int) -> str:
    try:
        doc = json.loads(raw)
        mac = doc.pop("mac")
        if set(doc) not in (_FIELDS, _LEGACY_FIELDS):
            raise ValueError("unexpected fields")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise VerificationError(f"audit log {path} line {number} is not a valid entry") from exc
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
    return str(mac)


def _verify(path: Path, key: bytes, *, limit: int | None = None) -> AuditReport:
    # limit: check only the first ``limit`` bytes (the complete lines before a torn tail).
    prev, seq = _GENESIS, 0
    try:
        with open(path, "rb") as f:
            consumed = 0
            for number, raw in enumerate(f, start=1):
                consumed += len(raw)
                if limit is not None and consumed > limit:
                    break
                prev = _check_line(path, key, number, raw, prev, seq)
                seq += 1
    except OSError as exc:
        raise KmsError(f"cannot read the audit log {path}: {exc.strerror}") from exc
    return AuditReport(entries=seq, last_seq=seq, last_mac=prev)
