"""The Simple Query on Spark with attested key release (simulated TEE) through a KMS server.

Spark's Python workers unwrap data keys only through the server's attested unwrap
(``CIPHERSPARK_TEE=simulated``) once the operator has registered the simulated platform
(``kms simulated-platform add``): the audit log shows the attested releases, and the same
workload credential without a TEE gets nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cipherspark.attestation import (
    AttestationPolicy,
    code_measurement,
    load_simulated_platform_key,
    simulated_platform_public_key,
)
from cipherspark.kms import Credentials
from cipherspark.kms.remote import RemoteKms
from tests.kms.server.conftest import free_port, start_server, stop_server

pytestmark = pytest.mark.spark

KEY = "attested"


def _cli(*args: str, env: dict[str, str], cwd: Path,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "cipherspark", *args],
                            capture_output=True, text=True, timeout=300, env=env, cwd=cwd)
    if check:
        assert result.returncode == 0, f"{args[:3]} failed:\n{result.stderr[-3000:]}"
    return result


def _policy(platform_key: str, measurement: str) -> AttestationPolicy:
    return AttestationPolicy.from_dict({
        "tee_types": ["simulated"],
        "simulated": {"platform_keys": [platform_key], "measurements": [measurement]}})


def test_simple_query_with_attested_release(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIPHERSPARK_")}
    init = json.loads(_cli("kms", "init", "--data", str(tmp_path / "data"), "--json",
                           env=env, cwd=tmp_path).stdout)
    server = start_server(tmp_path / "data", free_port(), tmp_path)
    try:
        app = json.loads(_cli("kms", "app", "create", "attested-app", "--kms", server.url,
                              "--kms-ca", str(server.ca), "--json",
                              env={**env, "CIPHERSPARK_KMS_ADMIN_TOKEN": init["admin_token"]},
                              cwd=tmp_path).stdout)
        platform_file = tmp_path / "platform.key"
        public = simulated_platform_public_key(load_simulated_platform_key(platform_file))
        # The operator trusts this installation's simulated platform (the key's policy alone
        # does not make the server trust it).
        _cli("kms", "simulated-platform", "add", public, "--label", "spark test",
             "--kms", server.url, "--kms-ca", str(server.ca),
             env={**env, "CIPHERSPARK_KMS_ADMIN_TOKEN": init["admin_token"]}, cwd=tmp_path)
        kms = RemoteKms(server.url, Credentials(app["app_id"], app["api_key"]),
                        ca_file=server.ca)
        kms.create_key(KEY)
        kms.set_policy(KEY, _policy(public, code_measurement()))
        env.update({"CIPHERSPARK_KMS": server.url, "CIPHERSPARK_KMS_CA": str(server.ca),
                    "CIPHERSPARK_APP_ID": app["app_id"], "CIPHERSPARK_API_KEY": app["api_key"],
                    "CIPHERSPARK_KEY": KEY, "CIPHERSPARK_TEE": "simulated",
                    "CIPHERSPARK_SIMULATED_TEE_KEY": str(platform_file)})
        generated = _cli("generate", "people.csv", "--rows", "2000", "--seed", "7",
                         env=env, cwd=tmp_path).stdout
        expected = generated.strip().splitlines()[-1].split(":")[-1].strip()
        _cli("encrypt", "people.csv", "people.cspk", env=env, cwd=tmp_path)
        # The cluster holds only a workload credential; the owner's stays with the owner.
        workload = json.loads(_cli("kms", "credential", "create", "--app", app["app_id"],
                                   "--role", "workload", "--json", "--kms", server.url,
                                   "--kms-ca", str(server.ca),
                                   env={**env, "CIPHERSPARK_KMS_ADMIN_TOKEN":
                                        init["admin_token"]}, cwd=tmp_path).stdout)
        cluster = {**env, "CIPHERSPARK_API_KEY": workload["api_key"]}
        result = _cli("query", "simple", "-i", "people.cspk", "-o", "developers.cspk",
                      "--master", "local[2]", env=cluster, cwd=tmp_path)
        assert f"Developers aged 20-40: {expected}" in result.stdout
        audit = [json.loads(line) for line in
                 (tmp_path / "data" / "audit.log").read_text().splitlines()]
        released = [e for e in audit if e["op"] == "datakey.attested_unwrap"]
        assert released and all(e["result"] == "ok" for e in released)
        assert {e["credential"] for e in released} == {workload["credential_id"]}
        # The same workload credential without a TEE: the key is attested-only, nothing runs.
        untrusted = {k: v for k, v in cluster.items() if k != "CIPHERSPARK_TEE"}
        plain = _cli("query", "simple", "-i", "people.cspk", "-o", "plain.cspk",
                     "--master", "local[2]", env=untrusted, cwd=tmp_path, check=False)
        assert plain.returncode != 0
        assert "attested" in plain.stderr, plain.stderr[-2000:]
        assert not (tmp_path / "plain.cspk").exists()
        # A policy that no longer lists this code's measurement is refused by the server's
        # attested unwrap (tests/kms/server/test_attested.py) through the same executor call
        # (tests/attestation/test_local_attested.py); through Spark and the server, for the
        # Parquet path, in tests/spark/test_pme_server.py: not a fourth Spark start here.
        kms.close()
    finally:
        stop_server(server)
