"""The Gramine manifest under which Spark drivers and executors run in SGX enclaves.

Unlike a manifest that only *allows* the JDK and jars (readable but unmeasured, so MRENCLAVE does
not cover the code that sees plaintext), every file that executes here is a **trusted** file:
``gramine-sgx-sign`` hashes it into MRENCLAVE and Gramine refuses a file whose hash differs.
Trusted are the Gramine runtime (glibc), the system libraries, ``/usr/bin`` (bash and what Spark's
launch scripts call), the Python interpreter and standard library, site-packages (PySpark and its
jars, cipherspark), the JRE, and cipherspark's launcher folder. Only data that is encrypted or
public is merely *allowed*: the data volume, Spark's local dirs (shuffle and spill are encrypted by
Spark), the mounted KMS credentials and CA, and the network configuration files.

:func:`render_manifest` fills :data:`MANIFEST_TEMPLATE` with the paths of an installed
environment (:func:`discover_manifest_paths`); the result is TOML for ``gramine-sgx-sign``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template

from cipherspark import settings
from cipherspark.errors import InputError, UsageError

__all__ = [
    "GRAMINE_LIBDIRS",
    "MANIFEST_TEMPLATE",
    "PASSTHROUGH_ENV",
    "ManifestPaths",
    "discover_manifest_paths",
    "find_java_home",
    "render_manifest",
    "trusted_paths",
]

#: Where Gramine's packages install libsysdb.so and runtime/glibc.
GRAMINE_LIBDIRS = (
    "/usr/lib/x86_64-linux-gnu/gramine",
    "/usr/local/lib/x86_64-linux-gnu/gramine",
    "/usr/lib/gramine",
)

#: Host environment variables the enclave accepts: Spark's executor launch variables and
#: cipherspark's (non-secret) settings. Everything else in the host environment is dropped.
PASSTHROUGH_ENV = (
    "SPARK_APPLICATION_ID",
    "SPARK_CONF_DIR",
    "SPARK_DRIVER_BIND_ADDRESS",
    "SPARK_DRIVER_URL",
    "SPARK_EXECUTOR_CORES",
    "SPARK_EXECUTOR_ID",
    "SPARK_EXECUTOR_MEMORY",
    "SPARK_EXECUTOR_POD_IP",
    "SPARK_EXECUTOR_POD_NAME",
    "SPARK_LOCAL_DIRS",
    "SPARK_RESOURCE_PROFILE_ID",
    "SPARK_USER",
    "SPARK_EXTRA_CLASSPATH",
    *(f"SPARK_JAVA_OPT_{i}" for i in range(32)),
    settings.ENV_KMS,
    settings.ENV_KMS_CA,
    settings.ENV_APP_ID_FILE,
    settings.ENV_API_KEY_FILE,
    settings.ENV_TEE,
    "KUBERNETES_SERVICE_HOST",
    "KUBERNETES_SERVICE_PORT",
)

MANIFEST_TEMPLATE = """\
# cipherspark: Spark driver / executor inside an SGX enclave (Gramine).
# Rendered by `cipherspark deploy gramine-manifest`; sign with
#   gramine-sgx-sign --manifest cipherspark.manifest --output cipherspark.manifest.sgx
# and read MRENCLAVE with `gramine-sgx-sigstruct-view cipherspark.sig`.
# Trusted files are measured into MRENCLAVE; allowed files are not (encrypted or public data only).

loader.entrypoint.uri = "file:${gramine_libdir}/libsysdb.so"
libos.entrypoint = "${shell}"
loader.log_level = "error"
# Spark passes its launch arguments (driver / executor, ports, ids) on the command line. They are
# host-controlled input, like the network; the code they select is measured.
loader.insecure__use_cmdline_argv = true

loader.env.LD_LIBRARY_PATH = "/lib:${arch_libdir}:/usr/lib"
loader.env.PATH = "${python_bindir}:/usr/local/bin:/usr/bin:/bin"
loader.env.HOME = "/tmp"
loader.env.JAVA_HOME = "${java_home}"
loader.env.SPARK_HOME = "${spark_home}"
loader.env.PYSPARK_PYTHON = "${python}"
loader.env.PYTHONDONTWRITEBYTECODE = "1"
loader.env.MALLOC_ARENA_MAX = "4"
${passthrough_env}

fs.mounts = [
  { path = "/lib", uri = "file:${gramine_libdir}/runtime/glibc" },
${mounts}
  { path = "/tmp", type = "tmpfs" },
]

sys.enable_extra_runtime_domain_names_conf = true
sys.stack.size = "2M"
sys.enable_sigterm_injection = true

sgx.debug = false
sgx.edmm_enable = false
sgx.enclave_size = "${enclave_size}"
sgx.max_threads = ${max_threads}
sgx.remote_attestation = "dcap"
sgx.isvprodid = ${isvprodid}
sgx.isvsvn = ${isvsvn}

sgx.trusted_files = [
${trusted_files}
]

sgx.allowed_files = [
${allowed_files}
]
"""

_ALLOWED = (
    "/data/",  # the encrypted data volume
    "/var/data/",  # Spark local dirs: shuffle / spill, encrypted by Spark
    "/opt/spark/conf/",  # Spark's generated configuration (ConfigMap)
    "/etc/cipherspark/",  # mounted KMS CA, credentials and Spark auth secret
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/group",
    "/etc/localtime",
    "/etc/host.conf",
    "/etc/sgx_default_qcnl.conf",
)
_SIZE = re.compile(r"[1-9][0-9]*[KMG]")


@dataclass(frozen=True)
class ManifestPaths:
    """The installed environment a manifest measures (absolute paths)."""

    python: Path
    python_stdlib: Path
    site_packages: tuple[Path, ...]
    java_home: Path
    spark_home: Path
    cipherspark_dir: Path
    launcher_dir: Path
    gramine_libdir: Path
    arch_libdir: Path = Path("/usr/lib/x86_64-linux-gnu")
    bindir: Path = Path("/usr/bin")
    shell: Path = Path("/usr/bin/bash")
    libpython: Path | None = None  # the shared libpython, when the interpreter links one


def find_java_home(java: str = "java") -> Path:
    """The JRE that ``java`` runs (``JAVA_HOME`` if set), from ``java -XshowSettings``."""
    if os.environ.get("JAVA_HOME"):
        return Path(os.environ["JAVA_HOME"]).resolve()
    try:
        done = subprocess.run(
            [java, "-XshowSettings:properties", "-version"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InputError(f"cannot run {java}: {exc}") from exc
    for line in done.stderr.splitlines():
        key, sep, value = line.strip().partition(" = ")
        if sep and key == "java.home":
            return Path(value.strip()).resolve()
    raise InputError(f"{java} -XshowSettings:properties did not report java.home")


def _gramine_libdir() -> Path:
    for candidate in GRAMINE_LIBDIRS:
        path = Path(candidate)
        if (path / "libsysdb.so").is_file():
            return path
    raise UsageError(
        "Gramine is not installed (no libsysdb.so in "
        f"{', '.join(GRAMINE_LIBDIRS)}); pass --gramine-libdir"
    )


def discover_manifest_paths(
    *, launcher_dir: Path, gramine_libdir: Path | None = None, java_home: Path | None = None
) -> ManifestPaths:
    """The paths of this interpreter's environment: Python, site-packages, PySpark, the JRE."""
    import pyspark

    import cipherspark

    site = []
    for key in ("purelib", "platlib"):
        path = Path(sysconfig.get_paths()[key]).resolve()
        if path not in site:
            site.append(path)
    multiarch = sysconfig.get_config_var("MULTIARCH") or "x86_64-linux-gnu"
    libdir, ldlibrary = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY")
    libpython = Path(libdir, ldlibrary).resolve() if libdir and ldlibrary else None
    if libpython is not None and (".so" not in libpython.name or not libpython.is_file()):
        libpython = None  # statically linked interpreter
    return ManifestPaths(
        python=Path(sys.executable).resolve(),
        python_stdlib=Path(sysconfig.get_paths()["stdlib"]).resolve(),
        site_packages=tuple(site),
        java_home=java_home or find_java_home(),
        spark_home=Path(pyspark.__file__).parent.resolve(),
        cipherspark_dir=Path(cipherspark.__file__).parent.resolve(),
        launcher_dir=launcher_dir.resolve(),
        gramine_libdir=gramine_libdir or _gramine_libdir(),
        arch_libdir=Path("/usr/lib") / multiarch,
        libpython=libpython,
    )


def _minimal_roots(paths: Iterable[Path]) -> list[Path]:
    """Paths not inside another of ``paths``, in first-seen order (no file is listed twice)."""
    unique = list(dict.fromkeys(paths))
    return [p for p in unique if not any(o != p and p.is_relative_to(o) for o in unique)]


def _uri(path: Path | str, directory: bool) -> str:
    text = str(path)
    if directory and not text.endswith("/"):
        text += "/"
    return json.dumps("file:" + text)


def render_manifest(
    paths: ManifestPaths,
    *,
    enclave_size: str = "16G",
    max_threads: int = 512,
    isvprodid: int = 1,
    isvsvn: int = 1,
) -> str:
    """The manifest for ``paths`` (TOML), ready for ``gramine-sgx-sign``."""
    if not _SIZE.fullmatch(enclave_size):
        raise UsageError(f"enclave size must look like 16G or 512M, not {enclave_size!r}")
    if not 1 <= max_threads <= 65536:
        raise UsageError(f"max threads {max_threads} is out of range")
    files = [paths.python, paths.shell, *([paths.libpython] if paths.libpython else [])]
    dirs = [
        paths.gramine_libdir,
        paths.arch_libdir,
        paths.bindir,
        paths.python_stdlib,
        *paths.site_packages,
        paths.java_home,
        paths.spark_home / "jars",
        paths.spark_home,
        paths.cipherspark_dir,
        paths.launcher_dir,
    ]
    roots = _minimal_roots([*dirs, *files])
    dir_set = set(dirs)
    trusted = [f"  {{ uri = {_uri(p, p in dir_set)} }}," for p in roots]
    mount_roots = _minimal_roots(
        [
            paths.arch_libdir,
            Path("/usr"),
            Path("/etc"),
            paths.python_stdlib,
            *paths.site_packages,
            paths.java_home,
            paths.spark_home,
            paths.cipherspark_dir,
            paths.launcher_dir,
            paths.python.parent,
            *([paths.libpython.parent] if paths.libpython else []),
            Path("/data"),
            Path("/var/data"),
            Path("/opt/spark/conf"),
        ]
    )
    mounts = [f"  {{ path = {json.dumps(str(p))}, uri = {_uri(p, False)} }}," for p in mount_roots]
    allowed = [f"  {json.dumps('file:' + p)}," for p in _ALLOWED]
    env = [f"loader.env.{name} = {{ passthrough = true }}" for name in PASSTHROUGH_ENV]
    return Template(MANIFEST_TEMPLATE).substitute(
        gramine_libdir=paths.gramine_libdir,
        shell=paths.shell,
        arch_libdir=paths.arch_libdir,
        python_bindir=paths.python.parent,
        java_home=paths.java_home,
        spark_home=paths.spark_home,
        python=paths.python,
        passthrough_env="\n".join(env),
        mounts="\n".join(mounts),
        enclave_size=enclave_size,
        max_threads=max_threads,
        isvprodid=isvprodid,
        isvsvn=isvsvn,
        trusted_files="\n".join(trusted),
        allowed_files="\n".join(allowed),
    )


def trusted_paths(manifest: str) -> Sequence[str]:
    """The paths of ``sgx.trusted_files`` in a rendered manifest (raises if not valid TOML)."""
    try:
        data = tomllib.loads(manifest)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"the manifest is not valid TOML: {exc}") from exc
    out: list[str] = []
    for entry in data.get("sgx", {}).get("trusted_files", []):
        uri = entry["uri"] if isinstance(entry, dict) else entry
        if not isinstance(uri, str) or not uri.startswith("file:"):
            raise InputError(f"trusted file {uri!r} is not a file: URI")
        out.append(uri[len("file:") :])
    return out
