"""The Gramine manifest renders to valid TOML whose trusted files all exist here, and which
measures (not merely allows) Python, the JRE, Spark's jars and cipherspark."""

from __future__ import annotations

import shutil
import tomllib
from collections.abc import Sequence
from pathlib import Path

import pytest

import cipherspark
from cipherspark.cli import main
from cipherspark.deploy import discover_manifest_paths, render_manifest, trusted_paths
from cipherspark.deploy.gramine import GRAMINE_LIBDIRS, ManifestPaths
from cipherspark.errors import UsageError
from tests.deploy.conftest import DEPLOY

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


def covered(path: Path, roots: Sequence[str]) -> bool:
    return any(path == Path(r) or path.is_relative_to(Path(r)) for r in roots)


def test_manifest_is_valid_toml_and_every_trusted_file_exists(paths: ManifestPaths) -> None:
    manifest = render_manifest(paths)
    data = tomllib.loads(manifest)
    trusted = trusted_paths(manifest)
    assert trusted
    for path in trusted:
        assert Path(path).exists(), path
        assert path.endswith("/") == Path(path).is_dir(), path  # directory URIs end in /
    assert len(trusted) == len(set(trusted))
    assert data["sgx"]["debug"] is False
    assert data["sgx"]["remote_attestation"] == "dcap"
    assert data["libos"]["entrypoint"] == str(paths.shell)


def test_code_that_sees_plaintext_is_measured(paths: ManifestPaths) -> None:
    manifest = render_manifest(paths)
    trusted = trusted_paths(manifest)
    jars = sorted((paths.spark_home / "jars").glob("*.jar"))
    assert len(jars) > 100
    modules = sorted(Path(cipherspark.__file__).parent.rglob("*.py"))
    must = [paths.python, paths.java_home / "bin" / "java", paths.java_home / "lib",
            *jars, *modules, paths.python_stdlib / "json" / "__init__.py",
            paths.spark_home / "python" / "lib", LAUNCHER / "entrypoint.sh", paths.shell]
    if paths.libpython is not None:
        must.append(paths.libpython)
    for path in must:
        assert covered(path.resolve(), trusted), path
    allowed = [uri.removeprefix("file:") for uri in tomllib.loads(manifest)["sgx"]
               ["allowed_files"]]
    for path in must:
        assert not covered(path.resolve(), allowed), f"{path} is merely allowed"


def test_host_environment_is_not_passed_wholesale(paths: ManifestPaths) -> None:
    data = tomllib.loads(render_manifest(paths))
    assert "insecure__use_host_env" not in data["loader"]
    env = data["loader"]["env"]
    assert env["CIPHERSPARK_API_KEY_FILE"] == {"passthrough": True}
    assert "CIPHERSPARK_API_KEY" not in env and "LD_PRELOAD" not in env


def test_bad_parameters(paths: ManifestPaths) -> None:
    with pytest.raises(UsageError, match="enclave size"):
        render_manifest(paths, enclave_size="lots")
    with pytest.raises(UsageError, match="threads"):
        render_manifest(paths, max_threads=0)


def test_cli_writes_the_manifest(tmp_path: Path, paths: ManifestPaths,
                                 gramine_libdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cipherspark.manifest"
    args = ["gramine-manifest", str(out), "--launcher-dir", str(LAUNCHER),
            "--gramine-libdir", str(gramine_libdir)]
    assert main(args) == 0
    assert "gramine-sgx-sign" in capsys.readouterr().out
    assert trusted_paths(out.read_text())
    assert main(args) == 1  # exists: not overwritten
    assert "--overwrite" in capsys.readouterr().err
