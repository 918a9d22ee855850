"""Key access on Spark executors (and the Python planner workers Spark starts on the driver).

Only *wrapped* data keys travel in options and task closures. Executors unwrap them through the
KMS interface and keep the result in this process's memory, so a reused Python worker unwraps
each key once. The KMS URL travels as an option; the credentials are read here, at the process
boundary, from ``CIPHERSPARK_APP_ID`` / ``CIPHERSPARK_API_KEY`` in the worker's environment (the
secure session puts them there before the JVM starts; they never enter Spark's conf or plan), or
from the files named by ``CIPHERSPARK_APP_ID_FILE`` / ``CIPHERSPARK_API_KEY_FILE`` (Kubernetes
secrets mounted as files).

Attested key release: when ``CIPHERSPARK_TEE`` is ``gramine-sgx``, ``tdx``, ``auto`` or
``simulated``, data keys are released only through the KMS server's attested unwrap (evidence
bound to a nonce and an ephemeral key, answer encrypted to that key), once per wrapped key per
process; the key stays in this process's memory only. With the embedded ``file://`` keystore,
``simulated`` runs the same protocol in-process against the key's stored policy (development
only); real TEEs with a ``file://`` KMS are refused: they need the KMS server.
``CIPHERSPARK_SIMULATED_TEE_KEY`` names the simulated-platform key file (default
``~/.cipherspark/simulated-tee/platform.key``). Unset (or ``none``): the plain unwrap, as before.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from cipherspark.errors import CredentialsError, KmsUnavailableError
from cipherspark.kms import Credentials, KeyManagementService, open_kms

__all__ = [
    "ENV_API_KEY",
    "ENV_API_KEY_FILE",
    "ENV_APP_ID",
    "ENV_APP_ID_FILE",
    "ENV_SIMULATED_TEE_KEY",
    "ENV_TEE",
    "executor_data_key",
    "executor_kms",
]

ENV_APP_ID = "CIPHERSPARK_APP_ID"
ENV_API_KEY = "CIPHERSPARK_API_KEY"
# Kubernetes mounts secrets as files: the variables may name files holding the values instead.
ENV_APP_ID_FILE = "CIPHERSPARK_APP_ID_FILE"
ENV_API_KEY_FILE = "CIPHERSPARK_API_KEY_FILE"
# Attested key release: which TEE produces evidence (unset or "none": plain unwrap).
ENV_TEE = "CIPHERSPARK_TEE"
ENV_SIMULATED_TEE_KEY = "CIPHERSPARK_SIMULATED_TEE_KEY"


def _setting(name: str, file_name: str) -> str | None:
    value = os.environ.get(name)
    if value:
        return value
    path = os.environ.get(file_name)
    if path:
        try:
            with open(path) as f:
                return f.read().strip() or None
        except OSError as exc:
            raise CredentialsError(f"cannot read {file_name} ({path}): {exc.strerror}") from exc
    return None

_lock = threading.Lock()
_kms: dict[str, KeyManagementService] = {}
_data_keys: dict[tuple[str, str, bytes], bytes] = {}


def executor_kms(url: str) -> KeyManagementService:
    """The KMS at ``url``, opened once per process with the environment's credentials."""
    with _lock:
        kms = _kms.get(url)
    if kms is None:
        app_id = _setting(ENV_APP_ID, ENV_APP_ID_FILE)
        api_key = _setting(ENV_API_KEY, ENV_API_KEY_FILE)
        credentials = Credentials(app_id, api_key) if app_id and api_key else None
        kms = open_kms(url, credentials)
        with _lock:
            _kms[url] = kms
    return kms


def executor_data_key(url: str, key_id: str, wrapped: bytes) -> bytes:
    """Unwrap ``wrapped`` under ``key_id`` at the KMS ``url``, once per process."""
    cache_key = (url, key_id, wrapped)
    with _lock:
        key = _data_keys.get(cache_key)
    if key is None:
        tee = os.environ.get(ENV_TEE, "").strip()
        if tee and tee != "none":
            key = _attested_data_key(url, key_id, wrapped, tee)
        else:
            key = executor_kms(url).unwrap_data_key(key_id, wrapped)
        with _lock:
            _data_keys[cache_key] = key
    return key


def _attested_data_key(url: str, key_id: str, wrapped: bytes, tee: str) -> bytes:
    """The data key through an attested unwrap with evidence from ``tee``.

    The backend decides what it can release to: the KMS server judges any TEE's evidence; the
    embedded ``file://`` keystore accepts only ``simulated``; other backends refuse. It is asked
    before the evidence provider is made, which may fail or create the simulated platform key.
    """
    from cipherspark.attestation import evidence_provider

    kms = executor_kms(url)
    try:
        kms.check_attested_release(tee)
    except KmsUnavailableError as exc:
        # Name the setting that asked for attestation: the backend does not know it.
        raise KmsUnavailableError(f"{ENV_TEE}={tee}: {exc}") from exc
    key_path = os.environ.get(ENV_SIMULATED_TEE_KEY)
    provider = evidence_provider(tee, simulated_key_path=Path(key_path) if key_path else None)
    return kms.attested_unwrap(key_id, wrapped, provider)
