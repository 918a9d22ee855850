"""The Gramine manifest renders to valid TOML whose trusted files all exist here, which measures
(not merely allows) Python, the JRE, Spark's jars, cipherspark, the launcher and the KMS CA, and
which fixes what the enclave runs: a fixed entrypoint and command line, no insecure__ option,
only the launcher's allow-listed host variables, the KMS URL and CA measured."""

from __future__ import annotations

import shutil
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import cipherspark
from cipherspark.attestation.providers import PROVIDER_NAMES
from cipherspark.cli import main
from cipherspark.deploy import (
    PASSTHROUGH_ENV,
    discover_manifest_paths,
    manifest_enclave_config,
    render_manifest,
    trusted_paths,
)
from cipherspark.deploy.gramine import GRAMINE_LIBDIRS, ManifestPaths
from cipherspark.errors import UsageError
from cipherspark.spark.session import SECURE_CONF
from tests.deploy.conftest import DEPLOY, KMS_URL

LAUNCHER = DEPLOY / "docker"


@pytest.fixture(scope="module")
def gramine_libdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The installed Gramine, or -- Gramine is not packaged for this machine's distribution --
    a stand-in folder with its two files, so that only Gramine's own runtime is not the real
    one; every other trusted path is this environment's."""
    for candidate in GRAMINE_LIBDIRS:
        if (Path(candidate) / "libsysdb.so").is_file():
            return Path(candidate)
    stand_in = tmp_path_factory.mktemp("gramine")
    (stand_in / "libsysdb.so").write_bytes(b"")
    (stand_in / "runtime" / "glibc").mkdir(parents=True)
    return stand_in


@pytest.fixture(scope="module")
def paths(gramine_libdir: Path) -> ManifestPaths:
    if shutil.which("java") is None:
        pytest.skip("no Java runtime installed (scripts/ensure-java installs one)")
    return discover_manifest_paths(launcher_dir=LAUNCHER, gramine_libdir=gramine_libdir)


@pytest.fixture(scope="module")
def manifest(paths: ManifestPaths, kms_ca: Path) -> str:
    return render_manifest(paths, kms_url=KMS_URL, kms_ca=kms_ca)


@pytest.fixture(scope="module")
def data(manifest: str) -> dict[str, Any]:
    return tomllib.loads(manifest)


def covered(path: Path, roots: Sequence[str]) -> bool:
    return any(path == Path(r) or path.is_relative_to(Path(r)) for r in roots)


def keys(table: Any, prefix: str = "") -> Iterator[str]:
    """Every dotted key of a TOML table, nested tables included."""
    if isinstance(table, dict):
        for key, value in table.items():
            yield f"{prefix}{key}"
            yield from keys(value, f"{prefix}{key}.")
    elif isinstance(table, list):
        for item in table:
            yield from keys(item, prefix)


def test_manifest_is_valid_toml_and_every_trusted_file_exists(
        manifest: str, data: dict[str, Any]) -> None:
    trusted = trusted_paths(manifest)
    assert trusted
    for path in trusted:
        assert Path(path).exists(), path
        assert path.endswith("/") == Path(path).is_dir(), path  # directory URIs end in /
    assert len(trusted) == len(set(trusted))
    assert data["sgx"]["debug"] is False
    assert data["sgx"]["remote_attestation"] == "dcap"


def test_code_that_sees_plaintext_is_measured(paths: ManifestPaths, manifest: str,
                                              data: dict[str, Any], kms_ca: Path) -> None:
    trusted = trusted_paths(manifest)
    jars = sorted((paths.spark_home / "jars").glob("*.jar"))
    assert len(jars) > 100
    modules = sorted(Path(cipherspark.__file__).parent.rglob("*.py"))
    must = [paths.python, paths.java_home / "bin" / "java", paths.java_home / "lib",
            *jars, *modules, paths.python_stdlib / "json" / "__init__.py",
            paths.spark_home / "python" / "lib", LAUNCHER / "launcher.py", LAUNCHER / "main.py",
            kms_ca]
    if paths.libpython is not None:
        must.append(paths.libpython)
    for path in must:
        assert covered(path.resolve(), trusted), path
    allowed = [uri.removeprefix("file:") for uri in data["sgx"]["allowed_files"]]
    for path in must:
        assert not covered(path.resolve(), allowed), f"{path} is merely allowed"


# -- what the enclave runs --------------------------------------------------------------------


def test_no_insecure_option_anywhere(manifest: str, data: dict[str, Any]) -> None:
    found = [key for key in keys(data) if "insecure__" in key]
    assert found == []
    assert "insecure__" not in manifest  # not even in a comment
    assert "argv_src_file" not in data["loader"] and "env_src_file" not in data["loader"]


def test_entrypoint_and_command_line_are_fixed(paths: ManifestPaths, data: dict[str, Any]
                                               ) -> None:
    assert data["libos"]["entrypoint"] == str(paths.python)
    argv = data["loader"]["argv"]
    assert argv[:4] == [str(paths.python), "-I", "-B", str(LAUNCHER.resolve() / "launcher.py")]
    assert all(arg.startswith("--") and "=" in arg for arg in argv[4:])
    assert data["fs"]["start_dir"] == "/tmp"


def test_kms_url_and_ca_are_measured(manifest: str, kms_ca: Path) -> None:
    config = manifest_enclave_config(manifest)
    assert config.kms_url == KMS_URL
    assert config.kms_ca == kms_ca
    assert str(kms_ca) in trusted_paths(manifest)  # the CA's bytes are in MRENCLAVE
    assert config.tee == "gramine-sgx" and config.tee in PROVIDER_NAMES
    assert dict(config.secure_conf) == dict(SECURE_CONF)
    assert config.app_id_file.parent == config.api_key_file.parent


def test_only_the_launchers_variables_pass_through(data: dict[str, Any]) -> None:
    env = data["loader"]["env"]
    passthrough = {name for name, value in env.items() if value == {"passthrough": True}}
    assert passthrough == set(PASSTHROUGH_ENV)
    fixed = {name: value for name, value in env.items() if name not in passthrough}
    assert set(fixed) == {"LD_LIBRARY_PATH", "PATH", "HOME"}
    assert all(isinstance(value, str) for value in fixed.values())
    for name in passthrough:
        assert name.startswith(("SPARK_", "KUBERNETES_SERVICE_")), name
        assert not name.startswith(("SPARK_JAVA_OPT", "SPARK_CLASSPATH", "SPARK_EXTRA_"))
        assert name not in ("SPARK_CONF_DIR", "SPARK_AUTH_SECRET", "SPARK_DIST_CLASSPATH")
    assert not [name for name in env if name.startswith(("CIPHERSPARK_", "LD_PRELOAD", "JAVA",
                                                         "_JAVA", "JDK_", "PYTHON"))]


def test_allowed_files_are_data_and_host_secrets_only(data: dict[str, Any]) -> None:
    allowed = [uri.removeprefix("file:") for uri in data["sgx"]["allowed_files"]]
    assert "/etc/cipherspark/" not in allowed  # the KMS CA is not among the host's files
    assert not [a for a in allowed if a.startswith(("/opt/cipherspark", "/usr", "/lib"))]
    assert "/etc/cipherspark/kms-credentials/" in allowed


def test_bad_parameters(paths: ManifestPaths, kms_ca: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="enclave size"):
        render_manifest(paths, kms_url=KMS_URL, kms_ca=kms_ca, enclave_size="lots")
    with pytest.raises(UsageError, match="threads"):
        render_manifest(paths, kms_url=KMS_URL, kms_ca=kms_ca, max_threads=0)
    for url in ("http://kms:8443", "https://user@kms:8443", "https://kms:8443/v1",
                "https://kms:99999", "https://kms:8443?x=1", "kms:8443"):
        with pytest.raises(UsageError, match="https://HOST"):
            render_manifest(paths, kms_url=url, kms_ca=kms_ca)
    not_pem = tmp_path / "ca.crt"
    not_pem.write_text("not a certificate\n")
    with pytest.raises(UsageError, match="PEM"):
        render_manifest(paths, kms_url=KMS_URL, kms_ca=not_pem)
    with pytest.raises(UsageError, match="existing file"):
        render_manifest(paths, kms_url=KMS_URL, kms_ca=tmp_path / "missing.crt")


def test_cli_writes_the_manifest(tmp_path: Path, paths: ManifestPaths, kms_ca: Path,
                                 gramine_libdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cipherspark.manifest"
    args = ["gramine-manifest", str(out), "--launcher-dir", str(LAUNCHER),
            "--gramine-libdir", str(gramine_libdir), "--enclave-kms", KMS_URL,
            "--enclave-kms-ca", str(kms_ca)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "gramine-sgx-sign" in printed and KMS_URL in printed
    assert manifest_enclave_config(out.read_text()).kms_url == KMS_URL
    assert main(args) == 1  # exists: not overwritten
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args[:-4], "--overwrite"]) == 2  # the KMS must be named
    assert "--enclave-kms" in capsys.readouterr().err
