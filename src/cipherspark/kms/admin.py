"""Administrative client of the KMS server: :class:`KmsAdmin`, authenticated by the admin token.

Applications and their credentials, the admin token itself, release policies of any app's key,
and the simulated TEE platforms the server trusts. Same transport as
:class:`~cipherspark.kms.remote.RemoteKms` (:mod:`cipherspark.kms._http`); also importable from
:mod:`cipherspark.kms.remote`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING
from urllib.parse import quote

from cipherspark.errors import KmsError, UsageError
from cipherspark.kms import _wire
from cipherspark.kms._http import Transport, list_field
from cipherspark.kms._wire import AppInfo, CredentialInfo, NewApp, NewCredential, SimulatedPlatform
from cipherspark.kms.base import validate_key_name

if TYPE_CHECKING:
    from cipherspark.attestation import AttestationPolicy

__all__ = ["KmsAdmin"]


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
        self._http = Transport(
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
        return [_wire.credential_info(c) for c in list_field(doc, "credentials", "credentials")]

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
        platforms = list_field(doc, "platforms", "simulated platforms")
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
