"""Every TEE name used anywhere in deploy/ is an evidence provider cipherspark knows.

``CIPHERSPARK_TEE`` selects the provider of attested key release (settings.ExecutorConfig, then
cipherspark.attestation.evidence_provider): a name that is not one (the SGX templates once said
``sgx``, a TEE *type*) makes every attested unwrap fail, so that path never ran. Checked in the
files themselves (no kubectl needed), in what kustomize renders, and in the SGX manifest's
measured settings; and the check is shown to catch the old value.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from cipherspark.attestation.providers import PROVIDER_NAMES
from cipherspark.settings import ENV_TEE, ExecutorConfig
from tests.deploy.conftest import DEPLOY, OVERLAYS, load_all, pod_templates

#: What CIPHERSPARK_TEE may say: a provider, or "none" (the plain unwrap; settings maps it to
#: no TEE, as it does an unset variable).
VALID = {*PROVIDER_NAMES, "none"}
#: The provider each overlay's pods must use.
EXPECTED = {"sgx": "gramine-sgx", "tdx": "tdx", "simulated": "none"}
_ASSIGNMENT = re.compile(rf"{ENV_TEE}\s*[=:]\s*[\"']?([^\s\"']*)")


def env_tee_values(objects: list[dict[str, Any]], source: str) -> list[tuple[str, str]]:
    """(where, value) of every CIPHERSPARK_TEE entry in the containers of ``objects``."""
    found = []
    for obj in objects:
        spec = obj.get("spec", {})
        spec = spec.get("template", {}).get("spec", spec)
        for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
            for env in container.get("env", []):
                if env["name"] == ENV_TEE:
                    found.append((f"{source} {container['name']}", str(env.get("value"))))
    return found


def configmap_tee_values(objects: list[dict[str, Any]], source: str) -> list[tuple[str, str]]:
    """(where, value) of the ``tee`` entry of every cipherspark-tee ConfigMap in ``objects``."""
    return [(f"{source} ConfigMap cipherspark-tee", obj["data"]["tee"]) for obj in objects
            if obj.get("kind") == "ConfigMap" and obj["metadata"]["name"] == "cipherspark-tee"]


def kustomization_tee_values(path: Path) -> list[tuple[str, str]]:
    """The ``tee=`` literals of a kustomization's cipherspark-tee generator."""
    doc = yaml.safe_load(path.read_text())
    found = []
    for generator in doc.get("configMapGenerator", []):
        if generator["name"] == "cipherspark-tee":
            for literal in generator.get("literals", []):
                key, _, value = literal.partition("=")
                if key == "tee":
                    found.append((f"{path.relative_to(DEPLOY)} tee", value))
    return found


def text_tee_values(path: Path, text: str) -> list[tuple[str, str]]:
    """``CIPHERSPARK_TEE=VALUE`` / ``: VALUE`` written in any other file (scripts, Dockerfile)."""
    return [(f"{path.relative_to(DEPLOY)}", m[1]) for m in _ASSIGNMENT.finditer(text)]


def tee_names_in_files() -> list[tuple[str, str]]:
    """Every TEE name in deploy/, read from the project's files directly."""
    found: list[tuple[str, str]] = []
    for path in sorted(DEPLOY.rglob("*")):
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if path.suffix in (".yaml", ".yml"):
            docs = load_all(text)
            found += env_tee_values(docs, str(path.relative_to(DEPLOY)))
            found += configmap_tee_values(docs, str(path.relative_to(DEPLOY)))
            if path.name == "kustomization.yaml":
                found += kustomization_tee_values(path)
        elif ENV_TEE in text:
            found += text_tee_values(path, text)
    return found


def invalid(found: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(where, value) for where, value in found if value not in VALID]


def test_every_tee_name_in_the_files_is_a_provider() -> None:
    found = tee_names_in_files()
    assert len(found) >= 7, found  # the tdx and simulated templates, the three ConfigMaps
    assert invalid(found) == []


def test_each_overlay_names_its_own_provider() -> None:
    for overlay, expected in EXPECTED.items():
        values = kustomization_tee_values(DEPLOY / "overlays" / overlay / "kustomization.yaml")
        assert [v for _, v in values] == [expected], overlay
        for role, pod in pod_templates(overlay).items():
            names = {v for _, v in env_tee_values([pod], f"{overlay}/{role}")}
            # SGX enclaves take their TEE from the signed manifest, not from the pod.
            assert names == (set() if overlay == "sgx" else {expected}), (overlay, role)
            config = ExecutorConfig.from_environ(
                {e["name"]: e["value"] for e in pod["spec"]["containers"][0].get("env", [])})
            assert config.tee == (None if expected in ("none", "gramine-sgx") else expected)


def test_the_rendered_overlays_name_providers_only(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    found = []
    for name, objects in rendered.items():
        found += env_tee_values(objects, name) + configmap_tee_values(objects, name)
    assert {v for w, v in found if w.startswith("sgx ")} == {"gramine-sgx"}
    assert len(found) >= len(OVERLAYS)
    assert invalid(found) == []


def test_the_check_catches_the_old_sgx_value() -> None:
    """The SGX templates said CIPHERSPARK_TEE=sgx: put it back (in memory) and it is caught."""
    pod = pod_templates("sgx")["executor"]
    pod["spec"]["containers"][0].setdefault("env", []).append({"name": ENV_TEE, "value": "sgx"})
    assert invalid(env_tee_values([pod], "sgx/executor")) == [
        ("sgx/executor spark-kubernetes-executor", "sgx")]
    kustomization = (DEPLOY / "overlays" / "sgx" / "kustomization.yaml").read_text()
    old = yaml.safe_load(kustomization.replace("tee=gramine-sgx", "tee=sgx"))
    literals = [lit for g in old["configMapGenerator"] for lit in g.get("literals", [])]
    assert "tee=sgx" in literals and "sgx" not in VALID
    assert invalid(text_tee_values(DEPLOY / "x.sh", "export CIPHERSPARK_TEE=sgx\n")) == [
        ("x.sh", "sgx")]
