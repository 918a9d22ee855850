"""The network KMS client: :class:`RemoteKms` talks to ``cipherspark kms serve`` over HTTPS.

The native API (keys, data keys, release policies, attested unwrap, workload credentials, the
dataset registry) and
the server's Vault Transit encrypt / decrypt (:meth:`RemoteKms.transit_encrypt`,
:meth:`RemoteKms.transit_decrypt`), over one transport (:mod:`cipherspark.kms._http`: TLS
pinning, connect retries, one cipherspark error per failure). Data keys wrapped by the server
are opaque blobs here; they unwrap only through the server. :class:`KmsAdmin` (the admin
token's calls, :mod:`cipherspark.kms.admin`) is importable from here too.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from cipherspark.errors import AttestationError, IntegrityError, KmsError, UsageError
from cipherspark.kms import _wire
from cipherspark.kms._http import Transport, b64field, list_field
from cipherspark.kms._wire import (
    AppInfo,
    CredentialInfo,
    KeyDescription,
    NewApp,
    NewCredential,
    SimulatedPlatform,
)
from cipherspark.kms.admin import KmsAdmin
from cipherspark.kms.base import (
    Credentials,
    DataKey,
    KeyInfo,
    KeyManagementService,
    validate_key_name,
)
from cipherspark.kms.registry import DatasetRecord, dataset_location

if TYPE_CHECKING:
    from cipherspark.attestation import AttestationPolicy, EvidenceProvider

__all__ = [
    "TRANSIT_PREFIX",
    "AppInfo",
    "CredentialInfo",
    "KeyDescription",
    "KmsAdmin",
    "NewApp",
    "NewCredential",
    "RemoteKms",
    "SimulatedPlatform",
]

#: How every Transit ciphertext starts (``vault:v`` then the key version and ``:``).
TRANSIT_PREFIX = "vault:v"


class RemoteKms(KeyManagementService):
    """:class:`KeyManagementService` over HTTPS to a cipherspark KMS server.

    ``ca_file`` pins the server's CA (or its self-signed certificate); ``None`` uses the system
    CAs. ``http://`` URLs need ``unsafe_plaintext=True``.
    """

    def __init__(
        self,
        url: str,
        credentials: Credentials,
        *,
        ca_file: str | os.PathLike[str] | None = None,
        timeout: float = 30.0,
        unsafe_plaintext: bool = False,
    ) -> None:
        self._http = Transport(
            url,
            ca_file=ca_file,
            timeout=timeout,
            unsafe_plaintext=unsafe_plaintext,
            headers={"X-App-Id": credentials.app_id, "X-Api-Key": credentials.api_key},
        )

    @property
    def url(self) -> str:
        """The server's base URL (no credentials in it)."""
        return self._http.url

    def close(self) -> None:
        """Close pooled connections."""
        self._http.close()

    @staticmethod
    def _path(name: str, suffix: str = "") -> str:
        return f"/v1/keys/{quote(validate_key_name(name), safe='')}{suffix}"

    def _info(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, what: str
    ) -> KeyInfo:
        return _wire.key_info(self._http.request(method, path, body, what=what))

    def create_key(self, name: str) -> KeyInfo:
        """Create primary key ``name`` on the server."""
        validate_key_name(name)
        return self._info("POST", "/v1/keys", {"name": name}, what=f"creating key {name!r}")

    def list_keys(self) -> list[KeyInfo]:
        """This app's keys."""
        doc = self._http.request("GET", "/v1/keys", what="listing keys")
        return [_wire.key_info(k) for k in list_field(doc, "keys", "keys")]

    def describe_key(self, name: str) -> KeyInfo:
        """One key."""
        return self._info("GET", self._path(name), what=f"key {name!r}")

    def ping(self) -> None:
        """Check that the server answers (``/healthz``); the errors of any request otherwise."""
        self._http.request("GET", "/healthz", what="health check")

    def describe(self, name: str) -> KeyDescription:
        """The server's full description of a key (versions, state, deletion date)."""
        return _wire.key_description(
            self._http.request("GET", self._path(name), what=f"key {name!r}")
        )

    def generate_data_key(self, key_id: str) -> DataKey:
        """A fresh data key and its server-wrapped form."""
        doc = self._http.request(
            "POST",
            self._path(key_id, "/datakey/plaintext"),
            what=f"generating a data key under {key_id!r}",
        )
        return DataKey(
            key_id=key_id, plaintext=b64field(doc, "plaintext"), wrapped=b64field(doc, "wrapped")
        )

    def generate_wrapped_data_key(self, key_id: str) -> bytes:
        """A fresh data key, wrapped only (the plaintext never leaves the server)."""
        doc = self._http.request(
            "POST",
            self._path(key_id, "/datakey/wrapped"),
            what=f"generating a data key under {key_id!r}",
        )
        return b64field(doc, "wrapped")

    def unwrap_data_key(self, key_id: str, wrapped: bytes) -> bytes:
        """The data key inside ``wrapped`` (unwrapped by the server)."""
        doc = self._http.request(
            "POST",
            self._path(key_id, "/unwrap"),
            {"wrapped": _wire.b64encode(wrapped)},
            what=f"unwrapping a data key under {key_id!r}",
        )
        return b64field(doc, "plaintext")

    def rewrap_data_key(self, key_id: str, wrapped: bytes) -> bytes:
        """``wrapped`` re-wrapped under the key's current version."""
        doc = self._http.request(
            "POST",
            self._path(key_id, "/rewrap"),
            {"wrapped": _wire.b64encode(wrapped)},
            what=f"rewrapping a data key under {key_id!r}",
        )
        return b64field(doc, "wrapped")

    def rotate_key(self, key_id: str) -> KeyInfo:
        """Add a new version of ``key_id``."""
        return self._info("POST", self._path(key_id, "/rotate"), what=f"rotating {key_id!r}")

    def set_min_decryption_version(self, key_id: str, version: int) -> KeyInfo:
        """Retire versions of ``key_id`` below ``version``."""
        return self._info(
            "POST",
            self._path(key_id, "/config"),
            {"min_decryption_version": version},
            what=f"configuring {key_id!r}",
        )

    def set_enabled(self, key_id: str, enabled: bool) -> KeyInfo:
        """Enable or disable ``key_id``."""
        action = "/enable" if enabled else "/disable"
        return self._info("POST", self._path(key_id, action), what=f"{action[1:]} {key_id!r}")

    def schedule_deletion(self, key_id: str, pending_days: int = 7) -> KeyDescription:
        """Schedule ``key_id`` for deletion after ``pending_days``; unusable from now on."""
        return _wire.key_description(
            self._http.request(
                "POST",
                self._path(key_id, "/schedule-deletion"),
                {"pending_days": pending_days},
                what=f"scheduling deletion of {key_id!r}",
            )
        )

    def cancel_deletion(self, key_id: str) -> KeyInfo:
        """Cancel a scheduled deletion."""
        return self._info(
            "POST",
            self._path(key_id, "/cancel-deletion"),
            what=f"cancelling deletion of {key_id!r}",
        )

    # -- Vault Transit --------------------------------------------------------------------------

    def transit_encrypt(self, key_id: str, plaintext: bytes) -> str:
        """Encrypt ``plaintext`` (any bytes) under the latest version of ``key_id`` with the
        server's Transit API (``POST /v1/transit/encrypt/NAME``).

        Unlike :meth:`generate_data_key`, the caller chooses the bytes: Parquet Modular
        Encryption wraps its own key-encryption keys this way. The answer, a ``vault:vN:BASE64``
        ciphertext (:data:`TRANSIT_PREFIX`), is what a Vault-Transit client stores and reads, so
        other Vault-Transit readers with access to this KMS decrypt it too.

        :raises KeyNotFoundError: this app has no key ``key_id``.
        :raises PermissionDeniedError: this credential may not encrypt under it.
        :raises KeyStateError: the key is disabled or pending deletion.
        :raises KmsError: the KMS refused the request or answered without a ciphertext.
        """
        what = f"Transit encrypt under {key_id!r}"
        doc = self._http.request(
            "POST",
            self._transit("encrypt", key_id),
            {"plaintext": _wire.b64encode(plaintext)},
            what=what,
        )
        ciphertext = _vault_data(doc, what).get("ciphertext")
        if not isinstance(ciphertext, str) or not ciphertext.startswith(TRANSIT_PREFIX):
            raise KmsError(f"the KMS answered {what} without a vault:vN: ciphertext")
        return ciphertext

    def transit_decrypt(self, key_id: str, ciphertext: str) -> bytes:
        """The plaintext of a ``vault:vN:`` ``ciphertext`` under ``key_id`` (Transit decrypt,
        ``POST /v1/transit/decrypt/NAME``).

        :raises IntegrityError: ``ciphertext`` is malformed or does not authenticate under
            ``key_id`` (altered, or encrypted under another key).
        :raises KeyNotFoundError: this app has no key ``key_id``.
        :raises PermissionDeniedError: this credential may not decrypt under it (a workload
            credential and a key with a release policy: attested-only keys release nothing
            over Transit).
        :raises KeyStateError: the key is disabled, pending deletion, or the ciphertext's
            version is retired.
        """
        what = f"Transit decrypt under {key_id!r}"
        doc = self._http.request(
            "POST",
            self._transit("decrypt", key_id),
            {"ciphertext": ciphertext},
            what=what,
            # Transit errors carry no code: a 400 here is the ciphertext the server refused.
            vault_bad_request=IntegrityError,
        )
        try:
            return _wire.b64decode(_vault_data(doc, what).get("plaintext"))
        except ValueError as exc:
            raise KmsError(f"the KMS answered {what} without a valid plaintext") from exc

    @staticmethod
    def _transit(operation: str, name: str) -> str:
        return f"/v1/transit/{operation}/{quote(validate_key_name(name), safe='')}"

    # -- the app's workload credentials (owner credential) --------------------------------------

    def create_workload_credential(self, label: str = "") -> NewCredential:
        """Mint a workload credential of this app (this client must hold the owner credential);
        its API KEY is in the answer only."""
        doc = self._http.request(
            "POST",
            "/v1/credentials",
            {"role": "workload", "label": label},
            what="creating a workload credential",
        )
        return _wire.new_credential(doc)

    def credentials(self) -> list[CredentialInfo]:
        """This app's credentials, revoked ones too (owner credential)."""
        doc = self._http.request("GET", "/v1/credentials", what="listing credentials")
        return [_wire.credential_info(c) for c in list_field(doc, "credentials", "credentials")]

    def revoke_credential(self, credential_id: str) -> CredentialInfo:
        """Revoke one of this app's workload credentials (owner credential)."""
        doc = self._http.request(
            "DELETE",
            f"/v1/credentials/{quote(credential_id, safe='')}",
            what=f"revoking credential {credential_id!r}",
        )
        return _wire.credential_info(doc)

    # -- attested key release ------------------------------------------------------------------

    def check_attested_release(self, tee: str) -> None:
        """Nothing to refuse here: the server judges every TEE's evidence by the key's policy."""

    def set_policy(self, key_id: str, policy: AttestationPolicy) -> AttestationPolicy:
        """Set ``key_id``'s release policy on the server; the server's normalised copy."""
        from cipherspark.attestation import AttestationPolicy

        doc = self._http.request(
            "PUT",
            self._path(key_id, "/policy"),
            {"policy": policy.to_dict()},
            what=f"setting the release policy of {key_id!r}",
        )
        return AttestationPolicy.from_dict(doc.get("policy"))

    def get_policy(self, key_id: str) -> AttestationPolicy | None:
        """``key_id``'s release policy, or ``None`` (none: attested unwraps are denied)."""
        from cipherspark.attestation import AttestationPolicy

        doc = self._http.request(
            "GET", self._path(key_id, "/policy"), what=f"reading the release policy of {key_id!r}"
        )
        return None if doc.get("policy") is None else AttestationPolicy.from_dict(doc["policy"])

    def attestation_nonce(self, key_id: str) -> bytes:
        """A fresh single-use nonce for one attested unwrap under ``key_id``."""
        doc = self._http.request(
            "POST",
            self._path(key_id, "/attest/nonce"),
            what=f"asking for an attestation nonce for {key_id!r}",
        )
        return b64field(doc, "nonce")

    def attested_unwrap(
        self,
        key_id: str,
        wrapped: bytes,
        provider: EvidenceProvider,
        *,
        collateral: str | None = None,
    ) -> bytes:
        """The data key in ``wrapped``, released only to TEE evidence the key's policy accepts.

        Fetches a nonce, makes an ephemeral P-256 key pair, has ``provider`` produce evidence
        over SHA-512(nonce || public key), posts it with the wrapped key, and opens the JWE
        answer with the ephemeral private key. A refusal is :class:`PolicyDeniedError` with
        the server's reason code.
        """
        key = self._attested_release(
            key_id,
            "/attest/unwrap",
            {"wrapped": _wire.b64encode(wrapped)},
            provider,
            collateral=collateral,
            what=f"attested unwrap under {key_id!r}",
        )
        if len(key) != 32:
            raise AttestationError("the released data key has the wrong length", "signature")
        return key

    def attested_transit_decrypt(
        self,
        key_id: str,
        ciphertext: str,
        provider: EvidenceProvider,
        *,
        collateral: str | None = None,
    ) -> bytes:
        """The plaintext of the ``vault:vN:`` ``ciphertext`` under ``key_id``, released only to
        TEE evidence the key's policy accepts (the protocol of :meth:`attested_unwrap`): what a
        Vault-Transit client wrapped, such as a Parquet file's key-encryption key written by
        pyarrow, opened in an attested worker."""
        return self._attested_release(
            key_id,
            "/attest/transit-decrypt",
            {"ciphertext": ciphertext},
            provider,
            collateral=collateral,
            what=f"attested Transit decrypt under {key_id!r}",
        )

    def _attested_release(
        self,
        key_id: str,
        route: str,
        payload: dict[str, Any],
        provider: EvidenceProvider,
        *,
        collateral: str | None,
        what: str,
    ) -> bytes:
        from cipherspark.attestation import EphemeralKey, bind

        nonce = self.attestation_nonce(key_id)
        ephemeral = EphemeralKey.generate()
        evidence = provider.evidence(bind(nonce, ephemeral.public_bytes))
        body: dict[str, Any] = {
            "nonce": _wire.b64encode(nonce),
            "tee": evidence.tee,
            "evidence": _wire.b64encode(evidence.quote),
            "public_key": _wire.b64encode(ephemeral.public_bytes),
            **payload,
        }
        if collateral is not None:
            body["collateral"] = collateral
        doc = self._http.request("POST", self._path(key_id, route), body, what=what)
        token = doc.get("jwe")
        if not isinstance(token, str):
            raise KmsError(f"the KMS answered {what} without a JWE")
        return ephemeral.open(token)

    # -- the dataset registry (cipherspark.kms.registry) ----------------------------------------

    def dataset_at(self, location: str) -> DatasetRecord | None:
        """The record this app has registered at ``location`` (``GET /v1/datasets?location=``),
        or ``None``."""
        if dataset_location(location) != location:
            raise UsageError(f"{location!r} is not an absolute, normalised location")
        doc = self._http.request_or_none(
            "GET",
            "/v1/datasets?" + urlencode({"location": location}),
            what="reading the dataset registry",
            absent=_wire.DATASET_NOT_FOUND,
        )
        if doc is None:
            return None
        record = _wire.dataset_record(doc)
        if record.location != location:
            raise KmsError("the KMS answered with the record of another location")
        return record

    def find_dataset(self, dataset_id: str) -> list[DatasetRecord]:
        """Every record of dataset ``dataset_id`` in this app, by location."""
        doc = self._http.request(
            "GET",
            "/v1/datasets?" + urlencode({"dataset_id": dataset_id}),
            what="reading the dataset registry",
        )
        found = [_wire.dataset_record(d) for d in list_field(doc, "datasets", "datasets")]
        if any(r.dataset_id != dataset_id for r in found):
            raise KmsError("the KMS answered with records of another dataset")
        return sorted(found, key=lambda r: r.location)

    def register_dataset(
        self,
        record: DatasetRecord,
        *,
        previous: DatasetRecord | None,
        wrapped_key: bytes,
        proof: bytes,
    ) -> None:
        """Compare-and-swap ``previous`` for ``record`` on the server (``PUT /v1/datasets``):
        :class:`~cipherspark.errors.DatasetConflictError` if the record there is not
        ``previous`` (or the dataset would not move forward), :class:`IntegrityError` for a
        bad proof or a wrapped key that is not the record's."""
        self._http.request(
            "PUT",
            "/v1/datasets",
            {
                "record": _record_body(record),
                "previous": None if previous is None else _record_body(previous),
                "wrapped_key": _wire.b64encode(wrapped_key),
                "proof": _wire.b64encode(proof),
            },
            what=f"registering the dataset at {record.location}",
        )

    def move_dataset(
        self,
        source: DatasetRecord,
        target: DatasetRecord,
        *,
        wrapped_key: bytes,
        proof: bytes,
    ) -> None:
        """Move the record ``source`` to ``target.location`` (``POST /v1/datasets/move``)."""
        self._http.request(
            "POST",
            "/v1/datasets/move",
            {
                "source": _record_body(source),
                "target": _record_body(target),
                "wrapped_key": _wire.b64encode(wrapped_key),
                "proof": _wire.b64encode(proof),
            },
            what=f"moving the dataset at {source.location} to {target.location}",
        )


def _record_body(record: DatasetRecord) -> dict[str, Any]:
    return {
        "location": record.location,
        "dataset_id": record.dataset_id,
        "key_id": record.key_id,
        "generation": record.generation,
        "manifest_sha256": record.manifest_sha256,
        "wrapped_key_sha256": record.wrapped_key_sha256,
    }


def _vault_data(doc: dict[str, Any], what: str) -> dict[str, Any]:
    """The ``data`` object of a Vault-shaped answer; :class:`KmsError` without one."""
    data = doc.get("data")
    if not isinstance(data, dict):
        raise KmsError(f"the KMS answered {what} without Vault's data object")
    return data
