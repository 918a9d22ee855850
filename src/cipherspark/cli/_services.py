"""Opening the KMS a command names with the shared options, and closing it again.

Every command that talks to a KMS goes through :func:`credentials` and :func:`open_service`
(applications) or :func:`open_admin` (the operator's admin token), so ``--kms``, ``--kms-ca``,
``--app-id`` and ``--api-key`` mean the same everywhere and every client is closed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from cipherspark import settings
from cipherspark.errors import UsageError
from cipherspark.kms import Credentials, KeyManagementService, open_kms

if TYPE_CHECKING:
    from cipherspark.kms.remote import KmsAdmin

__all__ = ["credentials", "open_admin", "open_service"]


def credentials(app_id: str | None, api_key: str | None) -> Credentials:
    """The application's credentials from ``--app-id`` / ``--api-key`` (or their variables)."""
    if not app_id or not api_key:
        raise UsageError(
            "KMS credentials missing: pass --app-id and --api-key or set "
            "CIPHERSPARK_APP_ID and CIPHERSPARK_API_KEY"
        )
    return Credentials(app_id, api_key)


@contextmanager
def open_service(
    url: str | None, ca_file: Path | None, creds: Credentials, *, create: bool = False
) -> Iterator[KeyManagementService]:
    """The KMS at ``url`` (``None``: the embedded keystore), closed when the block ends.

    ``ca_file`` pins an https:// server's CA (``--kms-ca``, or ``CIPHERSPARK_KMS_CA`` which the
    option reads); ``http://`` needs ``CIPHERSPARK_KMS_UNSAFE_PLAINTEXT=1``.
    """
    with open_kms(
        url, creds, create=create, ca_file=ca_file, unsafe_plaintext=settings.kms_unsafe_plaintext()
    ) as service:
        yield service


@contextmanager
def open_admin(
    url: str | None, ca_file: Path | None, admin_token: str | None
) -> Iterator[KmsAdmin]:
    """The KMS server's admin API at ``url``, closed when the block ends.

    Only a server has one: without ``--kms`` (which means the embedded keystore) this is a
    usage error naming the flag, rather than a guess at where a server might listen.
    """
    from cipherspark.kms.remote import KmsAdmin

    if url is None:
        raise UsageError(
            "the kms admin commands need the KMS server's URL: pass --kms "
            "https://HOST:PORT or set CIPHERSPARK_KMS"
        )
    with KmsAdmin(url, admin_token or "", ca_file=ca_file) as admin:
        yield admin
