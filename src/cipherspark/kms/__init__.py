"""Key management: the :class:`KeyManagementService` interface and its backends.

``file://DIR`` selects the embedded keystore (:class:`LocalKms`); ``https://HOST:PORT`` the KMS
server (:class:`cipherspark.kms.remote.RemoteKms`), which implements the same interface.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from cipherspark.errors import CredentialsError, UsageError
from cipherspark.kms.base import (
    Credentials,
    DataKey,
    KeyInfo,
    KeyManagementService,
    validate_key_name,
)

if TYPE_CHECKING:
    from cipherspark.kms.local import LocalKms

__all__ = [
    "DEFAULT_KMS_DIR",
    "Credentials",
    "DataKey",
    "KeyInfo",
    "KeyManagementService",
    "LocalKms",
    "kms_url_for_directory",
    "open_kms",
    "validate_key_name",
]

DEFAULT_KMS_DIR = Path(".cipherspark") / "kms"


def __getattr__(name: str) -> object:
    # LocalKms pulls in cryptography's Rust bindings (~30 ms of the 0.6 s `cipherspark --help`
    # took, python -X importtime): load it when first used, not when the CLI builds its commands.
    if name == "LocalKms":
        from cipherspark.kms.local import LocalKms

        return LocalKms
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def kms_url_for_directory(directory: str | os.PathLike[str]) -> str:
    """The ``file://`` URL of a keystore directory (made absolute)."""
    return Path(directory).absolute().as_uri()


def open_kms(
    url: str | None,
    credentials: Credentials | None,
    *,
    create: bool = False,
    ca_file: str | os.PathLike[str] | None = None,
    unsafe_plaintext: bool = False,
) -> KeyManagementService:
    """Open the KMS at ``url`` (``None``: ``.cipherspark/kms`` under the working directory).

    A plain path is taken as a keystore directory. ``create`` initialises an absent local keystore.
    For ``https://`` servers, ``ca_file`` pins the server's CA (Spark's workers get it from their
    :class:`~cipherspark.settings.ExecutorConfig`). ``http://`` needs ``unsafe_plaintext``.
    """
    if url is None:
        url = kms_url_for_directory(DEFAULT_KMS_DIR)
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        if credentials is None:
            raise CredentialsError(
                "the local KMS needs an APP ID and API KEY "
                "(--app-id/--api-key or CIPHERSPARK_APP_ID/CIPHERSPARK_API_KEY)"
            )
        if parsed.scheme == "file" and parsed.netloc not in ("", "localhost"):
            raise UsageError(f"file:// KMS URLs must be local, not on host {parsed.netloc!r}")
        path = unquote(parsed.path) if parsed.scheme == "file" else url
        from cipherspark.kms.local import LocalKms

        return LocalKms(path, credentials, create=create)
    if parsed.scheme in ("https", "http"):
        from cipherspark.kms.remote import RemoteKms

        if credentials is None:
            raise CredentialsError(
                "the KMS server needs an APP ID and API KEY "
                "(--app-id/--api-key or CIPHERSPARK_APP_ID/CIPHERSPARK_API_KEY)"
            )
        remote = RemoteKms(url, credentials, ca_file=ca_file, unsafe_plaintext=unsafe_plaintext)
        # Fail at open, like the local keystore does, rather than at the first key operation.
        try:
            remote.ping()
        except BaseException:
            remote.close()
            raise
        return remote
    raise UsageError(f"unknown KMS URL scheme {parsed.scheme!r} (use file:// or https://)")
