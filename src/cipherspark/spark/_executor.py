"""Key access on Spark executors (and the Python planner workers Spark starts on the driver).

Only *wrapped* data keys travel in options and task closures. Executors unwrap them through the
KMS interface and keep the result in this process's memory, so a reused Python worker unwraps
each key once. The KMS URL travels as an option; the credentials are read here, at the process
boundary, from ``CIPHERSPARK_APP_ID`` / ``CIPHERSPARK_API_KEY`` in the worker's environment (the
secure session puts them there before the JVM starts; they never enter Spark's conf or plan), or
from the files named by ``CIPHERSPARK_APP_ID_FILE`` / ``CIPHERSPARK_API_KEY_FILE`` (Kubernetes
secrets mounted as files).
"""

from __future__ import annotations

import os
import threading

from cipherspark.errors import CredentialsError
from cipherspark.kms import Credentials, KeyManagementService, open_kms

__all__ = [
    "ENV_API_KEY",
    "ENV_API_KEY_FILE",
    "ENV_APP_ID",
    "ENV_APP_ID_FILE",
    "executor_data_key",
    "executor_kms",
]

ENV_APP_ID = "CIPHERSPARK_APP_ID"
ENV_API_KEY = "CIPHERSPARK_API_KEY"
# Kubernetes mounts secrets as files: the variables may name files holding the values instead.
ENV_APP_ID_FILE = "CIPHERSPARK_APP_ID_FILE"
ENV_API_KEY_FILE = "CIPHERSPARK_API_KEY_FILE"


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
        key = executor_kms(url).unwrap_data_key(key_id, wrapped)
        with _lock:
            _data_keys[cache_key] = key
    return key
