"""The wire contract between the KMS server and its client, in one place.

* :data:`ERRORS`: the one table of error type, HTTP status and ``code`` string. The server answers
  a service error with the first row whose type it is an instance of
  (:func:`error_answer`); the client raises the row's type for an answer whose status and code
  match a row (:func:`raise_for_answer`). An attestation denial also carries its
  :class:`~cipherspark.errors.DenialReason` as ``reason``.
* Error bodies are ``{"error": message, "code": code}`` (plus ``"reason"`` for denials); the
  Vault Transit routes reshape them to Vault's ``{"errors": [message]}``.
* Binary values travel as standard, padded base64 (:func:`b64encode`, :func:`b64decode`).
* What the client returns from JSON answers are frozen dataclasses (:class:`KeyDescription`,
  :class:`NewApp`, :class:`NewCredential`, :class:`CredentialInfo`, :class:`AppInfo`,
  :class:`SimulatedPlatform`), parsed here, never ``dict[str, Any]``.

Nothing here imports FastAPI or httpx: both sides use it, and clients do not need the server's
dependencies.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from cipherspark.errors import (
    AttestationError,
    CipherSparkError,
    CredentialsError,
    DenialReason,
    IntegrityError,
    KeyExistsError,
    KeyNotFoundError,
    KeyStateError,
    KmsError,
    KmsServerError,
    PermissionDeniedError,
    PolicyDeniedError,
    UsageError,
)
from cipherspark.kms.base import KeyInfo

__all__ = [
    "ATTESTATION_DENIED",
    "BODY_TOO_LARGE",
    "ERRORS",
    "INTERNAL",
    "INVALID_FIELD",
    "MALFORMED_JSON",
    "THROTTLED",
    "AppInfo",
    "CredentialInfo",
    "ErrorAnswer",
    "KeyDescription",
    "NewApp",
    "NewCredential",
    "SimulatedPlatform",
    "WireCode",
    "WireError",
    "app_info",
    "b64decode",
    "b64encode",
    "credential_info",
    "error_answer",
    "error_body",
    "internal_answer",
    "key_description",
    "key_info",
    "new_app",
    "new_credential",
    "raise_for_answer",
    "simulated_platform",
]

ATTESTATION_DENIED = "attestation_denied"
_INTERNAL_MESSAGE = "the KMS failed to complete the request"


@dataclass(frozen=True)
class WireCode:
    """An HTTP status and the ``code`` string of an error body."""

    status: int
    code: str


@dataclass(frozen=True)
class WireError(WireCode):
    """One row of the contract: the server answers ``answers`` with ``status`` and ``code``; the
    client raises :attr:`raises` for that status and code."""

    answers: type[CipherSparkError]
    # The client's type when it is narrower than what the server matches: every attestation
    # failure reaching the server's answer is a refusal of the release.
    raises_as: type[CipherSparkError] | None = None

    @property
    def raises(self) -> type[CipherSparkError]:
        """The error type the client raises for this row."""
        return self.raises_as or self.answers


#: The error contract. Order matters to the server only (first ``isinstance`` match wins).
ERRORS: tuple[WireError, ...] = (
    WireError(403, ATTESTATION_DENIED, AttestationError, PolicyDeniedError),
    WireError(401, "unauthorized", CredentialsError),
    WireError(403, "forbidden", PermissionDeniedError),
    WireError(404, "key_not_found", KeyNotFoundError),
    WireError(409, "key_exists", KeyExistsError),
    WireError(409, "key_state", KeyStateError),
    WireError(400, "integrity", IntegrityError),
    WireError(400, "bad_request", UsageError),
)

# Answers of the HTTP layer itself, before the service sees a request, and of a failure outside
# the table. They have no row: the client raises KmsError for the 4xx ones (the client sent what
# the server cannot take; the user typed nothing wrong) and KmsServerError for INTERNAL.
BODY_TOO_LARGE = WireCode(413, "body_too_large")
MALFORMED_JSON = WireCode(400, "malformed_json")
INVALID_FIELD = WireCode(422, "invalid_field")
# Too many failed logins from this address or for this app id: the answer carries Retry-After.
THROTTLED = WireCode(429, "throttled")
INTERNAL = WireCode(500, "internal")

_BY_CODE = {row.code: row for row in ERRORS}


@dataclass(frozen=True)
class ErrorAnswer:
    """How the server answers one error: status, code, message, and a denial's reason."""

    status: int
    code: str
    message: str
    reason: DenialReason | None = None

    def body(self) -> dict[str, Any]:
        """The JSON error body of the native API."""
        return error_body(self.code, self.message, self.reason)


def error_body(code: str, message: str, reason: DenialReason | None = None) -> dict[str, Any]:
    """``{"error": message, "code": code}``, with ``"reason"`` for attestation denials."""
    body: dict[str, Any] = {"error": message, "code": code}
    if reason is not None:
        body["reason"] = reason.value
    return body


def error_answer(exc: CipherSparkError) -> ErrorAnswer:
    """The server's answer to ``exc``; an error outside the table is a 500 that says nothing
    about its cause (the server's log does)."""
    for row in ERRORS:
        if isinstance(exc, row.answers):
            reason = exc.reason if isinstance(exc, AttestationError) else None
            return ErrorAnswer(row.status, row.code, str(exc), reason)
    return internal_answer()


def internal_answer() -> ErrorAnswer:
    """The answer to a failure the server did not expect (500, no detail)."""
    return ErrorAnswer(INTERNAL.status, INTERNAL.code, _INTERNAL_MESSAGE)


def raise_for_answer(status: int, doc: Mapping[str, Any], *, url: str, what: str) -> None:
    """Raise the cipherspark error an answer with ``status`` and body ``doc`` stands for.

    Nothing for 2xx. 401 is always :class:`CredentialsError` (whoever refused, the credentials
    were not accepted). A 4xx whose status and code match a row raises that row's type; any other
    4xx is a :class:`KmsError`, not a usage error: the user typed nothing wrong that the client
    could have checked. Everything else is :class:`KmsServerError`.
    """
    if status < 300:
        return
    message = str(doc.get("error") or "")
    code = str(doc.get("code") or "")
    if status == 401:
        raise CredentialsError(f"the KMS at {url} rejected the credentials")
    row = _BY_CODE.get(code)
    if row is not None and row.status == status:
        text = f"{what}: {message or f'the KMS refused the request ({status})'}"
        if issubclass(row.raises, AttestationError):
            raise row.raises(text, _reason(doc.get("reason")))
        raise row.raises(text)
    if status == THROTTLED.status:
        raise KmsError(f"{what}: the KMS is throttling logins: {message or 'retry later'}")
    if 400 <= status < 500:
        detail = f": {message}" if message else ""
        raise KmsError(f"{what}: the KMS refused the request ({status}){detail}")
    raise KmsServerError(f"the KMS at {url} failed ({status}) during {what}; see the server's log")


def _reason(value: object) -> DenialReason:
    # A reason this client does not know (a newer server) is reported as the general refusal.
    try:
        return DenialReason(str(value))
    except ValueError:
        return DenialReason.SIGNATURE


# -- base64 ---------------------------------------------------------------------------------------


def b64encode(data: bytes) -> str:
    """Standard, padded base64 text of ``data``."""
    return base64.b64encode(data).decode()


def b64decode(value: object) -> bytes:
    """The bytes of standard, padded base64 text; :class:`ValueError` for anything else (other
    alphabets, stray characters, missing padding, a value that is not a string)."""
    if not isinstance(value, str):
        raise ValueError("not a base64 string")
    # binascii.Error, raised for bad input, is a ValueError.
    return base64.b64decode(value, validate=True)


# -- typed answers --------------------------------------------------------------------------------


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
