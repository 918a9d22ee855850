"""What Parquet's key-encryption keys (KEKs) are wrapped into, and how they come back.

Parquet Modular Encryption with double wrapping encrypts each file's data keys locally under a
KEK it makes, and asks the KMS client to wrap that KEK under a *master key* (the session's
key); the string :func:`wrap_key` returns is stored in the file's key material and given back
to :func:`unwrap_key` by readers. Two forms, chosen by what can unwrap them later:

``vault:vN:BASE64`` (a KMS server, no TEE)
    Transit encrypt of the KEK (:meth:`~cipherspark.kms.remote.RemoteKms.transit_encrypt`, by
    the process's one client of that KMS): what a Vault-Transit ``KmsClient`` stores, so pyarrow
    or parquet-java readers with a Transit client read the files.

``cspk1:WRAPPED:SEALED`` (the embedded ``file://`` keystore, and attested writers)
    An envelope through cipherspark's own key interface: a fresh data key from the KMS
    (``WRAPPED``: its wrapped form, base64), and the KEK sealed under that data key with
    AES-256-GCM (``SEALED``: base64 of nonce || ciphertext, associated data binding the master
    key's name). The embedded keystore has no Transit API; with a TEE configured, the data key
    of both writing and reading comes from
    :func:`~cipherspark.spark._executor.executor_data_key`, i.e. the attested unwrap (nonce,
    evidence, policy, JWE). Writers mint it wrapped and obtain it by attestation, as workload
    credentials of attested-only keys must. Attested writers keep this form on purpose: Transit
    encrypt of a chosen KEK needs no evidence, so the KMS refuses it to workload credentials of
    keys with a release policy (a worker host could otherwise forge files attested readers
    accept); a data key only attested release gives out ties the KEK to a measured writer.

With a TEE configured, a ``vault:`` KEK (a file some Vault-Transit client wrote) is opened by
the server's attested Transit decrypt, under the same evidence, policy and JWE protocol: never
a silent fallback to the unattested path.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cipherspark.errors import FormatError, IntegrityError, KmsUnavailableError
from cipherspark.kms import validate_key_name
from cipherspark.kms.remote import TRANSIT_PREFIX, RemoteKms
from cipherspark.settings import executor_config
from cipherspark.spark._executor import (
    attested_transit_plaintext,
    executor_data_key,
    executor_kms,
)

__all__ = ["ENVELOPE_PREFIX", "TRANSIT_PREFIX", "unwrap_key", "wrap_key"]

ENVELOPE_PREFIX = "cspk1:"
_AAD = b"cipherspark/pme/kek/v1\x00"
_NONCE = 12


def _is_server(url: str) -> bool:
    return url.startswith(("https://", "http://"))


def _transit(url: str) -> RemoteKms:
    """The process's client of the KMS server at ``url`` (the one the CSV source's workers
    use too: same credentials, CA, connection pool)."""
    kms = executor_kms(url)
    if not isinstance(kms, RemoteKms):
        # open_kms picks RemoteKms for every http(s) URL: this would be a new backend.
        raise KmsUnavailableError(f"the KMS at {url} offers no Vault Transit API")
    return kms


def _aad(master_key: str) -> bytes:
    return _AAD + master_key.encode()


def wrap_key(url: str, master_key: str, kek: bytes) -> str:
    """``kek`` wrapped under primary key ``master_key`` of the KMS at ``url`` (see above)."""
    validate_key_name(master_key)
    tee = executor_config().tee
    if _is_server(url) and tee is None:
        return _transit(url).transit_encrypt(master_key, kek)
    kms = executor_kms(url)
    if tee is not None:
        wrapped = kms.generate_wrapped_data_key(master_key)
        data_key = executor_data_key(url, master_key, wrapped)
    else:
        fresh = kms.generate_data_key(master_key)
        wrapped, data_key = fresh.wrapped, fresh.plaintext
    nonce = os.urandom(_NONCE)
    sealed = nonce + AESGCM(data_key).encrypt(nonce, kek, _aad(master_key))
    return ENVELOPE_PREFIX + _b64(wrapped) + ":" + _b64(sealed)


def unwrap_key(url: str, master_key: str, wrapped_kek: str) -> bytes:
    """The KEK in ``wrapped_kek`` (either form), wrapped under ``master_key`` at ``url``."""
    validate_key_name(master_key)
    tee = executor_config().tee
    if wrapped_kek.startswith(TRANSIT_PREFIX):
        if not _is_server(url):
            raise FormatError(
                f"this Parquet file's key under {master_key!r} is wrapped by Vault Transit: "
                f"it needs the KMS server that wrapped it, not {url}"
            )
        if tee is not None:
            # Released only to evidence the key's policy accepts: the attested Transit decrypt.
            return attested_transit_plaintext(url, master_key, wrapped_kek, tee)
        return _transit(url).transit_decrypt(master_key, wrapped_kek)
    if not wrapped_kek.startswith(ENVELOPE_PREFIX):
        raise FormatError(
            f"this Parquet file's key under {master_key!r} was not wrapped by cipherspark or "
            "Vault Transit"
        )
    try:
        wrapped_text, sealed_text = wrapped_kek[len(ENVELOPE_PREFIX) :].split(":")
        wrapped, sealed = _unb64(wrapped_text), _unb64(sealed_text)
    except (ValueError, binascii.Error) as exc:
        raise FormatError(
            f"this Parquet file's wrapped key under {master_key!r} is malformed"
        ) from exc
    if len(sealed) <= _NONCE:
        raise FormatError(f"this Parquet file's wrapped key under {master_key!r} is truncated")
    data_key = executor_data_key(url, master_key, wrapped)
    try:
        return AESGCM(data_key).decrypt(sealed[:_NONCE], sealed[_NONCE:], _aad(master_key))
    except InvalidTag as exc:
        raise IntegrityError(
            f"this Parquet file's wrapped key under {master_key!r} does not authenticate "
            "(altered, or wrapped under another key)"
        ) from exc


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)
