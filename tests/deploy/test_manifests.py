"""deploy/: every overlay renders, validates against the Kubernetes schemas offline, and has the
security properties issue 6 asks for."""

from __future__ import annotations

import copy
import re
from typing import Any

import kubernetes_validate
import pytest

from cipherspark.deploy import CONTAINER_NAMES, SECRET_MOUNTS
from cipherspark.deploy.submit import SPARK_AUTH_SECRET_FILE
from tests.deploy.conftest import (
    DEPLOY,
    K8S_VERSION,
    KMS_URL,
    OVERLAYS,
    load_all,
    pod_templates,
)

SGX_RESOURCES = ("sgx.intel.com/epc", "sgx.intel.com/enclave", "sgx.intel.com/provision")
SECRETISH = re.compile(r"secret|password|token|api[-_]?key", re.IGNORECASE)


def validate(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(name, pod spec) of every workload among ``objects``."""
    out = []
    for obj in objects:
        if obj["kind"] == "Pod":
            out.append((obj["metadata"].get("name", "template"), obj["spec"]))
        elif obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            out.append((obj["metadata"]["name"], obj["spec"]["template"]["spec"]))
    return out


def all_pod_specs(rendered: dict[str, list[dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    specs = []
    for name, objects in rendered.items():
        specs += [(f"{name}/{n}", s) for n, s in pod_specs(objects)]
    for overlay in OVERLAYS:
        specs += [(f"{overlay}/pod-templates/{role}", pod["spec"])
                  for role, pod in pod_templates(overlay).items()]
    return specs


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


# -- rendering and schemas --------------------------------------------------------------------


def test_every_overlay_renders_the_same_kinds(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for name, objects in rendered.items():
        kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
        for expected in [("Namespace", "cipherspark"), ("ServiceAccount", "spark"),
                         ("Role", "spark-driver"), ("RoleBinding", "spark-driver"),
                         ("Deployment", "cipherspark-kms"), ("Service", "cipherspark-kms"),
                         ("PersistentVolumeClaim", "cipherspark-kms-data"),
                         ("NetworkPolicy", "cipherspark-kms"),
                         ("PersistentVolumeClaim", "cipherspark-data")]:
            assert expected in kinds, (name, expected)
        for obj in objects:
            if obj["kind"] != "Namespace":
                assert obj["metadata"]["namespace"] == "cipherspark", (name, obj)


def test_rendered_objects_validate_offline(rendered: dict[str, list[dict[str, Any]]]) -> None:
    count = 0
    for objects in rendered.values():
        for obj in objects:
            validate(obj)
            count += 1
    assert count >= 4 * 12


def test_pod_templates_and_examples_validate_offline() -> None:
    for overlay in OVERLAYS:
        for pod in pod_templates(overlay).values():
            validate(pod)
    for path in sorted((DEPLOY / "examples").rglob("*.yaml")):
        for obj in load_all(path.read_text()):
            validate(obj)


def test_validation_is_strict() -> None:
    pod = copy.deepcopy(pod_templates("sgx")["executor"])
    pod["spec"]["containers"][0]["securityContxt"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(pod)


# -- security properties ----------------------------------------------------------------------


def test_no_secret_in_env_or_args(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for name, spec in all_pod_specs(rendered):
        for container in containers(spec):
            for env in container.get("env", []):
                assert "valueFrom" not in env, (name, env)  # no secretKeyRef, no fieldRef games
                if SECRETISH.search(env["name"]):
                    assert env["name"].endswith("_FILE"), (name, env)
                    assert env["value"].startswith("/etc/cipherspark/"), (name, env)
            assert "envFrom" not in container, name
            for arg in [*container.get("command", []), *container.get("args", [])]:
                assert not re.search(r"--(api-key|app-id|admin-token)\b", arg), (name, arg)
                assert "spark.authenticate.secret=" not in arg, (name, arg)
    for objects in rendered.values():
        assert not [o for o in objects if o["kind"] == "Secret"], "secrets are never committed"


def test_pods_run_as_non_root_with_restricted_containers(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    for name, spec in all_pod_specs(rendered):
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True, name
        assert pod_sc["runAsUser"] != 0, name
        assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec.get("enableServiceLinks") is False, name
        assert not spec.get("hostNetwork") and not spec.get("hostPID"), name
        for volume in spec.get("volumes", []):
            assert "hostPath" not in volume, (name, volume)
        for container in containers(spec):
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (name, container["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (name, container["name"])
            assert not sc.get("privileged"), name
            # Read-only everywhere except aesmd, which keeps its state under /var/opt/aesmd.
            assert sc["readOnlyRootFilesystem"] is (container["name"] != "aesmd"), name


def test_requests_and_limits_set(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for name, spec in all_pod_specs(rendered):
        for container in containers(spec):
            resources = container["resources"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[kind]), (name, container["name"])


def test_only_spark_driver_gets_an_api_token(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for name, spec in all_pod_specs(rendered):
        expected = name.endswith("pod-templates/driver")
        assert spec["automountServiceAccountToken"] is expected, name
    for overlay in OVERLAYS:
        templates = pod_templates(overlay)
        assert templates["driver"]["spec"]["serviceAccountName"] == "spark"
        assert templates["executor"]["spec"]["serviceAccountName"] == "spark-executor"


def test_secrets_are_mounted_files_where_submit_expects_them() -> None:
    for overlay in OVERLAYS:
        for role, pod in pod_templates(overlay).items():
            spec = pod["spec"]
            main = {c["name"]: c for c in spec["containers"]}[CONTAINER_NAMES[role]]
            volumes = {v["name"]: v for v in spec["volumes"]}
            mounted = {}
            for mount in main["volumeMounts"]:
                source = volumes[mount["name"]]
                ref = source.get("secret", {}).get("secretName") or \
                    source.get("configMap", {}).get("name")
                if ref:
                    mounted[ref] = mount
            for ref, path in SECRET_MOUNTS.items():
                if overlay == "sgx" and ref == "cipherspark-kms-ca":
                    # The enclave's CA is measured into the image (a trusted file), not mounted.
                    assert ref not in mounted, (overlay, role)
                    continue
                assert mounted[ref]["mountPath"] == path, (overlay, role, ref)
                assert mounted[ref]["readOnly"] is True
            auth = volumes["spark-auth"]["secret"]
            assert auth["items"] == [{"key": "secret", "path": "secret"}]
            assert SPARK_AUTH_SECRET_FILE == f"{SECRET_MOUNTS['cipherspark-spark-auth']}/secret"
            for name in ("spark-auth", "kms-credentials"):
                assert volumes[name]["secret"]["defaultMode"] == 0o440
            assert {"name": "data", "mountPath": "/data"} in main["volumeMounts"]
            labels = pod["metadata"]["labels"]
            assert labels["cipherspark.io/kms-client"] == "true"


def test_sgx_overlay_requests_sgx_resources() -> None:
    for role, pod in pod_templates("sgx").items():
        spec = pod["spec"]
        main = spec["containers"][0]
        for kind in ("requests", "limits"):
            assert set(SGX_RESOURCES) <= set(main["resources"][kind]), role
        assert main["resources"]["requests"] == main["resources"]["limits"] | {
            "cpu": main["resources"]["requests"]["cpu"]}
        assert main["command"][-1] == "/opt/cipherspark/enclave-entrypoint.sh"
        aesmd = spec["initContainers"][0]
        assert aesmd["name"] == "aesmd" and aesmd["restartPolicy"] == "Always"
        assert set(SGX_RESOURCES) <= set(aesmd["resources"]["requests"])
        assert spec["nodeSelector"] == {"intel.feature.node.kubernetes.io/sgx": "true"}
        assert any(m["mountPath"] == "/etc/sgx_default_qcnl.conf" for m in main["volumeMounts"])
    for overlay in ("tdx", "simulated"):
        for pod in pod_templates(overlay).values():
            assert "sgx.intel.com" not in str(pod)
    for pod in pod_templates("tdx").values():
        assert pod["spec"]["runtimeClassName"] == "kata-qemu-tdx"


def test_sgx_overlay_ships_the_pccs_configuration(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    import json

    maps = {o["metadata"]["name"]: o for o in rendered["sgx"] if o["kind"] == "ConfigMap"}
    qcnl = json.loads(maps["cipherspark-sgx-qcnl"]["data"]["sgx_default_qcnl.conf"])
    assert qcnl["pccs_url"].startswith("https://") and qcnl["use_secure_cert"] is True


def test_kms_fetches_dcap_collateral_from_the_pccs_on_tee_overlays(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    import json

    def kms_env(overlay: str) -> dict[str, str]:
        kms = next(o for o in rendered[overlay]
                   if o["kind"] == "Deployment" and o["metadata"]["name"] == "cipherspark-kms")
        container = next(c for c in kms["spec"]["template"]["spec"]["containers"]
                         if c["name"] == "kms")
        assert container["command"][:3] == ["cipherspark", "kms", "serve"]
        return {e["name"]: e.get("value", "") for e in container.get("env", [])}

    maps = {o["metadata"]["name"]: o for o in rendered["sgx"] if o["kind"] == "ConfigMap"}
    qcnl = json.loads(maps["cipherspark-sgx-qcnl"]["data"]["sgx_default_qcnl.conf"])
    # The enclaves' quote provider and the KMS use the same PCCS.
    assert kms_env("sgx")["CIPHERSPARK_PCCS_URL"] == qcnl["pccs_url"].rstrip("/")
    assert kms_env("tdx")["CIPHERSPARK_PCCS_URL"].startswith("https://")
    assert "CIPHERSPARK_PCCS_URL" not in kms_env("simulated")


def test_role_is_namespaced_and_minimal(rendered: dict[str, list[dict[str, Any]]]) -> None:
    allowed = {"pods", "services", "configmaps", "persistentvolumeclaims"}
    for name, objects in rendered.items():
        kinds = [o["kind"] for o in objects]
        assert "ClusterRole" not in kinds and "ClusterRoleBinding" not in kinds, name
        roles = [o for o in objects if o["kind"] == "Role"]
        assert [r["metadata"]["name"] for r in roles] == ["spark-driver"]
        resources = set()
        for rule in roles[0]["rules"]:
            assert rule["apiGroups"] == [""]
            assert "*" not in rule["verbs"] and "*" not in rule["resources"]
            assert not {"escalate", "bind", "impersonate", "update", "patch"} & set(rule["verbs"])
            assert "resourceNames" not in rule or rule["resourceNames"]
            resources |= set(rule["resources"])
        assert resources == allowed
        binding = next(o for o in objects if o["kind"] == "RoleBinding")
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                      "name": "spark-driver"}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "spark",
                                        "namespace": "cipherspark"}]
        accounts = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ServiceAccount"}
        assert all(a["automountServiceAccountToken"] is False for a in accounts.values())


def test_kms_is_reachable_only_from_spark_pods_over_tls(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    for objects in rendered.values():
        by_name = {(o["kind"], o["metadata"]["name"]): o for o in objects}
        policy = by_name[("NetworkPolicy", "cipherspark-kms")]["spec"]
        assert policy["podSelector"] == {"matchLabels": {"app.kubernetes.io/name":
                                                         "cipherspark-kms"}}
        assert policy["policyTypes"] == ["Ingress"]
        [rule] = policy["ingress"]
        [peer] = rule["from"]
        assert set(peer) == {"podSelector"}  # same namespace only, no ipBlock
        assert peer["podSelector"]["matchLabels"] == {"cipherspark.io/kms-client": "true"}
        assert rule["ports"] == [{"port": 8443, "protocol": "TCP"}]
        deployment = by_name[("Deployment", "cipherspark-kms")]["spec"]
        assert deployment["replicas"] == 1 and deployment["strategy"]["type"] == "Recreate"
        pod = deployment["template"]["spec"]
        command = pod["containers"][0]["command"]
        assert command[:3] == ["cipherspark", "kms", "serve"]
        assert "--unsafe-plaintext" not in command
        assert command[command.index("--tls-cert") + 1].startswith("/etc/cipherspark/kms-tls/")
        tls = next(v for v in pod["volumes"] if v["name"] == "tls")
        assert tls["secret"] == {"secretName": "cipherspark-kms-tls", "defaultMode": 0o400}
        service = by_name[("Service", "cipherspark-kms")]
        assert service["spec"]["type"] == "ClusterIP"
        [port] = service["spec"]["ports"]
        assert KMS_URL == f"https://{service['metadata']['name']}:{port['port']}"
    # tdx / simulated pods name the KMS in their environment; SGX enclaves have it measured: the
    # Dockerfile's default KMS_URL (tests/deploy/test_gramine.py checks the manifest).
    for overlay in ("tdx", "simulated"):
        for pod in pod_templates(overlay).values():
            env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
            assert env["CIPHERSPARK_KMS"] == KMS_URL
    assert f"ARG KMS_URL={KMS_URL}\n" in (DEPLOY / "Dockerfile").read_text()


def test_data_volume_is_rwx_with_the_storage_class_parameter(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    def pvc(name: str) -> dict[str, Any]:
        return next(o for o in rendered[name] if o["kind"] == "PersistentVolumeClaim"
                    and o["metadata"]["name"] == "cipherspark-data")["spec"]

    for name in ("base", "sgx", "tdx"):
        assert pvc(name)["accessModes"] == ["ReadWriteMany"]
        assert pvc(name)["storageClassName"] == "nfs-client"
    assert pvc("simulated")["accessModes"] == ["ReadWriteOnce"]
    assert pvc("simulated")["storageClassName"] == "standard"
    assert pvc("simulated")["resources"]["requests"]["storage"] == "10Gi"


def test_namespace_enforces_restricted_pod_security(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    for objects in rendered.values():
        namespace = next(o for o in objects if o["kind"] == "Namespace")
        assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == \
            "restricted"
