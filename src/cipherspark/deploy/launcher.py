"""The measured launcher of the SGX enclave: the one program Gramine starts in it.

The Gramine manifest fixes the enclave's command line (``loader.argv``): the image's Python, in
isolated mode, running ``launcher.py`` from the image with the enclave's **measured settings** as
its arguments (:class:`EnclaveConfig`: the KMS URL, the KMS CA file, the TEE, the JRE, Spark,
the credential and secret file paths, Spark's security settings). Gramine discards whatever
command line the host passes, and gives the enclave only the environment variables the manifest
names (:data:`PASSTHROUGH_ENV`, each ``{ passthrough = true }``) plus its fixed ones.

This module decides, from those measured settings and from the few values Spark's Kubernetes
scheduler sets in the pod's environment, the exact ``java`` command the enclave runs
(:class:`LaunchPlan`):

* **executor** (``SPARK_EXECUTOR_ID`` set): Spark's ``KubernetesExecutorBackend`` with fixed JVM
  options (Spark's module options, the heap, log4j, the startup subset of ``SECURE_CONF``, the
  mounted RPC secret file) and a fixed class path (Spark's jars only). The driver URL, ids, cores,
  memory, pod IP and name are checked strictly (:mod:`._launch_values`). The upstream entrypoint
  also takes ``SPARK_JAVA_OPT_*``, ``SPARK_CLASSPATH``, ``SPARK_EXTRA_CLASSPATH`` and
  ``SPARK_CONF_DIR`` from the pod
  (https://github.com/apache/spark/blob/master/resource-managers/kubernetes/docker/src/main/
  dockerfiles/spark/entrypoint.sh): here none of them exists.
* **driver** (``SPARK_DRIVER_BIND_ADDRESS`` set): ``SparkSubmit`` in client mode (what the
  upstream entrypoint runs in a driver pod) with fixed JVM options and class path; only
  allow-listed keys of the host's ``spark.properties`` are kept, ``SECURE_CONF`` and the secret
  files are forced, and the cipherspark command comes from the conf :data:`JOB_CONF`, accepted
  only in the form :func:`check_enclave_job` allows (``query simple`` over ``/data``, without
  ``--show``, or ``run`` of an application built into the image under :data:`APPS_ROOT`).

The environment of the ``java`` process is built here, never copied from the host's.
"""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from types import MappingProxyType

from cipherspark import settings
from cipherspark.deploy import _launch_values as values
from cipherspark.deploy._enclave_job import (
    APPS_ROOT,
    DATA_ROOT,
    JOB_CONF,
    check_enclave_job,
    driver_conf,
    job_problems,
    master_problem,
)
from cipherspark.errors import InputError, UsageError

__all__ = [
    "APPS_ROOT",
    "DATA_ROOT",
    "EXECUTOR_BACKEND",
    "JOB_CONF",
    "JVM_MODULE_OPTIONS",
    "LOCAL_DIRS_ROOT",
    "PASSTHROUGH_ENV",
    "EnclaveConfig",
    "LaunchPlan",
    "check_enclave_job",
    "driver_plan",
    "executor_plan",
    "launch_role",
    "prepare_launch",
]

#: Spark's local dirs (emptyDir volumes Spark mounts at /var/data/spark-UUID).
LOCAL_DIRS_ROOT = "/var/data"
EXECUTOR_BACKEND = "org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend"
_SPARK_SUBMIT = "org.apache.spark.deploy.SparkSubmit"
_PYTHON_RUNNER = "org.apache.spark.deploy.PythonRunner"

# Spark 4.1's JavaModuleOptions.DEFAULT_MODULE_OPTIONS, which its launcher puts on every JVM it
# starts (tests/deploy/test_launcher.py compares them with the installed Spark's):
# https://github.com/apache/spark/blob/master/launcher/src/main/java/org/apache/spark/launcher/
# JavaModuleOptions.java
_MODULE_OPTIONS_4_1 = (
    "-XX:+IgnoreUnrecognizedVMOptions",
    "--add-modules=jdk.incubator.vector",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.invoke=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/java.net=ALL-UNNAMED",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.cs=ALL-UNNAMED",
    "--add-opens=java.base/sun.security.action=ALL-UNNAMED",
    "--add-opens=java.base/sun.util.calendar=ALL-UNNAMED",
    "--add-opens=java.security.jgss/sun.security.krb5=ALL-UNNAMED",
    "-Djdk.reflect.useDirectMethodHandle=false",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dio.netty.allocator.type=pooled",
    "-Dio.netty.handler.ssl.defaultEndpointVerificationAlgorithm=NONE",
    "--enable-native-access=ALL-UNNAMED",
)

# Per Spark line; 4.3 dropped -Djdk.reflect.useDirectMethodHandle=false (read from 4.3.0's
# spark-launcher jar). 4.2 was not read: an image with it is refused at launch, clearly.
_MODULE_OPTIONS = {
    "4.1": _MODULE_OPTIONS_4_1,
    "4.3": tuple(
        o for o in _MODULE_OPTIONS_4_1 if o != "-Djdk.reflect.useDirectMethodHandle=false"
    ),
}


def _spark_line() -> str:
    try:
        return ".".join(importlib.metadata.version("pyspark").split(".")[:2])
    except importlib.metadata.PackageNotFoundError:
        return "none"


#: The installed Spark line's JVM module options (empty for a line this launcher does not know).
JVM_MODULE_OPTIONS: tuple[str, ...] = _MODULE_OPTIONS.get(_spark_line(), ())


# The variables Spark's Kubernetes scheduler sets (deploy/k8s/Constants.scala), by role.
_EXECUTOR_ENV = (
    "SPARK_APPLICATION_ID",
    "SPARK_DRIVER_URL",
    "SPARK_EXECUTOR_CORES",
    "SPARK_EXECUTOR_ID",
    "SPARK_EXECUTOR_MEMORY",
    "SPARK_EXECUTOR_POD_IP",
    "SPARK_EXECUTOR_POD_NAME",
    "SPARK_RESOURCE_PROFILE_ID",
)
_DRIVER_ENV = ("SPARK_DRIVER_BIND_ADDRESS", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")
_COMMON_ENV = ("SPARK_LOCAL_DIRS", "SPARK_USER")
#: Every host variable the enclave receives (the manifest's ``{ passthrough = true }`` entries).
#: None of them is a security setting: the launcher checks each one, and none reaches ``java``
#: except as the checked value of one argument or variable.
PASSTHROUGH_ENV = tuple(sorted({*_EXECUTOR_ENV, *_DRIVER_ENV, *_COMMON_ENV}))


@dataclass(frozen=True)
class EnclaveConfig:
    """The enclave's measured settings: the manifest's ``loader.argv`` after the script.

    Rendered at image build (:func:`cipherspark.deploy.render_manifest`), so MRENCLAVE covers
    them: ``kms_url`` and ``kms_ca`` (a trusted file) are the only KMS the enclave talks to,
    ``tee`` its evidence provider, ``secure_conf`` Spark's security settings.
    """

    kms_url: str
    kms_ca: Path
    python: Path
    java_home: Path
    spark_home: Path
    main_py: Path
    log4j: Path
    max_heap_mib: int
    ld_library_path: str
    secure_conf: tuple[tuple[str, str], ...]
    tee: str = "gramine-sgx"
    app_id_file: Path = Path("/etc/cipherspark/kms-credentials/app-id")
    api_key_file: Path = Path("/etc/cipherspark/kms-credentials/api-key")
    spark_auth_secret_file: Path = Path("/etc/cipherspark/spark-auth/secret")
    spark_properties: Path = Path("/opt/spark/conf/spark.properties")
    spark_conf_dir: Path = Path("/opt/cipherspark-sgx/spark-conf")

    def to_argv(self) -> tuple[str, ...]:
        """These settings as ``--name=value`` arguments (``secure_conf`` as ``--spark-conf``)."""
        out = []
        for item in fields(self):
            if item.name == "secure_conf":
                continue
            out.append(f"--{item.name.replace('_', '-')}={getattr(self, item.name)}")
        out += [f"--spark-conf={key}={value}" for key, value in self.secure_conf]
        return tuple(out)

    @classmethod
    def from_argv(cls, argv: Sequence[str]) -> EnclaveConfig:
        """The settings :meth:`to_argv` wrote; anything else (unknown, repeated) is refused."""
        names = {item.name.replace("_", "-"): item for item in fields(cls)}
        given: dict[str, str] = {}
        conf: list[tuple[str, str]] = []
        for arg in argv:
            name, sep, value = arg.removeprefix("--").partition("=")
            if not arg.startswith("--") or not sep:
                raise UsageError(f"launcher argument {arg!r} is not --NAME=VALUE")
            if name == "spark-conf":
                key, sep, conf_value = value.partition("=")
                if not sep or not key.startswith("spark."):
                    raise UsageError(f"--spark-conf takes spark.KEY=VALUE, not {value!r}")
                conf.append((key, conf_value))
            elif name not in names or name == "secure-conf":
                raise UsageError(f"unknown launcher argument --{name}")
            elif name in given:
                raise UsageError(f"launcher argument --{name} is given twice")
            else:
                given[name] = value
        missing = [
            name
            for name, item in names.items()
            if name not in given and name != "secure-conf" and item.default is MISSING
        ]
        if missing:
            raise UsageError(f"launcher arguments missing: --{', --'.join(missing)}")
        kwargs: dict[str, object] = {"secure_conf": tuple(conf)}
        for name, value in given.items():
            attr = names[name].name
            if attr == "max_heap_mib":
                if not value.isdigit():
                    raise UsageError(f"--max-heap-mib takes a number, not {value!r}")
                kwargs[attr] = int(value)
            elif attr in ("kms_url", "tee", "ld_library_path"):
                kwargs[attr] = value
            else:
                if not value.startswith("/"):
                    raise UsageError(f"--{name} must be an absolute path, not {value!r}")
                kwargs[attr] = Path(value)
        return cls(**kwargs)  # type: ignore[arg-type]


@dataclass(frozen=True)
class LaunchPlan:
    """What the enclave runs: ``argv`` (``argv[0]`` is the program) with exactly ``env``.

    ``dropped_conf`` names the keys of the host's ``spark.properties`` a driver left out.
    ``env`` may hold the KMS credentials (a driver's): it is left out of ``repr``.
    """

    role: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(repr=False)
    dropped_conf: tuple[str, ...] = ()


def launch_role(environ: Mapping[str, str]) -> str:
    """``executor`` or ``driver``, from the variables Spark's scheduler set; else refuse."""
    executor = "SPARK_EXECUTOR_ID" in environ
    driver = "SPARK_DRIVER_BIND_ADDRESS" in environ
    if executor == driver:
        raise InputError(
            "the enclave refuses to start: exactly one of SPARK_EXECUTOR_ID (an executor pod) "
            "and SPARK_DRIVER_BIND_ADDRESS (a driver pod) must be set"
        )
    return "executor" if executor else "driver"


def _base_env(
    config: EnclaveConfig, environ: Mapping[str, str], problems: values.Problems
) -> dict[str, str]:
    env = {
        "PATH": f"{config.java_home}/bin:{config.python.parent}:/usr/bin:/bin",
        "HOME": "/tmp",
        "LD_LIBRARY_PATH": config.ld_library_path,
        "JAVA_HOME": str(config.java_home),
        "SPARK_HOME": str(config.spark_home),
        "SPARK_CONF_DIR": str(config.spark_conf_dir),
        "PYSPARK_PYTHON": str(config.python),
        "PYSPARK_DRIVER_PYTHON": str(config.python),
        "PYTHONDONTWRITEBYTECODE": "1",
        "MALLOC_ARENA_MAX": "4",
        settings.ENV_KMS: config.kms_url,
    }
    env.update(
        settings.ExecutorConfig(
            kms_ca=config.kms_ca,
            tee=config.tee,
            app_id_file=config.app_id_file,
            api_key_file=config.api_key_file,
        ).environ()
    )
    local_dirs = problems.check(
        environ, "SPARK_LOCAL_DIRS", values.local_dirs_problem(LOCAL_DIRS_ROOT), required=False
    )
    user = problems.check(environ, "SPARK_USER", values.user_problem, required=False)
    if local_dirs is not None:
        env["SPARK_LOCAL_DIRS"] = local_dirs
    if user is not None:
        env["SPARK_USER"] = user
    return env


def _jvm_options(config: EnclaveConfig) -> list[str]:
    if not JVM_MODULE_OPTIONS:
        raise InputError(
            f"the image's PySpark {_spark_line()} is not a line whose JVM options this launcher "
            f"knows ({', '.join(sorted(_MODULE_OPTIONS))})"
        )
    return [
        *JVM_MODULE_OPTIONS,
        f"-Dlog4j2.configurationFile={config.log4j.as_uri()}",
        "-Djava.io.tmpdir=/tmp",
    ]


def _is_startup_conf(name: str) -> bool:
    """Spark's SparkConf.isExecutorStartupConf: what an executor needs before it reaches the
    driver (the rest comes from the driver; for these, the executor's own values win)."""
    return (
        (name.startswith("spark.auth") and name != "spark.authenticate.secret")
        or name.startswith(("spark.rpc", "spark.network"))
        or (name.startswith("spark.ssl") and "Password" not in name)
        or (name.startswith("spark.") and name.endswith(".port"))
        or name.startswith("spark.port.")
    )


def executor_plan(config: EnclaveConfig, environ: Mapping[str, str]) -> LaunchPlan:
    """The executor's ``java`` command from the checked Spark variables in ``environ``.

    Raises :class:`~cipherspark.errors.InputError` naming every variable that is missing or not
    in the form Spark sets it.
    """
    problems = values.Problems()
    check = problems.check
    url = check(environ, "SPARK_DRIVER_URL", values.driver_url_problem)
    executor_id = check(environ, "SPARK_EXECUTOR_ID", values.int_problem(1, 2**31 - 1))
    cores = check(environ, "SPARK_EXECUTOR_CORES", values.int_problem(1, 512))
    memory = check(environ, "SPARK_EXECUTOR_MEMORY", values.mib_problem(config.max_heap_mib))
    app_id = check(environ, "SPARK_APPLICATION_ID", values.app_id_problem)
    pod_ip = check(environ, "SPARK_EXECUTOR_POD_IP", values.pod_ip_problem)
    profile = check(environ, "SPARK_RESOURCE_PROFILE_ID", values.int_problem(0, 2**31 - 1))
    pod_name = check(environ, "SPARK_EXECUTOR_POD_NAME", values.pod_name_problem)
    env = _base_env(config, environ, problems)
    problems.raise_if_any("executor")
    startup = [f"-D{key}={value}" for key, value in config.secure_conf if _is_startup_conf(key)]
    argv = (
        str(config.java_home / "bin" / "java"),
        *_jvm_options(config),
        f"-Xms{memory}",
        f"-Xmx{memory}",
        *startup,
        # The executor reads the RPC secret from the mounted file; Spark's SPARK_AUTH_SECRET
        # variable (the other way it takes one) does not pass into the enclave.
        f"-Dspark.authenticate.secret.executor.file={config.spark_auth_secret_file}",
        "-cp",
        f"{config.spark_home}/jars/*",
        EXECUTOR_BACKEND,
        *("--driver-url", str(url), "--executor-id", str(executor_id)),
        *("--cores", str(cores), "--app-id", str(app_id), "--hostname", str(pod_ip)),
        *("--resourceProfileId", str(profile), "--podName", str(pod_name)),
    )
    return LaunchPlan("executor", argv, MappingProxyType(env))


def driver_plan(
    config: EnclaveConfig,
    environ: Mapping[str, str],
    spark_properties: str,
    credentials: tuple[str, str] | None = None,
) -> LaunchPlan:
    """The driver's ``java`` command: ``SparkSubmit`` in client mode with the checked job.

    ``spark_properties`` is the text of the host's ``spark.properties``; ``credentials`` the
    KMS APP ID and API KEY read from the mounted files (the driver's CLI takes them from its
    environment). Raises :class:`~cipherspark.errors.InputError` naming every problem.
    """
    problems = values.Problems()
    bind = problems.check(environ, "SPARK_DRIVER_BIND_ADDRESS", values.pod_ip_problem)
    api_host = problems.check(
        environ, "KUBERNETES_SERVICE_HOST", values.pod_ip_problem, required=False
    )
    api_port = problems.check(
        environ, "KUBERNETES_SERVICE_PORT", values.port_problem, required=False
    )
    env = _base_env(config, environ, problems)
    properties = values.parse_properties(spark_properties)
    master = properties.get("spark.master", "")
    found = master_problem(master)
    if found is not None:
        problems.add(f"spark.master={values.show(master)} {found}")
    memory_text = properties.get("spark.driver.memory", "1g")
    memory = values.jvm_size_mib(memory_text)
    if memory is None or not 64 <= memory <= config.max_heap_mib:
        problems.add(
            f"spark.driver.memory={values.show(memory_text)} is not a heap size from 64m "
            f"to {config.max_heap_mib}m"
        )
    job: tuple[str, ...] = ()
    try:
        raw = json.loads(properties.get(JOB_CONF, ""))
    except ValueError:
        raw = None
    if not isinstance(raw, list) or not all(isinstance(a, str) for a in raw):
        problems.add(f"{JOB_CONF} is not a JSON array of strings (cipherspark deploy submit)")
    else:
        job, found_in_job = job_problems(raw, master)
        for problem in found_in_job:
            problems.add(f"{JOB_CONF}: {problem}")
    forced = {
        **dict(config.secure_conf),
        "spark.authenticate.secret.driver.file": str(config.spark_auth_secret_file),
        "spark.authenticate.secret.executor.file": str(config.spark_auth_secret_file),
        "spark.pyspark.python": str(config.python),
        "spark.pyspark.driver.python": str(config.python),
    }
    conf, dropped = driver_conf(properties, forced, problems)
    problems.raise_if_any("driver")
    conf["spark.driver.bindAddress"] = str(bind)
    if api_host is not None and api_port is not None:
        env["KUBERNETES_SERVICE_HOST"] = api_host
        env["KUBERNETES_SERVICE_PORT"] = api_port
    if credentials is not None:
        env[settings.ENV_APP_ID], env[settings.ENV_API_KEY] = credentials
    confs: list[str] = []
    for key in sorted(conf):
        confs += ["--conf", f"{key}={conf[key]}"]
    argv = (
        str(config.java_home / "bin" / "java"),
        *_jvm_options(config),
        f"-Xmx{int(memory or 0)}m",
        "-cp",
        f"{config.spark_home}/jars/*",
        _SPARK_SUBMIT,
        *("--deploy-mode", "client"),
        *confs,
        *("--class", _PYTHON_RUNNER),
        f"local://{config.main_py}",
        *job,
    )
    return LaunchPlan("driver", argv, MappingProxyType(env), dropped)


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {what} {path}: {exc}") from exc


def _credentials(config: EnclaveConfig) -> tuple[str, str] | None:
    """The mounted APP ID and API KEY (files only; ``None`` if either file is absent)."""
    found: list[str] = []
    files = ((config.app_id_file, "the APP ID file"), (config.api_key_file, "the API KEY file"))
    for path, what in files:
        if not path.exists():
            return None
        found.append(_read(path, what).strip())
    return (found[0], found[1]) if all(found) else None


def prepare_launch(config: EnclaveConfig, environ: Mapping[str, str]) -> LaunchPlan:
    """The plan for this pod: its role from ``environ``; a driver also reads the host's
    ``spark.properties`` and the mounted credential files named by ``config``."""
    if launch_role(environ) == "executor":
        return executor_plan(config, environ)
    return driver_plan(
        config,
        environ,
        _read(config.spark_properties, "Spark's properties"),
        _credentials(config),
    )
