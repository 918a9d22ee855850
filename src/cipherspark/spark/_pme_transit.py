"""A minimal client of the KMS server's Vault Transit API: encrypt and decrypt under a key.

Parquet Modular Encryption wraps *its own* key-encryption keys (random bytes Parquet makes)
under a master key, so it needs "encrypt these bytes", which the native API does not offer
(it mints data keys) and Transit does (``POST /v1/transit/encrypt/NAME``). The ``vault:vN:``
ciphertexts it answers are what a Vault-Transit ``KmsClient`` (parquet-java's sample
``VaultClient``, a pyarrow ``KmsClient`` over Transit) stores and reads, so other PME readers
can read cipherspark's files given access to the KMS.

Authentication is the native headers (``X-App-Id`` / ``X-Api-Key``), which the Transit routes
accept like every route; TLS pins the KMS's CA as :class:`~cipherspark.kms.remote.RemoteKms`
does. Transit errors are Vault-shaped (``{"errors": [message]}``, no ``code``), so the status
alone picks the cipherspark error.

This belongs with :class:`~cipherspark.kms.remote.RemoteKms` (``transit_encrypt`` /
``transit_decrypt``); it lives here until that module, which another change owns now, gains it.
"""

from __future__ import annotations

import base64
import os
import ssl
import time
from typing import Any
from urllib.parse import quote, urlparse

import httpx

from cipherspark.errors import (
    CipherSparkError,
    CredentialsError,
    IntegrityError,
    KeyNotFoundError,
    KeyStateError,
    KmsError,
    KmsServerError,
    KmsTlsError,
    KmsUnavailableError,
    PermissionDeniedError,
    UsageError,
)
from cipherspark.kms import Credentials, validate_key_name

__all__ = ["TransitClient"]

_RETRIES = 3
_BACKOFF = 0.1
# Status -> error type of a Transit answer (400 depends on the operation: see _raise).
_BY_STATUS: dict[int, type[CipherSparkError]] = {
    401: CredentialsError,
    403: PermissionDeniedError,
    404: KeyNotFoundError,
    409: KeyStateError,
}


def _tls_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)


class TransitClient:
    """Transit encrypt / decrypt at the KMS server ``url`` with ``credentials``.

    ``ca_file`` pins the server's CA; ``http://`` needs ``unsafe_plaintext``. Only failures to
    connect are retried: the request never reached the server.
    """

    def __init__(
        self,
        url: str,
        credentials: Credentials,
        *,
        ca_file: str | os.PathLike[str] | None = None,
        unsafe_plaintext: bool = False,
        timeout: float = 30.0,
    ) -> None:
        parsed = urlparse(url)
        if parsed.scheme == "http" and not unsafe_plaintext:
            raise KmsUnavailableError(
                "refusing plain http:// to the KMS (API keys and keys would travel in the "
                "clear); use https://, or pass unsafe_plaintext"
            )
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise UsageError(f"{url!r} is not an https:// KMS URL")
        self.url = url.rstrip("/")
        self._ca_file = ca_file
        verify: ssl.SSLContext | bool = False
        if parsed.scheme == "https":
            try:
                verify = ssl.create_default_context(
                    cafile=None if ca_file is None else os.fspath(ca_file)
                )
            except (OSError, ssl.SSLError) as exc:
                raise UsageError(f"cannot load the KMS CA file {ca_file}: {exc}") from exc
        self._client = httpx.Client(
            base_url=self.url,
            verify=verify,
            headers={"X-App-Id": credentials.app_id, "X-Api-Key": credentials.api_key},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
        )

    def close(self) -> None:
        """Close pooled connections."""
        self._client.close()

    def encrypt(self, key: str, plaintext: bytes) -> str:
        """The ``vault:vN:...`` ciphertext of ``plaintext`` under the latest version of ``key``."""
        data = self._post(
            "encrypt",
            key,
            {"plaintext": base64.b64encode(plaintext).decode()},
            f"wrapping under {key!r}",
        )
        ciphertext = data.get("ciphertext")
        if not isinstance(ciphertext, str) or not ciphertext.startswith("vault:v"):
            raise KmsError("the KMS answered a Transit encrypt without a vault:vN: ciphertext")
        return ciphertext

    def decrypt(self, key: str, ciphertext: str) -> bytes:
        """The plaintext of a ``vault:vN:...`` ciphertext under ``key``."""
        data = self._post("decrypt", key, {"ciphertext": ciphertext}, f"unwrapping under {key!r}")
        try:
            return base64.b64decode(str(data["plaintext"]), validate=True)
        except (KeyError, ValueError) as exc:
            raise KmsError("the KMS answered a Transit decrypt without a valid plaintext") from exc

    def _post(self, op: str, key: str, body: dict[str, str], what: str) -> dict[str, Any]:
        path = f"/v1/transit/{op}/{quote(validate_key_name(key), safe='')}"
        for attempt in range(_RETRIES + 1):
            try:
                response = self._client.post(path, json=body)
                break
            except httpx.ConnectError as exc:
                if _tls_failure(exc):
                    ca = f"the CA in {self._ca_file}" if self._ca_file else "the system CAs"
                    raise KmsTlsError(
                        f"TLS verification of the KMS at {self.url} failed: its certificate is "
                        f"not signed by {ca} (pin it with --kms-ca / CIPHERSPARK_KMS_CA)"
                    ) from exc
                if attempt == _RETRIES:
                    raise KmsUnavailableError(
                        f"cannot reach the KMS at {self.url}: connection failed after "
                        f"{_RETRIES + 1} attempts"
                    ) from exc
                time.sleep(_BACKOFF * 2**attempt)
            except httpx.TimeoutException as exc:
                raise KmsUnavailableError(
                    f"the KMS at {self.url} did not answer in time ({what})"
                ) from exc
            except httpx.HTTPError as exc:
                raise KmsUnavailableError(
                    f"talking to the KMS at {self.url} failed ({what}): {type(exc).__name__}"
                ) from exc
        try:
            doc = response.json() if response.content else {}
        except ValueError:
            doc = {}
        if not isinstance(doc, dict):
            doc = {}
        if response.status_code >= 300:
            self._raise(response.status_code, doc, op, what)
        data = doc.get("data")
        if not isinstance(data, dict):
            raise KmsError(f"the KMS answered {what} without Vault's data object")
        return data

    def _raise(self, status: int, doc: dict[str, Any], op: str, what: str) -> None:
        errors = doc.get("errors")
        message = str(errors[0]) if isinstance(errors, list) and errors else ""
        text = f"{what}: {message or f'the KMS refused the request ({status})'}"
        if status == 401:
            raise CredentialsError(f"the KMS at {self.url} rejected the credentials")
        kind = _BY_STATUS.get(status)
        if kind is not None:
            raise kind(text)
        if status == 400 and op == "decrypt":
            # A wrapped key that is malformed or does not authenticate: the file's key material
            # was altered, or it was wrapped under another key.
            raise IntegrityError(text)
        if 400 <= status < 500:
            raise KmsError(text)
        raise KmsServerError(f"the KMS at {self.url} failed ({status}) during {what}")
