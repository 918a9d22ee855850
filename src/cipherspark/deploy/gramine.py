"""The Gramine manifest under which Spark drivers and executors run in SGX enclaves.

Unlike a manifest that only *allows* the JDK and jars (readable but unmeasured, so MRENCLAVE does
not cover the code that sees plaintext), every file that executes here is a **trusted** file:
``gramine-sgx-sign`` hashes it into MRENCLAVE and Gramine refuses a file whose hash differs.
Trusted are the Gramine runtime (glibc), the system libraries, ``/usr/bin``, the Python
interpreter and standard library, site-packages (PySpark and its jars, cipherspark), the JRE,
cipherspark's launcher folder and the KMS's CA certificate. Only data that is encrypted or public,
or secrets the host holds anyway, is merely *allowed*: the data volume, Spark's local dirs
(shuffle and spill are encrypted by Spark), the mounted KMS credentials and Spark RPC secret,
Spark's generated configuration and pod template, the driver's Kubernetes API token, and the
network configuration files.

What the enclave runs is fixed too (see :mod:`cipherspark.deploy.launcher`): ``libos.entrypoint``
is the image's Python and ``loader.argv`` runs the measured launcher with the enclave's measured
settings (:class:`~cipherspark.deploy.launcher.EnclaveConfig`: the KMS URL and CA, the TEE,
Spark's security settings). There is no ``loader.insecure__use_cmdline_argv`` and no
``loader.insecure__use_host_env``: of the host's environment only
:data:`~cipherspark.deploy.launcher.PASSTHROUGH_ENV` enters, and the launcher checks it.
Manifest syntax: https://gramine.readthedocs.io/en/stable/manifest-syntax.html

:func:`render_manifest` fills :data:`MANIFEST_TEMPLATE` with the paths of an installed
environment (:func:`discover_manifest_paths`); the result is TOML for ``gramine-sgx-sign``.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import sys
import sysconfig
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import urlparse

from cipherspark.deploy.launcher import PASSTHROUGH_ENV, EnclaveConfig
from cipherspark.errors import InputError, UsageError

__all__ = [
    "ALLOWED",
    "GRAMINE_LIBDIRS",
    "LAUNCHER_SCRIPT",
    "MANIFEST_TEMPLATE",
    "PASSTHROUGH_ENV",
    "ManifestPaths",
    "discover_manifest_paths",
    "enclave_config",
    "find_java_home",
    "manifest_enclave_config",
    "render_manifest",
    "trusted_paths",
]

#: Where Gramine's packages install libsysdb.so and runtime/glibc.
GRAMINE_LIBDIRS = (
    "/usr/lib/x86_64-linux-gnu/gramine",
    "/usr/local/lib/x86_64-linux-gnu/gramine",
    "/usr/lib/gramine",
)
#: The launcher script in the launcher folder (deploy/docker/launcher.py in the repository).
LAUNCHER_SCRIPT = "launcher.py"
#: Python's flags in loader.argv: isolated mode ignores every PYTHON* variable, the user's site
#: folder and the current folder (https://docs.python.org/3/using/cmdline.html#cmdoption-I);
#: -B writes no bytecode into the (read-only, measured) image.
_PYTHON_FLAGS = ("-I", "-B")

MANIFEST_TEMPLATE = """\
# cipherspark: Spark driver / executor inside an SGX enclave (Gramine).
# Rendered by `cipherspark deploy gramine-manifest`; sign with
#   gramine-sgx-sign --manifest cipherspark.manifest --output cipherspark.manifest.sgx
# and read MRENCLAVE with `gramine-sgx-sigstruct-view cipherspark.sig`.
# Trusted files are measured into MRENCLAVE; allowed files are not (encrypted or public data, and
# secrets the host holds anyway).

loader.entrypoint.uri = "file:${gramine_libdir}/libsysdb.so"
libos.entrypoint = "${python}"
loader.log_level = "error"
# The enclave's command line is fixed: the measured launcher and its measured settings (KMS URL and
# CA, TEE, Spark's security settings). Gramine discards a command line the host passes. The
# launcher builds the java command of the driver or executor itself.
loader.argv = [
${argv}
]
fs.start_dir = "/tmp"

# Fixed values, then the only host variables that enter (each checked by the launcher). Nothing
# else of the host's environment reaches the enclave.
loader.env.LD_LIBRARY_PATH = "${ld_library_path}"
loader.env.PATH = "${python_bindir}:/usr/bin:/bin"
loader.env.HOME = "/tmp"
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

#: Host-provided files the enclave may read or write unmeasured (directories end in /).
ALLOWED = (
    "/data/",  # the encrypted data volume
    "/var/data/",  # Spark local dirs: shuffle / spill, encrypted by Spark
    "/opt/spark/conf/",  # Spark's generated spark.properties (the driver's launcher filters it)
    "/opt/spark/pod-template/",  # the executor pod template the driver creates pods from
    "/etc/cipherspark/kms-credentials/",  # APP ID / API KEY (the host holds them anyway)
    "/etc/cipherspark/spark-auth/",  # Spark's RPC secret (likewise)
    "/var/run/secrets/kubernetes.io/serviceaccount/",  # the driver's Kubernetes API token
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
_SIZE = re.compile(r"(?P<n>[1-9][0-9]*)(?P<unit>[KMG])")
_UNIT_MIB = {"K": 1 / 1024, "M": 1, "G": 1024}
#: Headroom of the enclave beyond a JVM heap: the JVM's own memory, Python, Gramine.
_HEAP_HEADROOM_MIB = 1024


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


def _check_kms_url(url: str) -> str:
    parsed = urlparse(url)
    try:
        port = parsed.port
    except ValueError:
        port = -1
    if (
        parsed.scheme != "https"
        or not parsed.hostname
        or port == -1
        or parsed.username is not None
        or parsed.password is not None
        or parsed.path not in ("", "/")
        or parsed.params
        or parsed.query
        or parsed.fragment
        or any(c.isspace() for c in url)
    ):
        raise UsageError(
            f"the enclave's KMS must be an https://HOST[:PORT] URL (TLS, nothing else), not {url!r}"
        )
    return url.rstrip("/")


def _check_kms_ca(path: Path) -> Path:
    if not path.is_absolute() or not path.is_file():
        raise UsageError(f"the KMS CA {path} must be an existing file, by its absolute path")
    try:
        ssl.create_default_context(cafile=str(path))
    except (ssl.SSLError, ValueError, OSError) as exc:
        raise UsageError(f"the KMS CA {path} is not a PEM certificate bundle: {exc}") from exc
    return path


def _size_mib(enclave_size: str) -> int:
    match = _SIZE.fullmatch(enclave_size)
    if match is None:
        raise UsageError(f"enclave size must look like 16G or 512M, not {enclave_size!r}")
    return int(int(match["n"]) * _UNIT_MIB[match["unit"]])


def _ld_library_path(paths: ManifestPaths) -> str:
    dirs = ["/lib", str(paths.arch_libdir), "/usr/lib"]
    if paths.libpython is not None and str(paths.libpython.parent) not in dirs:
        dirs.append(str(paths.libpython.parent))
    return ":".join(dirs)


def enclave_config(
    paths: ManifestPaths, *, kms_url: str, kms_ca: Path, enclave_size: str = "16G"
) -> EnclaveConfig:
    """The measured settings the manifest gives the launcher, for ``paths``.

    ``kms_url`` (https only) and ``kms_ca`` (a PEM file, which becomes a trusted file) are the
    one KMS the enclave trusts; Spark's security settings are ``SECURE_CONF``; the TEE is
    ``gramine-sgx`` (checked against the evidence providers cipherspark knows).
    """
    from cipherspark.attestation.providers import PROVIDER_NAMES
    from cipherspark.spark.session import SECURE_CONF

    tee = "gramine-sgx"
    if tee not in PROVIDER_NAMES:  # pragma: no cover - guards a rename of the provider
        raise UsageError(f"{tee!r} is not an evidence provider ({', '.join(PROVIDER_NAMES)})")
    heap = _size_mib(enclave_size) - _HEAP_HEADROOM_MIB
    if heap < 64:
        raise UsageError(f"enclave size {enclave_size} leaves no room for a JVM heap")
    return EnclaveConfig(
        kms_url=_check_kms_url(kms_url),
        kms_ca=_check_kms_ca(kms_ca),
        python=paths.python,
        java_home=paths.java_home,
        spark_home=paths.spark_home,
        main_py=paths.launcher_dir / "main.py",
        log4j=paths.cipherspark_dir / "spark" / "log4j2.properties",
        max_heap_mib=heap,
        ld_library_path=_ld_library_path(paths),
        secure_conf=tuple(SECURE_CONF.items()),
        tee=tee,
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
    kms_url: str,
    kms_ca: Path,
    enclave_size: str = "16G",
    max_threads: int = 512,
    isvprodid: int = 1,
    isvsvn: int = 1,
) -> str:
    """The manifest for ``paths`` (TOML), ready for ``gramine-sgx-sign``.

    ``kms_url`` and ``kms_ca`` are measured: the URL in the launcher's fixed arguments, the CA
    file as a trusted file (see :func:`enclave_config`).
    """
    if not 1 <= max_threads <= 65536:
        raise UsageError(f"max threads {max_threads} is out of range")
    config = enclave_config(paths, kms_url=kms_url, kms_ca=kms_ca, enclave_size=enclave_size)
    argv = [str(paths.python), *_PYTHON_FLAGS, str(paths.launcher_dir / LAUNCHER_SCRIPT)]
    argv += config.to_argv()
    files = [
        paths.python,
        paths.shell,
        config.kms_ca,
        *([paths.libpython] if paths.libpython else []),
    ]
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
            config.kms_ca.parent,
            *([paths.libpython.parent] if paths.libpython else []),
            Path("/data"),
            Path("/var/data"),
            Path("/opt/spark/conf"),
            Path("/opt/spark/pod-template"),
            Path("/var/run/secrets/kubernetes.io/serviceaccount"),
        ]
    )
    mounts = [f"  {{ path = {json.dumps(str(p))}, uri = {_uri(p, False)} }}," for p in mount_roots]
    allowed = [f"  {json.dumps('file:' + p)}," for p in ALLOWED]
    env = [f"loader.env.{name} = {{ passthrough = true }}" for name in PASSTHROUGH_ENV]
    return Template(MANIFEST_TEMPLATE).substitute(
        gramine_libdir=paths.gramine_libdir,
        python=paths.python,
        argv="\n".join(f"  {json.dumps(arg)}," for arg in argv),
        ld_library_path=config.ld_library_path,
        python_bindir=paths.python.parent,
        passthrough_env="\n".join(env),
        mounts="\n".join(mounts),
        enclave_size=enclave_size,
        max_threads=max_threads,
        isvprodid=isvprodid,
        isvsvn=isvsvn,
        trusted_files="\n".join(trusted),
        allowed_files="\n".join(allowed),
    )


def _toml(manifest: str) -> dict[str, Any]:
    try:
        return tomllib.loads(manifest)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"the manifest is not valid TOML: {exc}") from exc


def manifest_enclave_config(manifest: str) -> EnclaveConfig:
    """The measured launcher settings in a rendered manifest's ``loader.argv``."""
    argv = _toml(manifest).get("loader", {}).get("argv")
    prefix = len(_PYTHON_FLAGS) + 2  # the interpreter, its flags, the launcher script
    if (
        not isinstance(argv, list)
        or len(argv) < prefix
        or not all(isinstance(a, str) for a in argv)
    ):
        raise InputError("the manifest has no launcher command line (loader.argv)")
    if tuple(argv[1 : prefix - 1]) != _PYTHON_FLAGS or not argv[prefix - 1].endswith(
        "/" + LAUNCHER_SCRIPT
    ):
        raise InputError("the manifest's loader.argv does not run the launcher")
    return EnclaveConfig.from_argv(argv[prefix:])


def trusted_paths(manifest: str) -> Sequence[str]:
    """The paths of ``sgx.trusted_files`` in a rendered manifest (raises if not valid TOML)."""
    data = _toml(manifest)
    out: list[str] = []
    for entry in data.get("sgx", {}).get("trusted_files", []):
        uri = entry["uri"] if isinstance(entry, dict) else entry
        if not isinstance(uri, str) or not uri.startswith("file:"):
            raise InputError(f"trusted file {uri!r} is not a file: URI")
        out.append(uri[len("file:") :])
    return out
