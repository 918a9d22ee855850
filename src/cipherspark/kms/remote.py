"""The network KMS client: :class:`RemoteKms` talks to ``cipherspark kms serve`` over HTTPS.

One :class:`httpx.Client` per instance keeps connections alive. Only failures to *connect* are
retried (with exponential backoff): the request never reached the server, so retrying cannot
repeat an operation. Every other failure maps to one cipherspark error with one clear message,
by the contract in :mod:`cipherspark.kms._wire` (which the server answers by, too). Data keys
wrapped by the server are opaque blobs here; they unwrap only through the server.
"""

from __future__ import annotations

import os
import ssl
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlparse

import httpx

from cipherspark.errors import (
    AttestationError,
    KmsError,
    KmsTlsError,
    KmsUnavailableError,
    UsageError,
)
from cipherspark.kms import _wire
from cipherspark.kms._wire import (
    AppInfo,
    CredentialInfo,
    KeyDescription,
    NewApp,
    NewCredential,
    SimulatedPlatform,
)
from cipherspark.kms.base import (
    Credentials,
    DataKey,
    KeyInfo,
    KeyManagementService,
    validate_key_name,
)

if TYPE_CHECKING:
    from cipherspark.attestation import AttestationPolicy, EvidenceProvider

__all__ = [
    "AppInfo",
    "CredentialInfo",
    "KeyDescription",
    "KmsAdmin",
    "NewApp",
    "NewCredential",
    "RemoteKms",
    "SimulatedPlatform",
]

_RETRIES = 3
_BACKOFF = 0.1
# TLS 1.2 suites offered: ECDHE with AES-GCM or ChaCha20-Poly1305, the server's list
# (cipherspark.kms.server.tls.TLS12_CIPHERS, not imported: it would load the server package;
# tests/kms/test_tls.py checks the two agree). Python's default list also offers CBC suites.
_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL"


def _tls_context(url: str, ca_file: str | os.PathLike[str] | None) -> ssl.SSLContext | bool:
    if urlparse(url).scheme != "https":
        return False
    try:
        context = ssl.create_default_context(cafile=None if ca_file is None else os.fspath(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load the KMS CA file {ca_file}: {exc}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(_TLS12_CIPHERS)  # TLS 1.3's suites (all AEAD) are not affected
    return context


def _check_url(url: str, unsafe_plaintext: bool) -> str:
    parsed = urlparse(url)
    if parsed.scheme == "http" and not unsafe_plaintext:
        # KmsUnavailableError: this transport is not available unless explicitly unlocked.
        raise KmsUnavailableError(
            "refusing plain http:// to the KMS (API keys and data keys would "
            "travel in the clear); use https://, or pass unsafe_plaintext"
        )
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise UsageError(f"{url!r} is not an https:// KMS URL")
    if parsed.username or parsed.password or parsed.query:
        raise UsageError("KMS URLs carry no credentials or query; use --app-id/--api-key")
    return url.rstrip("/")


def _is_tls_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc) or "SSL" in str(exc)


class _Http:
    """Shared transport: connection reuse, timeouts, connect retries, error mapping."""

    def __init__(
        self,
        url: str,
        *,
        ca_file: str | os.PathLike[str] | None,
        timeout: float,
        unsafe_plaintext: bool,
        headers: dict[str, str],
    ) -> None:
        self.url = _check_url(url, unsafe_plaintext)
        self._ca_file = ca_file
        self._client = httpx.Client(
            base_url=self.url,
            verify=_tls_context(self.url, ca_file),
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            limits=httpx.Limits(max_keepalive_connections=8, keepalive_expiry=30),
        )

    def close(self) -> None:
        self._client.close()

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, what: str
    ) -> dict[str, Any]:
        """Send one request; the JSON answer, or the matching cipherspark error."""
        response: httpx.Response | None = None
        for attempt in range(_RETRIES + 1):
            try:
                response = self._client.request(method, path, json=body)
                break
            except httpx.ConnectError as exc:
                if _is_tls_failure(exc):
                    ca = f"the CA in {self._ca_file}" if self._ca_file else "the system CAs"
                    raise KmsTlsError(
                        f"TLS verification of the KMS at {self.url} failed: its certificate "
                        f"is not signed by {ca} (pin the server's certificate with --kms-ca / "
                        "CIPHERSPARK_KMS_CA)"
                    ) from exc
                if attempt == _RETRIES:
                    raise KmsUnavailableError(
                        f"cannot reach the KMS at {self.url}: connection failed after "
                        f"{_RETRIES + 1} attempts"
                    ) from exc
                time.sleep(_BACKOFF * (2**attempt))
            except httpx.TimeoutException as exc:
                raise KmsUnavailableError(
                    f"the KMS at {self.url} did not answer in time ({what})"
                ) from exc
            except httpx.HTTPError as exc:
                raise KmsUnavailableError(
                    f"talking to the KMS at {self.url} failed ({what}): {type(exc).__name__}"
                ) from exc
        assert response is not None
        return self._answer(response, what)

    def _answer(self, response: httpx.Response, what: str) -> dict[str, Any]:
        try:
            doc = response.json() if response.content else {}
        except ValueError:
            doc = {}
        if not isinstance(doc, dict):
            doc = {}
        _wire.raise_for_answer(response.status_code, doc, url=self.url, what=what)
        return doc


def _b64field(doc: dict[str, Any], name: str) -> bytes:
    try:
        return _wire.b64decode(doc[name])
    except (KeyError, ValueError) as exc:
        raise KmsError(f"the KMS answered without a valid {name!r}") from exc


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
        self._http = _Http(
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
        return [_wire.key_info(k) for k in _list(doc, "keys", "keys")]

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
            key_id=key_id, plaintext=_b64field(doc, "plaintext"), wrapped=_b64field(doc, "wrapped")
        )

    def generate_wrapped_data_key(self, key_id: str) -> bytes:
        """A fresh data key, wrapped only (the plaintext never leaves the server)."""
        doc = self._http.request(
            "POST",
            self._path(key_id, "/datakey/wrapped"),
            what=f"generating a data key under {key_id!r}",
        )
        return _b64field(doc, "wrapped")

    def unwrap_data_key(self, key_id: str, wrapped: bytes) -> bytes:
        """The data key inside ``wrapped`` (unwrapped by the server)."""
        doc = self._http.request(
            "POST",
            self._path(key_id, "/unwrap"),
            {"wrapped": _wire.b64encode(wrapped)},
            what=f"unwrapping a data key under {key_id!r}",
        )
        return _b64field(doc, "plaintext")

    def rewrap_data_key(self, key_id: str, wrapped: bytes) -> bytes:
        """``wrapped`` re-wrapped under the key's current version."""
        doc = self._http.request(
            "POST",
            self._path(key_id, "/rewrap"),
            {"wrapped": _wire.b64encode(wrapped)},
            what=f"rewrapping a data key under {key_id!r}",
        )
        return _b64field(doc, "wrapped")

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
        return [_wire.credential_info(c) for c in _list(doc, "credentials", "credentials")]

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
        return _b64field(doc, "nonce")

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
        from cipherspark.attestation import EphemeralKey, bind

        nonce = self.attestation_nonce(key_id)
        ephemeral = EphemeralKey.generate()
        evidence = provider.evidence(bind(nonce, ephemeral.public_bytes))
        body: dict[str, Any] = {
            "nonce": _wire.b64encode(nonce),
            "tee": evidence.tee,
            "evidence": _wire.b64encode(evidence.quote),
            "public_key": _wire.b64encode(ephemeral.public_bytes),
            "wrapped": _wire.b64encode(wrapped),
        }
        if collateral is not None:
            body["collateral"] = collateral
        doc = self._http.request(
            "POST",
            self._path(key_id, "/attest/unwrap"),
            body,
            what=f"attested unwrap under {key_id!r}",
        )
        token = doc.get("jwe")
        if not isinstance(token, str):
            raise KmsError("the KMS answered an attested unwrap without a JWE")
        key = ephemeral.open(token)
        if len(key) != 32:
            raise AttestationError("the released data key has the wrong length", "signature")
        return key


def _list(doc: dict[str, Any], name: str, what: str) -> list[Any]:
    value = doc.get(name)
    if not isinstance(value, list):
        raise KmsError(f"the KMS answered without a list of {what}")
    return value


class KmsAdmin:
    """Administrative calls (admin token): applications and their credentials, the admin token
    itself, release policies of any app's key, and the simulated TEE platforms the server
    trusts."""

    def __init__(
        self,
        url: str,
        admin_token: str,
        *,
        ca_file: str | os.PathLike[str] | None = None,
        timeout: float = 30.0,
        unsafe_plaintext: bool = False,
    ) -> None:
        if not admin_token:
            raise UsageError(
                "the admin token is missing (--admin-token or CIPHERSPARK_KMS_ADMIN_TOKEN)"
            )
        self._http = _Http(
            url,
            ca_file=ca_file,
            timeout=timeout,
            unsafe_plaintext=unsafe_plaintext,
            headers={"X-Admin-Token": admin_token},
        )

    def close(self) -> None:
        """Close pooled connections."""
        self._http.close()

    def create_app(self, name: str) -> NewApp:
        """Register application ``name``; its API KEY is in the answer only."""
        doc = self._http.request("POST", "/v1/apps", {"name": name}, what=f"creating app {name!r}")
        return _wire.new_app(doc)

    @staticmethod
    def _app(app_id: str, suffix: str = "") -> str:
        return f"/v1/admin/apps/{quote(app_id, safe='')}{suffix}"

    def set_app_enabled(self, app_id: str, enabled: bool) -> AppInfo:
        """Disable an app (all its credentials are refused from their next request) or enable
        it again."""
        action = "enable" if enabled else "disable"
        doc = self._http.request(
            "POST", self._app(app_id, f"/{action}"), what=f"{action} app {app_id!r}"
        )
        return _wire.app_info(doc)

    def create_credential(
        self, app_id: str, role: str = "workload", label: str = ""
    ) -> NewCredential:
        """Mint a credential (``workload`` or ``owner``) of ``app_id``; its API KEY is in the
        answer only."""
        doc = self._http.request(
            "POST",
            self._app(app_id, "/credentials"),
            {"role": role, "label": label},
            what=f"creating a {role} credential of {app_id!r}",
        )
        return _wire.new_credential(doc)

    def credentials(self, app_id: str) -> list[CredentialInfo]:
        """``app_id``'s credentials, revoked ones too, oldest first."""
        doc = self._http.request(
            "GET", self._app(app_id, "/credentials"), what=f"listing credentials of {app_id!r}"
        )
        return [_wire.credential_info(c) for c in _list(doc, "credentials", "credentials")]

    def revoke_credential(self, app_id: str, credential_id: str) -> CredentialInfo:
        """Revoke a credential of ``app_id``: refused from its next request on."""
        doc = self._http.request(
            "DELETE",
            self._app(app_id, f"/credentials/{quote(credential_id, safe='')}"),
            what=f"revoking credential {credential_id!r} of {app_id!r}",
        )
        return _wire.credential_info(doc)

    def rotate_admin_token(self) -> str:
        """A new admin token (shown once); the old one, which this client holds, stops working
        at once: open a new client with the answer."""
        doc = self._http.request("POST", "/v1/admin/admin-token/rotate", what="rotating the token")
        token = doc.get("admin_token")
        if not isinstance(token, str) or not token:
            raise KmsError("the KMS answered the rotation without a new admin token")
        return token

    def set_policy(self, app_id: str, key_id: str, policy: AttestationPolicy) -> AttestationPolicy:
        """Set the release policy of ``app_id``'s key ``key_id`` (as its owner could)."""
        from cipherspark.attestation import AttestationPolicy

        path = self._app(app_id, f"/keys/{quote(validate_key_name(key_id), safe='')}/policy")
        doc = self._http.request(
            "PUT",
            path,
            {"policy": policy.to_dict()},
            what=f"setting the release policy of {key_id!r} of {app_id!r}",
        )
        return AttestationPolicy.from_dict(doc.get("policy"))

    def __enter__(self) -> KmsAdmin:
        """Use as a context manager that closes the connections."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close on leaving the ``with`` block."""
        self.close()

    # -- simulated TEE platforms -----------------------------------------------------------------

    def register_simulated_platform(self, public_key: str, label: str = "") -> SimulatedPlatform:
        """Trust the simulated platform ``public_key`` (64 hex digits, as ``cipherspark attest
        platform-key`` prints it) for attested release. Registering it again only replaces the
        label."""
        from cipherspark.attestation.simulated import validate_platform_key

        key = validate_platform_key(public_key)
        return _wire.simulated_platform(
            self._http.request(
                "POST",
                "/v1/admin/simulated-platforms",
                {"public_key": key, "label": label},
                what=f"registering the simulated platform {key}",
            )
        )

    def simulated_platforms(self) -> list[SimulatedPlatform]:
        """The simulated platforms the server trusts, oldest first."""
        doc = self._http.request(
            "GET", "/v1/admin/simulated-platforms", what="listing the simulated platforms"
        )
        platforms = _list(doc, "platforms", "simulated platforms")
        return [_wire.simulated_platform(p) for p in platforms]

    def remove_simulated_platform(self, public_key: str) -> SimulatedPlatform:
        """Stop trusting a simulated platform; the record removed (:class:`KeyNotFoundError`
        if it was not registered)."""
        from cipherspark.attestation.simulated import validate_platform_key

        key = validate_platform_key(public_key)
        return _wire.simulated_platform(
            self._http.request(
                "DELETE",
                f"/v1/admin/simulated-platforms/{key}",
                what=f"removing the simulated platform {key}",
            )
        )
