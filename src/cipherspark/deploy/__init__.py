"""Deployment helpers: Spark-on-Kubernetes submission, Gramine manifests, attestation policies.

The Kubernetes objects themselves live in the repository's ``deploy/`` folder (a kustomize base and
the ``sgx``, ``tdx`` and ``simulated`` overlays); see ``docs/deploy-kubernetes.md``. This package
only computes things — the spark-submit argument list, a rendered manifest, a policy document — and
never prints, runs Spark, or exits.
"""

from __future__ import annotations

from cipherspark.deploy.gramine import (
    MANIFEST_TEMPLATE,
    ManifestPaths,
    discover_manifest_paths,
    render_manifest,
    trusted_paths,
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

__all__ = [
    "CONTAINER_NAMES",
    "MANIFEST_TEMPLATE",
    "MRENCLAVE_PLACEHOLDER",
    "OVERLAYS",
    "SECRET_MOUNTS",
    "ManifestPaths",
    "SigstructMeasurement",
    "SubmitCommand",
    "SubmitRequest",
    "build_submit_command",
    "discover_manifest_paths",
    "find_spark_submit",
    "format_command",
    "policy_document",
    "read_sigstruct",
    "render_manifest",
    "trusted_paths",
]
