"""The rows of the KMS server's store, as frozen values (what :mod:`.storage` reads and writes).

Key material appears here only *sealed*; credentials only as salted scrypt hashes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cipherspark.kms.server.permissions import Role

__all__ = [
    "AppRecord",
    "CredentialRecord",
    "KeyRecord",
    "SimulatedPlatformRecord",
]


@dataclass(frozen=True)
class AppRecord:
    """An application: its id, display name, creation time and whether it is enabled (a
    disabled app's credentials are all refused)."""

    app_id: str
    name: str
    created: str
    enabled: bool = True


@dataclass(frozen=True)
class CredentialRecord:
    """One credential of an app: its id (not secret), role, label, the salted scrypt hash of
    its API key, and when it was created and revoked (``None``: still valid).

    ``legacy``: an owner credential migrated from before roles, whose API key does not carry
    its id (the server finds it by app id; an app has at most one).
    """

    credential_id: str
    app_id: str
    role: Role
    label: str
    key_salt: bytes = field(repr=False)
    key_hash: bytes = field(repr=False)
    created: str
    revoked: str | None = None
    legacy: bool = False


@dataclass(frozen=True)
class KeyRecord:
    """Metadata of a primary key in its app's namespace (its versions' sealed bytes are fetched
    separately). ``has_policy``: a release policy is stored for it (the key is attested-only)."""

    name: str
    app_id: str
    created: str
    current_version: int
    min_decryption_version: int
    enabled: bool
    deletion_date: str | None
    has_policy: bool = False


@dataclass(frozen=True)
class SimulatedPlatformRecord:
    """A simulated TEE platform the operator registered: its Ed25519 public key (64 lowercase
    hex digits), a free-text label and when it was first registered (ISO 8601, UTC)."""

    public_key: str
    label: str
    created: str
