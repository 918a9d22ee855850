"""Every ``CIPHERSPARK_*`` setting: its name, and the one module that reads the environment.

The library takes explicit arguments. Two places turn the environment into those arguments, both
through this module: the CLI (its options name these variables as their ``envvar``) and the
process boundary of Spark's Python workers, which the JVM starts with only an environment. What
those workers need crosses as one typed value, :class:`ExecutorConfig`:
:func:`~cipherspark.spark.secure_session` writes it into the environment the JVM passes on
(:meth:`ExecutorConfig.environ`), and :func:`executor_config` reads it back in the worker. The
credentials are the one secret among them: they never enter Spark's conf, plans or command
lines, only the worker's environment or files mounted for it (Kubernetes secrets).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cipherspark.errors import CredentialsError, UsageError

__all__ = [
    "ENV_API_KEY",
    "ENV_API_KEY_FILE",
    "ENV_APP_ID",
    "ENV_APP_ID_FILE",
    "ENV_BIGDL_API_KEY",
    "ENV_BIGDL_PRIMARY_KEY_PLAINTEXT",
    "ENV_CLUSTER_DIR",
    "ENV_DEBUG",
    "ENV_DEPLOY_DIR",
    "ENV_IMAGE",
    "ENV_KEY",
    "ENV_KEY_CACHE_SECONDS",
    "ENV_KMS",
    "ENV_KMS_ADMIN_TOKEN",
    "ENV_KMS_CA",
    "ENV_KMS_DATA",
    "ENV_KMS_UNSAFE_PLAINTEXT",
    "ENV_MASTER",
    "ENV_PCCS_CA",
    "ENV_PCCS_URL",
    "ENV_SIMULATED_TEE_KEY",
    "ENV_SPARK_PROPERTIES",
    "ENV_TEE",
    "ExecutorConfig",
    "SessionSettings",
    "bigdl_api_key",
    "bigdl_primary_key_plaintext",
    "debug_enabled",
    "default_simulated_key_path",
    "executor_config",
    "kms_unsafe_plaintext",
    "session_settings",
    "worker_credentials",
]

# -- the KMS and credentials ----------------------------------------------------------------------
ENV_KMS = "CIPHERSPARK_KMS"
ENV_KMS_CA = "CIPHERSPARK_KMS_CA"
#: ``1`` allows ``http://`` KMS URLs (tests and loopback demos only).
ENV_KMS_UNSAFE_PLAINTEXT = "CIPHERSPARK_KMS_UNSAFE_PLAINTEXT"
ENV_KMS_ADMIN_TOKEN = "CIPHERSPARK_KMS_ADMIN_TOKEN"
ENV_KMS_DATA = "CIPHERSPARK_KMS_DATA"
ENV_APP_ID = "CIPHERSPARK_APP_ID"
ENV_API_KEY = "CIPHERSPARK_API_KEY"
# Kubernetes mounts secrets as files: these name files holding the values instead.
ENV_APP_ID_FILE = "CIPHERSPARK_APP_ID_FILE"
ENV_API_KEY_FILE = "CIPHERSPARK_API_KEY_FILE"
ENV_KEY = "CIPHERSPARK_KEY"
#: How long a worker (a Python worker, a Parquet key helper) keeps a key it unwrapped, in
#: seconds: the bound on how long a key revoked at the KMS stays usable by a running executor.
ENV_KEY_CACHE_SECONDS = "CIPHERSPARK_KEY_CACHE_SECONDS"
#: 600 s, Parquet's own key-encryption-key cache lifetime
#: (``parquet.encryption.cache.lifetime.seconds``), so both caches bound a revocation alike.
DEFAULT_KEY_CACHE_SECONDS = 600
# -- attestation ----------------------------------------------------------------------------------
#: The evidence provider of attested key release (unset or ``none``: the plain unwrap).
ENV_TEE = "CIPHERSPARK_TEE"
ENV_SIMULATED_TEE_KEY = "CIPHERSPARK_SIMULATED_TEE_KEY"
ENV_PCCS_URL = "CIPHERSPARK_PCCS_URL"
ENV_PCCS_CA = "CIPHERSPARK_PCCS_CA"
# -- Spark, clusters, deployment ------------------------------------------------------------------
ENV_MASTER = "CIPHERSPARK_MASTER"
ENV_SPARK_PROPERTIES = "CIPHERSPARK_SPARK_PROPERTIES"
ENV_CLUSTER_DIR = "CIPHERSPARK_CLUSTER_DIR"
ENV_DEPLOY_DIR = "CIPHERSPARK_DEPLOY_DIR"
ENV_IMAGE = "CIPHERSPARK_IMAGE"
#: Any value: the CLI prints tracebacks.
ENV_DEBUG = "CIPHERSPARK_DEBUG"
# -- migrating from BigDL PPML --------------------------------------------------------------------
# `cipherspark migrate bigdl`'s secrets, for when its --bigdl-*-file options are not wanted:
# a flag's value would show in ps and in the shell's history.
ENV_BIGDL_API_KEY = "CIPHERSPARK_BIGDL_API_KEY"
ENV_BIGDL_PRIMARY_KEY_PLAINTEXT = "CIPHERSPARK_BIGDL_PRIMARY_KEY_PLAINTEXT"


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def _value(name: str) -> str | None:
    """The variable ``name``; ``None`` when unset or empty (``VAR= cmd`` means "not set", as
    a flag left out would)."""
    return os.environ.get(name) or None


def _seconds(value: str | None) -> int:
    if not value or not value.strip():
        return DEFAULT_KEY_CACHE_SECONDS
    try:
        return int(value.strip())
    except ValueError:
        raise UsageError(
            f"{ENV_KEY_CACHE_SECONDS} must be a whole number of seconds, not {value!r}"
        ) from None


@dataclass(frozen=True)
class ExecutorConfig:
    """What Spark's Python workers need to reach the KMS, besides the URL each scan carries.

    ``kms_ca`` pins a KMS server's CA; ``tee`` names the evidence provider for attested release
    (``None``: the plain unwrap); ``simulated_tee_key`` is the simulated platform's key file;
    ``app_id_file`` / ``api_key_file`` name mounted credential files; ``unsafe_plaintext_kms``
    allows an ``http://`` KMS; ``key_cache_seconds`` is how long a worker keeps a key it
    unwrapped (then it asks the KMS again, so a revocation reaches running executors within
    it). Paths should be absolute: workers run in their own folders.
    """

    kms_ca: Path | None = None
    tee: str | None = None
    simulated_tee_key: Path | None = None
    app_id_file: Path | None = None
    api_key_file: Path | None = None
    unsafe_plaintext_kms: bool = False
    key_cache_seconds: int = DEFAULT_KEY_CACHE_SECONDS

    def __post_init__(self) -> None:
        if self.key_cache_seconds < 1:
            raise UsageError(f"{ENV_KEY_CACHE_SECONDS} must be at least 1 second")

    def environ(self) -> dict[str, str]:
        """The environment entries that carry this configuration (unset fields are left out)."""
        entries = {
            ENV_KMS_CA: self.kms_ca,
            ENV_TEE: self.tee,
            ENV_SIMULATED_TEE_KEY: self.simulated_tee_key,
            ENV_APP_ID_FILE: self.app_id_file,
            ENV_API_KEY_FILE: self.api_key_file,
            ENV_KMS_UNSAFE_PLAINTEXT: "1" if self.unsafe_plaintext_kms else None,
            ENV_KEY_CACHE_SECONDS: (
                None
                if self.key_cache_seconds == DEFAULT_KEY_CACHE_SECONDS
                else self.key_cache_seconds
            ),
        }
        return {name: str(value) for name, value in entries.items() if value is not None}

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ExecutorConfig:
        """The configuration that ``environ`` carries (see :meth:`environ`)."""
        tee = environ.get(ENV_TEE, "").strip()
        return cls(
            kms_ca=_path(environ.get(ENV_KMS_CA)),
            tee=tee if tee and tee != "none" else None,
            simulated_tee_key=_path(environ.get(ENV_SIMULATED_TEE_KEY)),
            app_id_file=_path(environ.get(ENV_APP_ID_FILE)),
            api_key_file=_path(environ.get(ENV_API_KEY_FILE)),
            unsafe_plaintext_kms=environ.get(ENV_KMS_UNSAFE_PLAINTEXT) == "1",
            key_cache_seconds=_seconds(environ.get(ENV_KEY_CACHE_SECONDS)),
        )


def executor_config() -> ExecutorConfig:
    """This process's :class:`ExecutorConfig`, from its environment.

    Read on every call (it is a handful of lookups): a long-lived worker sees what its
    environment says now, and tests can change it.
    """
    return ExecutorConfig.from_environ(os.environ)


def _value_or_file(name: str, file: Path | None, file_variable: str) -> str | None:
    value = os.environ.get(name)
    if value:
        return value
    if file is not None:
        try:
            return file.read_text().strip() or None
        except OSError as exc:
            raise CredentialsError(f"cannot read {file_variable} ({file}): {exc.strerror}") from exc
    return None


def worker_credentials(config: ExecutorConfig) -> tuple[str, str] | None:
    """``(APP ID, API KEY)`` for a Spark worker: from ``CIPHERSPARK_APP_ID`` /
    ``CIPHERSPARK_API_KEY``, else from the files ``config`` names; ``None`` if either is
    missing."""
    app_id = _value_or_file(ENV_APP_ID, config.app_id_file, ENV_APP_ID_FILE)
    api_key = _value_or_file(ENV_API_KEY, config.api_key_file, ENV_API_KEY_FILE)
    return (app_id, api_key) if app_id and api_key else None


@dataclass(frozen=True)
class SessionSettings:
    """What a top-level Spark entry point (``cipherspark.ppml.PPMLContext``) takes from the
    environment: ``kms`` (``CIPHERSPARK_KMS``, ``None``: the embedded keystore), ``key``
    (``CIPHERSPARK_KEY``), ``credentials`` (:func:`worker_credentials`), ``executor``
    (:func:`executor_config`), ``master`` (``CIPHERSPARK_MASTER``) and ``spark_properties``
    (``CIPHERSPARK_SPARK_PROPERTIES``). Unset or empty variables are ``None``."""

    kms: str | None = None
    key: str | None = None
    # (APP ID, API KEY): the API key is a secret, so not in repr.
    credentials: tuple[str, str] | None = field(default=None, repr=False)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    master: str | None = None
    spark_properties: Path | None = None


def session_settings() -> SessionSettings:
    """This process's :class:`SessionSettings`, read from its environment now."""
    executor = executor_config()
    return SessionSettings(
        kms=_value(ENV_KMS),
        key=_value(ENV_KEY),
        credentials=worker_credentials(executor),
        executor=executor,
        master=_value(ENV_MASTER),
        spark_properties=_path(_value(ENV_SPARK_PROPERTIES)),
    )


def bigdl_api_key() -> str | None:
    """``CIPHERSPARK_BIGDL_API_KEY``: BigDL SimpleKMS's APIKEY for ``migrate bigdl`` (surrounding
    whitespace stripped, as from its file option); ``None`` if unset or empty."""
    return _stripped(ENV_BIGDL_API_KEY)


def bigdl_primary_key_plaintext() -> str | None:
    """``CIPHERSPARK_BIGDL_PRIMARY_KEY_PLAINTEXT``: BigDL's plaintext primary key (base64) for
    ``migrate bigdl`` (surrounding whitespace stripped); ``None`` if unset or empty."""
    return _stripped(ENV_BIGDL_PRIMARY_KEY_PLAINTEXT)


def _stripped(name: str) -> str | None:
    # As the --bigdl-*-file options read their files: `export X="$(cat key)"` or a value
    # pasted with a newline is the same secret.
    return os.environ.get(name, "").strip() or None


def default_simulated_key_path() -> Path:
    """Where this installation's simulated-platform key lives by default.

    ``CIPHERSPARK_SIMULATED_TEE_KEY`` if set, else ``~/.cipherspark/simulated-tee/platform.key``:
    the embedded keystore registers this key in the policies it writes, and executors sign with
    it, so both must resolve the same file.
    """
    configured = os.environ.get(ENV_SIMULATED_TEE_KEY)
    if configured:
        return Path(configured)
    return Path.home() / ".cipherspark" / "simulated-tee" / "platform.key"


def kms_unsafe_plaintext() -> bool:
    """``CIPHERSPARK_KMS_UNSAFE_PLAINTEXT=1``: the CLI may talk to an ``http://`` KMS."""
    return os.environ.get(ENV_KMS_UNSAFE_PLAINTEXT) == "1"


def debug_enabled() -> bool:
    """``CIPHERSPARK_DEBUG`` is set: the CLI shows tracebacks."""
    return bool(os.environ.get(ENV_DEBUG))
