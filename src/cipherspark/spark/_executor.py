"""Key access on Spark executors (and the Python planner workers Spark starts on the driver).

Only *wrapped* data keys travel in options and task closures. Executors unwrap them through the
KMS interface and keep the result in this process's memory for
:attr:`~cipherspark.settings.ExecutorConfig.key_cache_seconds` (``CIPHERSPARK_KEY_CACHE_SECONDS``,
600 s by default), so a reused Python worker unwraps each key about once per period, and a key
revoked at the KMS (or a credential revoked) stops working in running executors within it. The
KMS URL travels as an option; everything else comes from this process's
:class:`~cipherspark.settings.ExecutorConfig` (which the secure session hands to the JVM it
starts) and the credentials from the worker's environment or mounted files
(:func:`~cipherspark.settings.worker_credentials`): they never enter Spark's conf or plan.

Attested key release: when the configuration names a TEE (``gramine-sgx``, ``tdx``, ``auto`` or
``simulated``), data keys are released only through the KMS's attested unwrap (evidence bound to
a nonce and an ephemeral key, answer encrypted to that key), once per wrapped key per process;
the key stays in this process's memory only. The backend decides what it can release to: the
KMS server judges any TEE's evidence; the embedded ``file://`` keystore runs the same protocol
in-process for ``simulated`` only (development); others refuse.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from cipherspark.errors import KmsUnavailableError
from cipherspark.kms import Credentials, KeyManagementService, open_kms
from cipherspark.settings import ENV_TEE, executor_config, worker_credentials

if TYPE_CHECKING:
    from cipherspark.attestation import EvidenceProvider

__all__ = ["attested_transit_plaintext", "executor_data_key", "executor_kms"]

_lock = threading.Lock()
_kms: dict[str, KeyManagementService] = {}
# (url, key id, wrapped key) -> (data key, time.monotonic() after which it is asked for again)
_data_keys: dict[tuple[str, str, bytes], tuple[bytes, float]] = {}


def executor_kms(url: str) -> KeyManagementService:
    """The KMS at ``url``, opened once per process with the environment's credentials."""
    with _lock:
        kms = _kms.get(url)
    if kms is None:
        config = executor_config()
        found = worker_credentials(config)
        credentials = Credentials(*found) if found else None
        kms = open_kms(
            url, credentials, ca_file=config.kms_ca, unsafe_plaintext=config.unsafe_plaintext_kms
        )
        with _lock:
            _kms[url] = kms
    return kms


def executor_data_key(url: str, key_id: str, wrapped: bytes) -> bytes:
    """Unwrap ``wrapped`` under ``key_id`` at the KMS ``url``, once per process and
    ``key_cache_seconds``."""
    cache_key = (url, key_id, wrapped)
    now = time.monotonic()
    with _lock:
        cached = _data_keys.get(cache_key)
        # Expired entries go, whichever key they hold: none outlives its period in memory.
        for stale in [k for k, (_, until) in _data_keys.items() if until <= now]:
            del _data_keys[stale]
    if cached is not None and cached[1] > now:
        return cached[0]
    config = executor_config()
    if config.tee is not None:
        key = _attested_data_key(url, key_id, wrapped, config.tee)
    else:
        key = executor_kms(url).unwrap_data_key(key_id, wrapped)
    with _lock:
        _data_keys[cache_key] = (key, time.monotonic() + config.key_cache_seconds)
    return key


def _attested_data_key(url: str, key_id: str, wrapped: bytes, tee: str) -> bytes:
    """The data key through an attested unwrap with evidence from ``tee``.

    The backend decides what it can release to: the KMS server judges any TEE's evidence; the
    embedded ``file://`` keystore accepts only ``simulated``; other backends refuse. It is asked
    before the evidence provider is made, which may fail or create the simulated platform key.
    """
    kms, provider = _attested(url, tee)
    return kms.attested_unwrap(key_id, wrapped, provider)


def attested_transit_plaintext(url: str, key_id: str, ciphertext: str, tee: str) -> bytes:
    """The plaintext of the ``vault:vN:`` ``ciphertext`` under ``key_id``, through the KMS
    server's attested Transit decrypt with evidence from ``tee`` (not cached here: its callers,
    Parquet's key-encryption-key caches, keep what it returns for their lifetime)."""
    from cipherspark.kms.remote import RemoteKms

    kms, provider = _attested(url, tee)
    if not isinstance(kms, RemoteKms):
        raise KmsUnavailableError(f"the KMS at {url} offers no Vault Transit API")
    return kms.attested_transit_decrypt(key_id, ciphertext, provider)


def _attested(url: str, tee: str) -> tuple[KeyManagementService, EvidenceProvider]:
    """The KMS at ``url`` and an evidence provider for ``tee``, once the KMS said it can
    release to that TEE."""
    from cipherspark.attestation import evidence_provider

    kms = executor_kms(url)
    try:
        kms.check_attested_release(tee)
    except KmsUnavailableError as exc:
        # Name the setting that asked for attestation: the backend does not know it.
        raise KmsUnavailableError(f"{ENV_TEE}={tee}: {exc}") from exc
    return kms, evidence_provider(tee, simulated_key_path=executor_config().simulated_tee_key)
