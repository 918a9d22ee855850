"""Row seals and the store seal of the KMS database: what a storage attacker cannot forge.

Every security-relevant row carries ``seal`` = HMAC-SHA256(seal key, canonical encoding of
(table, primary key, every security column)); the seal key is derived from the root key (like
the audit key, under its own label), so editing ``kms.db`` or a backup without the root key
cannot produce a row that verifies. A key's row also covers the digest of its release policy
(or ``none``), so deleting or editing the policy row breaks the *key's* seal too: an
attested-only key cannot be turned into a plain one by removing a row.

One **store seal** covers the whole set: an HMAC over the audit head at commit (seq, mac) and
the *sorted list* of every row seal, recomputed in each write transaction. A deleted, inserted
or rolled-back row, or rows mixed from two backups, change the list. It is recomputed over the
list, never kept as an XOR or sum of row MACs: the row MACs are readable in the database, and
a linear combination of old MACs can be solved for new ones.

The encoding is unambiguous: every value is a type tag and, for strings and blobs, a 4-byte
length, so no two rows (or a row and a shifted split of its fields) encode alike.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cipherspark.errors import KmsError

__all__ = [
    "TABLES",
    "SealTable",
    "Sealer",
    "policy_text_digest",
    "seal_key",
]

_ROW = b"cipherspark/kms-server/v1/row-seal\x00"
_STORE = b"cipherspark/kms-server/v1/store-seal\x00"


def seal_key(root: bytes) -> bytes:
    """The HMAC key of row and store seals, derived from the root key (its own label, so it
    is independent of the audit key)."""
    return hmac.new(root, b"cipherspark/kms-server/v1/sealed-store", hashlib.sha256).digest()


def policy_text_digest(policy: object) -> str:
    """What a key row's seal says about its policy: ``sha256:HEX`` of the stored JSON text
    exactly as stored, or ``none``."""
    if policy is None:
        return "none"
    return "sha256:" + hashlib.sha256(str(policy).encode("utf-8", "surrogatepass")).hexdigest()


def _enc(value: object) -> bytes:
    if value is None:
        return b"N"
    if isinstance(value, bool | int):
        return b"I" + struct.pack(">q", int(value))
    if isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
        return b"S" + struct.pack(">I", len(data)) + data
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        return b"B" + struct.pack(">I", len(data)) + data
    if isinstance(value, float):
        # SQLite's type affinity can hand back a REAL someone stored by hand: sealed as
        # itself, so it never equals the integer the server wrote.
        return b"F" + struct.pack(">d", value)
    raise KmsError(f"the KMS database holds a value of unexpected type {type(value).__name__}")


@dataclass(frozen=True)
class SealTable:
    """A sealed table: its primary-key columns and its security columns (SQL expressions over
    the table aliased ``t``); ``policy_last``: the last column is a policy text, sealed as
    its digest."""

    name: str
    pk: tuple[str, ...]
    columns: tuple[str, ...]
    policy_last: bool = False

    @property
    def select(self) -> str:
        """``SELECT pk..., columns..., seal FROM table t`` (add a WHERE to narrow it)."""
        return f"SELECT {', '.join((*self.pk, *self.columns))}, t.seal FROM {self.name} t"

    @property
    def where(self) -> str:
        """The primary-key condition, parameters in ``pk`` order."""
        return " WHERE " + " AND ".join(f"t.{c} = ?" for c in self.pk)

    def label(self, row: Sequence[object]) -> str:
        """How an error names the row: ``credentials row cred-…``."""
        return f"{self.name} row " + "/".join(str(v) for v in row[: len(self.pk)])


_POLICY_OF_KEY = (
    "(SELECT p.policy FROM key_policies p WHERE p.app_id = t.app_id AND p.key_name = t.name)"
)
#: Every sealed table, in a fixed order.
TABLES: dict[str, SealTable] = {
    t.name: t
    for t in (
        SealTable("settings", ("name",), ("value",)),
        SealTable("apps", ("app_id",), ("name", "created", "enabled")),
        SealTable(
            "credentials",
            ("credential_id",),
            ("app_id", "role", "label", "key_salt", "key_hash", "created", "revoked", "legacy"),
        ),
        SealTable(
            "keys",
            ("app_id", "name"),
            (
                "created",
                "current_version",
                "min_decryption_version",
                "enabled",
                "deletion_date",
                _POLICY_OF_KEY,
            ),
            policy_last=True,
        ),
        SealTable("key_versions", ("app_id", "key_name", "version"), ("sealed", "created")),
        SealTable("key_policies", ("app_id", "key_name"), ("policy", "updated")),
        SealTable("simulated_platforms", ("public_key",), ("label", "created")),
        SealTable(
            "datasets",
            ("app_id", "location"),
            (
                "dataset_id",
                "key_name",
                "generation",
                "manifest_sha256",
                "wrapped_key_sha256",
                "updated",
            ),
        ),
    )
}


class Sealer:
    """Computes row and store seals under the key derived from the root key."""

    def __init__(self, root: bytes) -> None:
        self._key = seal_key(root)

    @staticmethod
    def row_id(table: SealTable, row: Sequence[object]) -> tuple[str, tuple[object, ...]]:
        """The identity of a row (table, primary key values): what the seals are kept under."""
        return table.name, tuple(row[: len(table.pk)])

    def row_mac(self, table: SealTable, row: Sequence[object]) -> bytes:
        """The seal of ``row`` (primary key then security columns, as :attr:`SealTable.select`
        reads them, without the seal itself)."""
        values = list(row[: len(table.pk) + len(table.columns)])
        if table.policy_last:
            values[-1] = policy_text_digest(values[-1])
        pk, cols = values[: len(table.pk)], values[len(table.pk) :]
        message = b"".join(
            [
                _ROW,
                _enc(table.name),
                _enc(len(pk)),
                *(_enc(v) for v in pk),
                _enc(len(cols)),
                *(_enc(v) for v in cols),
            ]
        )
        return hmac.digest(self._key, message, "sha256")

    def store_mac(self, head_seq: int, head_mac: str, seals: Iterable[bytes]) -> bytes:
        """The store seal over the audit head and the sorted list of every row seal (each 32
        bytes, so their concatenation is unambiguous)."""
        ordered = sorted(seals)
        message = b"".join([_STORE, _enc(head_seq), _enc(head_mac), _enc(len(ordered)), *ordered])
        return hmac.digest(self._key, message, "sha256")
