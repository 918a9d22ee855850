"""Request and response bodies of the KMS server's HTTP API (pydantic), in one place.

Request bodies are strict and closed (unknown fields, wrong types: 422) except the Vault Transit
ones, which ignore what Vault clients send and we do not use. Size limits are on every string a
client sends, so nothing unbounded is parsed.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cipherspark.errors import UsageError
from cipherspark.kms.registry import DatasetRecord, dataset_location
from cipherspark.kms.server.accounts import AppCredentials
from cipherspark.kms.server.records import AppRecord, CredentialRecord
from cipherspark.kms.server.service import KeyView, SimulatedPlatformRecord

__all__ = [
    "MAX_WRAPPED",
    "AdminTokenResponse",
    "AppResponse",
    "AppStateResponse",
    "AttestedTransitDecryptRequest",
    "AttestedUnwrapRequest",
    "AttestedUnwrapResponse",
    "ConfigRequest",
    "CreateAppRequest",
    "CreateKeyRequest",
    "CredentialListResponse",
    "CredentialRequest",
    "CredentialResponse",
    "DataKeyResponse",
    "DatasetBody",
    "DatasetListResponse",
    "DatasetMoveRequest",
    "DatasetRegisterRequest",
    "DeletionRequest",
    "KeyListResponse",
    "KeyResponse",
    "NewCredentialResponse",
    "NonceResponse",
    "PolicyRequest",
    "PolicyResponse",
    "RewrapResponse",
    "SimulatedPlatformListResponse",
    "SimulatedPlatformRequest",
    "SimulatedPlatformResponse",
    "TransitBody",
    "TransitCiphertextRequest",
    "TransitDataKeyRequest",
    "TransitEncryptRequest",
    "UnwrapResponse",
    "WrappedRequest",
]

#: Longest base64 wrapped data key a request may carry (the lean route checks it too).
MAX_WRAPPED = 8192
#: Longest dataset location (PATH_MAX, as :func:`cipherspark.kms.registry.dataset_location`).
MAX_LOCATION = 4096
#: Longest base64 registration proof (an HMAC-SHA256 is 44 characters).
MAX_PROOF = 128
_HEX32 = r"^[0-9a-f]{32}$"
_HEX64 = r"^[0-9a-f]{64}$"


def check_location(value: str) -> str:
    """``value`` if it is a registry location (absolute, normalised, no NUL or newline);
    :class:`ValueError` otherwise (pydantic answers it with 422)."""
    try:
        normalised = dataset_location(value)
    except UsageError as exc:
        raise ValueError(str(exc)) from exc
    if normalised != value:
        raise ValueError("a dataset location is an absolute, normalised path")
    return value


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# -- keys -----------------------------------------------------------------------------------------


class CreateKeyRequest(_Body):
    """``POST /v1/keys``."""

    name: str = Field(max_length=256)


class ConfigRequest(_Body):
    """``POST /v1/keys/{name}/config``."""

    min_decryption_version: int


class DeletionRequest(_Body):
    """``POST /v1/keys/{name}/schedule-deletion``."""

    pending_days: int = 7


class KeyResponse(BaseModel):
    """A key's public description."""

    name: str
    version: int
    created: str
    min_decryption_version: int
    enabled: bool
    deletion_date: str | None

    @classmethod
    def of(cls, view: KeyView) -> KeyResponse:
        """The answer describing ``view``."""
        return cls(
            name=view.name,
            version=view.version,
            created=view.created,
            min_decryption_version=view.min_decryption_version,
            enabled=view.enabled,
            deletion_date=view.deletion_date,
        )


class KeyListResponse(BaseModel):
    """``GET /v1/keys``."""

    keys: list[KeyResponse]


# -- data keys ------------------------------------------------------------------------------------


class WrappedRequest(_Body):
    """A wrapped data key (base64), for unwrap and rewrap."""

    wrapped: str = Field(max_length=MAX_WRAPPED)


class DataKeyResponse(BaseModel):
    """A data key: ``plaintext`` (base64, absent for the wrapped-only variant) and ``wrapped``."""

    key_id: str
    version: int
    plaintext: str | None = None
    wrapped: str


class UnwrapResponse(BaseModel):
    """An unwrapped data key (base64) and the version that wrapped it."""

    version: int
    plaintext: str


class RewrapResponse(BaseModel):
    """A data key re-wrapped under the current version."""

    version: int
    wrapped: str


# -- the dataset registry -------------------------------------------------------------------------


class DatasetBody(_Body):
    """A dataset record (:class:`cipherspark.kms.registry.DatasetRecord`), in requests and
    answers."""

    location: str = Field(min_length=1, max_length=MAX_LOCATION)
    dataset_id: str = Field(pattern=_HEX32)
    key_id: str = Field(min_length=1, max_length=256)
    generation: int = Field(ge=1, le=2**53)
    manifest_sha256: str = Field(pattern=_HEX64)
    wrapped_key_sha256: str = Field(pattern=_HEX64)

    @field_validator("location")
    @classmethod
    def _location(cls, value: str) -> str:
        return check_location(value)

    def record(self) -> DatasetRecord:
        """The record this body describes."""
        return DatasetRecord(
            self.location,
            self.dataset_id,
            self.key_id,
            self.generation,
            self.manifest_sha256,
            self.wrapped_key_sha256,
        )

    @classmethod
    def of(cls, record: DatasetRecord) -> DatasetBody:
        """The body describing ``record``."""
        return cls(
            location=record.location,
            dataset_id=record.dataset_id,
            key_id=record.key_id,
            generation=record.generation,
            manifest_sha256=record.manifest_sha256,
            wrapped_key_sha256=record.wrapped_key_sha256,
        )


class DatasetListResponse(BaseModel):
    """``GET /v1/datasets?dataset_id=...``: the dataset's records, by location."""

    datasets: list[DatasetBody]


class DatasetRegisterRequest(_Body):
    """``PUT /v1/datasets``: compare-and-swap ``previous`` (``null``: nothing registered) for
    ``record``, with the dataset's wrapped data key and the registration proof (base64)."""

    record: DatasetBody
    previous: DatasetBody | None
    wrapped_key: str = Field(max_length=MAX_WRAPPED)
    proof: str = Field(max_length=MAX_PROOF)


class DatasetMoveRequest(_Body):
    """``POST /v1/datasets/move``: ``source`` moves to ``target`` (the same record at another
    location), with the wrapped data key and the proof of ``target`` over ``source``."""

    source: DatasetBody
    target: DatasetBody
    wrapped_key: str = Field(max_length=MAX_WRAPPED)
    proof: str = Field(max_length=MAX_PROOF)


# -- attested key release -------------------------------------------------------------------------


class PolicyRequest(_Body):
    """``PUT /v1/keys/{name}/policy``: the release policy (see docs/attestation.md)."""

    policy: dict[str, Any]


class PolicyResponse(BaseModel):
    """A key's release policy (normalised), or ``null`` when it has none (which denies)."""

    name: str
    policy: dict[str, Any] | None


class NonceResponse(BaseModel):
    """A single-use nonce (base64) and how many seconds it stays valid."""

    nonce: str
    expires_in: int


class AttestedUnwrapRequest(_Body):
    """``POST /v1/keys/{name}/attest/unwrap``: evidence bound to a nonce and a public key."""

    nonce: str = Field(max_length=128)
    tee: str = Field(max_length=32)
    evidence: str = Field(max_length=24 * 1024)
    public_key: str = Field(max_length=256)
    wrapped: str = Field(max_length=MAX_WRAPPED)
    collateral: str | None = Field(default=None, max_length=32 * 1024)


class AttestedTransitDecryptRequest(_Body):
    """``POST /v1/keys/{name}/attest/transit-decrypt``: as the attested unwrap, for a
    ``vault:vN:`` Transit ciphertext instead of a native wrapped key."""

    nonce: str = Field(max_length=128)
    tee: str = Field(max_length=32)
    evidence: str = Field(max_length=24 * 1024)
    public_key: str = Field(max_length=256)
    # A Transit ciphertext of at most a KEK or data key here; the Transit routes' own limit.
    ciphertext: str = Field(max_length=64 * 1024)
    collateral: str | None = Field(default=None, max_length=32 * 1024)


class AttestedUnwrapResponse(BaseModel):
    """The data key as a compact JWE (``ECDH-ES+A256KW``, ``A256GCM``) to the public key."""

    version: int
    jwe: str


# -- admin ----------------------------------------------------------------------------------------


class CreateAppRequest(_Body):
    """``POST /v1/apps`` (admin)."""

    name: str = Field(max_length=1024)


class AppResponse(BaseModel):
    """A new app's owner credential (shown once)."""

    app_id: str
    credential_id: str
    api_key: str
    vault_token: str


class AppStateResponse(BaseModel):
    """An app's public facts (``POST /v1/admin/apps/{app_id}/disable`` and ``/enable``)."""

    app_id: str
    name: str
    created: str
    enabled: bool

    @classmethod
    def of(cls, record: AppRecord) -> AppStateResponse:
        """The answer describing ``record``."""
        return cls(
            app_id=record.app_id, name=record.name, created=record.created, enabled=record.enabled
        )


class CredentialRequest(_Body):
    """``POST /v1/credentials`` (owner) or ``/v1/admin/apps/{app_id}/credentials`` (admin).

    ``label`` says whose it is (a cluster, a job); refused with 400 beyond 128 printable
    characters.
    """

    role: Literal["owner", "workload"] = "workload"
    label: str = Field(default="", max_length=1024)


class NewCredentialResponse(BaseModel):
    """A new credential, with its API KEY and Vault token (shown only in this answer)."""

    app_id: str
    credential_id: str
    role: str
    label: str
    created: str
    api_key: str
    vault_token: str

    @classmethod
    def of(cls, new: AppCredentials) -> NewCredentialResponse:
        """The answer describing ``new``."""
        return cls(
            app_id=new.app_id,
            credential_id=new.credential_id,
            role=new.role.value,
            label=new.label,
            created=new.created,
            api_key=new.api_key,
            vault_token=new.vault_token,
        )


class CredentialResponse(BaseModel):
    """A credential as listed (never its API key or hash)."""

    credential_id: str
    app_id: str
    role: str
    label: str
    created: str
    revoked: str | None

    @classmethod
    def of(cls, record: CredentialRecord) -> CredentialResponse:
        """The answer describing ``record``."""
        return cls(
            credential_id=record.credential_id,
            app_id=record.app_id,
            role=record.role.value,
            label=record.label,
            created=record.created,
            revoked=record.revoked,
        )


class CredentialListResponse(BaseModel):
    """An app's credentials, oldest first."""

    credentials: list[CredentialResponse]


class AdminTokenResponse(BaseModel):
    """``POST /v1/admin/admin-token/rotate``: the new admin token (shown only here)."""

    admin_token: str


class SimulatedPlatformRequest(_Body):
    """``POST /v1/admin/simulated-platforms`` (admin): trust a simulated TEE platform.

    The limits are generous on purpose: a malformed key or label is refused by the service
    with 400 and a message saying what a valid one looks like, not with a schema error.
    """

    public_key: str = Field(max_length=256)
    label: str = Field(default="", max_length=1024)


class SimulatedPlatformResponse(BaseModel):
    """A registered simulated platform: public key (hex), label, first registration time."""

    public_key: str
    label: str
    created: str

    @classmethod
    def of(cls, record: SimulatedPlatformRecord) -> SimulatedPlatformResponse:
        """The answer describing ``record``."""
        return cls(public_key=record.public_key, label=record.label, created=record.created)


class SimulatedPlatformListResponse(BaseModel):
    """``GET /v1/admin/simulated-platforms``: the registered platforms, oldest first."""

    platforms: list[SimulatedPlatformResponse]


# -- Vault Transit --------------------------------------------------------------------------------


class TransitBody(BaseModel):
    """Fields every Transit request may carry; the routes refuse the ones set that we do not
    support (see :func:`cipherspark.kms.server.api.routes.transit.check_supported`)."""

    # Vault clients send fields we ignore (type, convergent_encryption...); reject only those
    # whose meaning we would silently change (context, nonce, batches).
    model_config = ConfigDict(extra="ignore", frozen=True)
    context: str | None = None
    nonce: str | None = None
    batch_input: list[Any] | None = None


class TransitEncryptRequest(TransitBody):
    """``POST /v1/transit/encrypt/{name}``."""

    plaintext: str = Field(max_length=48 * 1024)
    key_version: int | None = None


class TransitCiphertextRequest(TransitBody):
    """``POST /v1/transit/decrypt/{name}`` and ``/v1/transit/rewrap/{name}``."""

    ciphertext: str = Field(max_length=64 * 1024)
    key_version: int | None = None


class TransitDataKeyRequest(TransitBody):
    """``POST /v1/transit/datakey/{plaintext|wrapped}/{name}``."""

    bits: int = 256
