"""The wire contract between the KMS server and its client, in one place.

* :data:`ERRORS`: the one table of error type, HTTP status and ``code`` string. The server answers
  a service error with the first row whose type it is an instance of
  (:func:`error_answer`); the client raises the row's type for an answer whose status and code
  match a row (:func:`raise_for_answer`). An attestation denial also carries its
  :class:`~cipherspark.errors.DenialReason` as ``reason``.
* Error bodies are ``{"error": message, "code": code}`` (plus ``"reason"`` for denials); the
  Vault Transit routes reshape them to Vault's ``{"errors": [message]}``, which has no code: the
  client reads such an answer by its status alone (:data:`VAULT_BY_STATUS`).
* 429 (:data:`THROTTLED`, either shape) is :class:`~cipherspark.errors.RateLimitedError`, with
  the seconds of the answer's ``Retry-After`` (:func:`retry_after_seconds`).
* Binary values travel as standard, padded base64 (:func:`b64encode`, :func:`b64decode`).
* What the client returns from JSON answers are frozen dataclasses (:class:`KeyDescription`,
  :class:`NewApp`, :class:`NewCredential`, :class:`CredentialInfo`, :class:`AppInfo`,
  :class:`SimulatedPlatform`), never ``dict[str, Any]``: parsed in :mod:`._answers`,
  re-exported here.

Nothing here imports FastAPI or httpx: both sides use it, and clients do not need the server's
dependencies.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cipherspark.errors import (
    AttestationError,
    CipherSparkError,
    CredentialsError,
    DatasetConflictError,
    DenialReason,
    IntegrityError,
    KeyExistsError,
    KeyNotFoundError,
    KeyStateError,
    KmsError,
    KmsServerError,
    PermissionDeniedError,
    PolicyDeniedError,
    RateLimitedError,
    UsageError,
)
from cipherspark.kms._answers import (
    AppInfo,
    CredentialInfo,
    KeyDescription,
    NewApp,
    NewCredential,
    SimulatedPlatform,
    app_info,
    credential_info,
    dataset_record,
    key_description,
    key_info,
    new_app,
    new_credential,
    simulated_platform,
)

__all__ = [
    "ATTESTATION_DENIED",
    "BODY_TOO_LARGE",
    "DATASET_NOT_FOUND",
    "ERRORS",
    "INTERNAL",
    "INVALID_FIELD",
    "MALFORMED_JSON",
    "THROTTLED",
    "VAULT_BY_STATUS",
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
    "dataset_record",
    "error_answer",
    "error_body",
    "internal_answer",
    "key_description",
    "key_info",
    "new_app",
    "new_credential",
    "raise_for_answer",
    "retry_after_seconds",
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
    WireError(409, "dataset_conflict", DatasetConflictError),
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
# GET /v1/datasets?location=...: nothing is registered there (an answer, not an error: the
# client returns None for it, see RemoteKms.dataset_at).
DATASET_NOT_FOUND = WireCode(404, "dataset_not_found")

_BY_CODE = {row.code: row for row in ERRORS}

#: A Vault-shaped error (``{"errors": [...]}``, the Transit routes) by its status, the table's
#: row that status stands for on those routes. 401 is CredentialsError and 429 RateLimitedError
#: as on every route; 400 (a malformed or unauthentic ciphertext, or a malformed request) is
#: the caller's to say (``vault_bad_request`` of :func:`raise_for_answer`). Attestation is not
#: offered over Transit, so 403 is the role's or the key's refusal.
VAULT_BY_STATUS: Mapping[int, type[KmsError]] = {
    403: PermissionDeniedError,
    404: KeyNotFoundError,
    409: KeyStateError,
}


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


def raise_for_answer(
    status: int,
    doc: Mapping[str, Any],
    *,
    url: str,
    what: str,
    retry_after: float | None = None,
    vault_bad_request: type[CipherSparkError] = KmsError,
) -> None:
    """Raise the cipherspark error an answer with ``status`` and body ``doc`` stands for.

    Nothing for 2xx. 401 is always :class:`CredentialsError` (whoever refused, the credentials
    were not accepted), 429 always :class:`RateLimitedError` (``retry_after``: the seconds of
    its ``Retry-After``). A 4xx whose status and code match a row raises that row's type; a
    Vault-shaped body (no code) raises by :data:`VAULT_BY_STATUS`, and ``vault_bad_request``
    for 400; any other 4xx is a :class:`KmsError`, not a usage error: the user typed nothing
    wrong that the client could have checked. Everything else is :class:`KmsServerError`.
    """
    if status < 300:
        return
    message, vault = _message(doc)
    code = str(doc.get("code") or "")
    if status == 401:
        raise CredentialsError(f"the KMS at {url} rejected the credentials")
    if status == THROTTLED.status:
        wait = "retry later" if retry_after is None else f"retry in {math.ceil(retry_after)} s"
        raise RateLimitedError(
            f"{what}: the KMS at {url} is throttling logins from this source or app id "
            f"after too many failed logins; {wait}",
            retry_after,
        )
    text = f"{what}: {message or f'the KMS refused the request ({status})'}"
    row = _BY_CODE.get(code)
    if row is not None and row.status == status:
        if issubclass(row.raises, AttestationError):
            raise row.raises(text, _reason(doc.get("reason")))
        raise row.raises(text)
    if vault:
        kind = vault_bad_request if status == 400 else VAULT_BY_STATUS.get(status)
        if kind is not None:
            raise kind(text)
    if 400 <= status < 500:
        detail = f": {message}" if message else ""
        raise KmsError(f"{what}: the KMS refused the request ({status}){detail}")
    raise KmsServerError(f"the KMS at {url} failed ({status}) during {what}; see the server's log")


def _message(doc: Mapping[str, Any]) -> tuple[str, bool]:
    """An error body's message, and whether the body is Vault-shaped."""
    errors = doc.get("errors")
    if "error" not in doc and isinstance(errors, list):
        return (str(errors[0]) if errors else ""), True
    return str(doc.get("error") or ""), False


def retry_after_seconds(value: str | None) -> float | None:
    """The delay a ``Retry-After`` header asks for, in seconds; ``None`` if absent or not a
    non-negative number of seconds (the HTTP-date form, which this server never sends, is not
    worth trusting a client's clock for)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


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
