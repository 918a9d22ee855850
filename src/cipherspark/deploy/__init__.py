"""Deployment helpers: Spark-on-Kubernetes submission, Gramine manifests, the SGX enclave's
measured launcher, attestation policies.

The Kubernetes objects themselves live in the repository's ``deploy/`` folder (a kustomize base and
the ``sgx``, ``tdx`` and ``simulated`` overlays); see ``docs/deploy-kubernetes.md``. This package
only computes things — the spark-submit argument list, a rendered manifest, the enclave's java
command, a policy document — and never prints, runs Spark, or exits.

Names are imported on first use: the enclave's launcher (:mod:`cipherspark.deploy.launcher`)
starts every Spark driver and executor in SGX, and must not pay for the attestation and HTTP
stack that the policy and manifest helpers import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cipherspark.deploy.gramine import (
        MANIFEST_TEMPLATE,
        ManifestPaths,
        discover_manifest_paths,
        manifest_enclave_config,
        render_manifest,
        trusted_paths,
    )
    from cipherspark.deploy.launcher import (
        PASSTHROUGH_ENV,
        EnclaveConfig,
        LaunchPlan,
        check_enclave_job,
        prepare_launch,
    )
    from cipherspark.deploy.policy import (
        MRENCLAVE_PLACEHOLDER,
        SigstructMeasurement,
        policy_document,
        read_sigstruct,
    )
    from cipherspark.deploy.submit import (
        CONTAINER_NAMES,
        OVERLAYS,
        SECRET_MOUNTS,
        SubmitCommand,
        SubmitRequest,
        build_submit_command,
        find_spark_submit,
        format_command,
    )

_MODULES = {
    "gramine": (
        "MANIFEST_TEMPLATE",
        "ManifestPaths",
        "discover_manifest_paths",
        "manifest_enclave_config",
        "render_manifest",
        "trusted_paths",
    ),
    "launcher": (
        "PASSTHROUGH_ENV",
        "EnclaveConfig",
        "LaunchPlan",
        "check_enclave_job",
        "prepare_launch",
    ),
    "policy": (
        "MRENCLAVE_PLACEHOLDER",
        "SigstructMeasurement",
        "policy_document",
        "read_sigstruct",
    ),
    "submit": (
        "CONTAINER_NAMES",
        "OVERLAYS",
        "SECRET_MOUNTS",
        "SubmitCommand",
        "SubmitRequest",
        "build_submit_command",
        "find_spark_submit",
        "format_command",
    ),
}
_HOME = {name: module for module, names in _MODULES.items() for name in names}

__all__ = [
    "CONTAINER_NAMES",
    "MANIFEST_TEMPLATE",
    "MRENCLAVE_PLACEHOLDER",
    "OVERLAYS",
    "PASSTHROUGH_ENV",
    "SECRET_MOUNTS",
    "EnclaveConfig",
    "LaunchPlan",
    "ManifestPaths",
    "SigstructMeasurement",
    "SubmitCommand",
    "SubmitRequest",
    "build_submit_command",
    "check_enclave_job",
    "discover_manifest_paths",
    "find_spark_submit",
    "format_command",
    "manifest_enclave_config",
    "policy_document",
    "prepare_launch",
    "read_sigstruct",
    "render_manifest",
    "trusted_paths",
]


def __getattr__(name: str) -> Any:
    """Import the submodule that defines ``name`` (PEP 562), once."""
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
