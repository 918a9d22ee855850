"""Shared fixtures: the repository's deploy/ folder, rendered overlays, schema validation."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
OVERLAYS = ("sgx", "tdx", "simulated")
#: The Kubernetes version the objects are validated against (offline, kubernetes-validate).
K8S_VERSION = "1.32.0"
#: The KMS the test enclaves trust (the Service of deploy/base/kms.yaml).
KMS_URL = "https://cipherspark-kms:8443"


def load_all(text: str) -> list[dict[str, Any]]:
    """The YAML documents of ``text`` (empty documents dropped)."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def pod_templates(overlay: str) -> dict[str, dict[str, Any]]:
    """The overlay's driver and executor pod templates."""
    folder = DEPLOY / "overlays" / overlay / "pod-templates"
    return {role: yaml.safe_load((folder / f"{role}.yaml").read_text())
            for role in ("driver", "executor")}


def kustomize(target: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize target`` as objects (the caller skips when kubectl is absent)."""
    done = subprocess.run(["kubectl", "kustomize", str(target)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return load_all(done.stdout)


@pytest.fixture(scope="session")
def rendered() -> Iterator[dict[str, list[dict[str, Any]]]]:
    """base and every overlay, rendered by kubectl's built-in kustomize."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed (Debian package 'kubectl'); cannot render "
                    "the kustomizations")
    yield {name: kustomize(DEPLOY / ("base" if name == "base" else f"overlays/{name}"))
           for name in ("base", *OVERLAYS)}


@pytest.fixture(scope="session")
def kms_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A self-signed CA certificate (PEM) standing in for the KMS's, as the image would hold it."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cipherspark-kms")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    path = tmp_path_factory.mktemp("kms-ca") / "kms-ca.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path
