"""The typed answers of the KMS client, parsed from the server's JSON (part of :mod:`._wire`).

What the client returns from JSON answers are frozen dataclasses, never ``dict[str, Any]``; a
malformed answer is a :class:`~cipherspark.errors.KmsError`. :mod:`cipherspark.kms._wire`
re-exports every name here: import them from there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from cipherspark.errors import KmsError, UsageError
from cipherspark.kms.base import KeyInfo
from cipherspark.kms.registry import DatasetRecord

__all__ = [
    "AppInfo",
    "CredentialInfo",
    "KeyDescription",
    "NewApp",
    "NewCredential",
    "SimulatedPlatform",
    "app_info",
    "credential_info",
    "dataset_record",
    "key_description",
    "key_info",
    "new_app",
    "new_credential",
    "simulated_platform",
]


@dataclass(frozen=True)
class KeyDescription(KeyInfo):
    """The server's full description of a key: :class:`KeyInfo` plus its state.

    Fields can also be read by their JSON names (``description["deletion_date"]``), as when the
    client answered the server's JSON object itself.
    """

    min_decryption_version: int
    enabled: bool
    deletion_date: str | None

    def __getitem__(self, name: str) -> object:
        """The field called ``name`` (:class:`KeyError` if there is none)."""
        if name not in {f.name for f in fields(self)}:
            raise KeyError(name)
        return getattr(self, name)


@dataclass(frozen=True)
class NewApp:
    """A new application's owner credential as the server returned it (shown once);
    ``credential_id`` is empty from servers older than roles."""

    app_id: str
    api_key: str = field(repr=False)
    vault_token: str = field(repr=False)
    credential_id: str = ""


@dataclass(frozen=True)
class NewCredential:
    """A new credential of an app (shown once): its id, role (``owner`` / ``workload``),
    label and creation time, and the API KEY and Vault token that carry it."""

    app_id: str
    credential_id: str
    role: str
    label: str
    created: str
    api_key: str = field(repr=False)
    vault_token: str = field(repr=False)


@dataclass(frozen=True)
class CredentialInfo:
    """A credential as listed (never its API key): ``revoked`` is when, or ``None``."""

    credential_id: str
    app_id: str
    role: str
    label: str
    created: str
    revoked: str | None


@dataclass(frozen=True)
class AppInfo:
    """An application's public facts: id, name, creation time, whether it is enabled."""

    app_id: str
    name: str
    created: str
    enabled: bool


@dataclass(frozen=True)
class SimulatedPlatform:
    """A simulated TEE platform the KMS operator registered (its public key is not secret)."""

    public_key: str
    label: str
    created: str


def key_info(doc: Mapping[str, Any]) -> KeyInfo:
    """A key's public facts from a key answer; :class:`KmsError` if it is malformed."""
    try:
        return KeyInfo(
            name=str(doc["name"]), version=int(doc["version"]), created=str(doc["created"])
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise KmsError("the KMS answered with a malformed key description") from exc


def key_description(doc: Mapping[str, Any]) -> KeyDescription:
    """A key's full description from a key answer; :class:`KmsError` if it is malformed."""
    info = key_info(doc)
    try:
        deletion = doc["deletion_date"]
        enabled = doc["enabled"]
        if not isinstance(enabled, bool):
            raise TypeError("enabled is not a boolean")
        return KeyDescription(
            info.name,
            info.version,
            info.created,
            min_decryption_version=int(doc["min_decryption_version"]),
            enabled=enabled,
            deletion_date=None if deletion is None else str(deletion),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise KmsError("the KMS answered with a malformed key description") from exc


def new_app(doc: Mapping[str, Any]) -> NewApp:
    """A new app's credentials from the admin answer; :class:`KmsError` if they are missing."""
    try:
        return NewApp(
            str(doc["app_id"]),
            str(doc["api_key"]),
            str(doc["vault_token"]),
            str(doc.get("credential_id") or ""),
        )
    except KeyError as exc:
        raise KmsError("the KMS answered with malformed app credentials") from exc


def _fields(doc: object, names: tuple[str, ...], what: str) -> list[str]:
    if not isinstance(doc, Mapping):
        raise KmsError(f"the KMS answered with a malformed {what}")
    try:
        return [str(doc[name]) for name in names]
    except KeyError as exc:
        raise KmsError(f"the KMS answered with a malformed {what}") from exc


def new_credential(doc: object) -> NewCredential:
    """A new credential from its answer; :class:`KmsError` if it is malformed."""
    names = ("app_id", "credential_id", "role", "label", "created", "api_key", "vault_token")
    return NewCredential(*_fields(doc, names, "credential"))


def credential_info(doc: object) -> CredentialInfo:
    """A listed credential; :class:`KmsError` if it is malformed."""
    credential_id, app_id, role, label, created = _fields(
        doc, ("credential_id", "app_id", "role", "label", "created"), "credential"
    )
    assert isinstance(doc, Mapping)
    revoked = doc.get("revoked")
    return CredentialInfo(
        credential_id, app_id, role, label, created, None if revoked is None else str(revoked)
    )


def app_info(doc: object) -> AppInfo:
    """An app's record from an admin answer; :class:`KmsError` if it is malformed."""
    app_id, name, created = _fields(doc, ("app_id", "name", "created"), "app record")
    assert isinstance(doc, Mapping)
    enabled = doc.get("enabled")
    if not isinstance(enabled, bool):
        raise KmsError("the KMS answered with a malformed app record")
    return AppInfo(app_id, name, created, enabled)


def simulated_platform(doc: object) -> SimulatedPlatform:
    """A simulated-platform record from an admin answer; :class:`KmsError` if it is malformed."""
    malformed = "the KMS answered with a malformed simulated-platform record"
    if not isinstance(doc, Mapping):
        raise KmsError(malformed)
    try:
        return SimulatedPlatform(str(doc["public_key"]), str(doc["label"]), str(doc["created"]))
    except KeyError as exc:
        raise KmsError(malformed) from exc


def dataset_record(doc: object) -> DatasetRecord:
    """A dataset registry record from an answer; :class:`KmsError` if it is malformed (wrong
    types or shapes: the record's own checks)."""
    malformed = "the KMS answered with a malformed dataset record"
    if not isinstance(doc, Mapping):
        raise KmsError(malformed)
    try:
        generation = doc["generation"]
        if not isinstance(generation, int) or isinstance(generation, bool):
            raise TypeError("generation is not an integer")
        values = [
            doc[name]
            for name in (
                "location",
                "dataset_id",
                "key_id",
                "manifest_sha256",
                "wrapped_key_sha256",
            )
        ]
        if not all(isinstance(v, str) for v in values):
            raise TypeError("a record field is not a string")
        location, dataset_id, key_id, manifest, wrapped = values
        return DatasetRecord(location, dataset_id, key_id, generation, manifest, wrapped)
    except (KeyError, TypeError, UsageError) as exc:
        raise KmsError(malformed) from exc
