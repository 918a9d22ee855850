"""Assemble the ``spark-submit`` invocation for a cipherspark job on Kubernetes.

What the command carries, and what it deliberately does not:

* every setting of :data:`cipherspark.spark.session.SECURE_CONF` (authenticated, AES-GCM RPC,
  encrypted shuffle and spill, Unix-socket Python workers, no UI), imported, never copied;
* the overlay's driver and executor pod templates (``deploy/overlays/OVERLAY/pod-templates``),
  which mount the Spark authentication secret, the KMS credentials and the KMS CA as files;
* ``spark.authenticate.secret.driver.file`` / ``.executor.file`` pointing at the mounted secret,
  so Spark neither puts a secret on the command line nor passes one to executors in their
  environment;
* no secret value at all: a ``spark.authenticate.secret`` conf or an ``--api-key`` / ``--app-id``
  application argument is refused;
* the cipherspark command once more, as the JSON conf ``spark.cipherspark.job``: an SGX driver's
  command line is fixed by its manifest, so its measured launcher takes the command from there,
  and accepts only what :func:`~cipherspark.deploy.launcher.check_enclave_job` allows (for the
  ``sgx`` overlay that is checked here already, so a job the enclave would refuse fails now).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from urllib.parse import urlparse

from cipherspark.errors import UsageError

__all__ = [
    "APP_RESOURCE",
    "CONTAINER_NAMES",
    "DEFAULT_NAMESPACE",
    "IMAGE_PYTHON",
    "OVERLAYS",
    "SECRET_MOUNTS",
    "SPARK_AUTH_SECRET_FILE",
    "SubmitCommand",
    "SubmitRequest",
    "build_submit_command",
    "find_spark_submit",
    "format_command",
]

OVERLAYS = ("sgx", "tdx", "simulated")
DEFAULT_NAMESPACE = "cipherspark"
#: The launcher the Dockerfile installs: ``from cipherspark.cli import main``.
APP_RESOURCE = "local:///opt/cipherspark/main.py"
#: The interpreter of the runtime image (Dockerfile), for the driver and executors.
IMAGE_PYTHON = "/usr/local/bin/python3"
#: Where the pod templates mount the Kubernetes Secret ``cipherspark-spark-auth`` (key ``secret``).
SPARK_AUTH_SECRET_FILE = "/etc/cipherspark/spark-auth/secret"
#: Secret (or ConfigMap) name -> mount path, as in every overlay's pod templates.
SECRET_MOUNTS: Mapping[str, str] = MappingProxyType(
    {
        "cipherspark-spark-auth": "/etc/cipherspark/spark-auth",
        "cipherspark-kms-credentials": "/etc/cipherspark/kms-credentials",
        "cipherspark-kms-ca": "/etc/cipherspark/kms-ca",
    }
)
#: The container Spark fills in each pod template.
CONTAINER_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "driver": "spark-kubernetes-driver",
        "executor": "spark-kubernetes-executor",
    }
)

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_MEMORY = re.compile(r"[1-9][0-9]*[kmgt]?", re.IGNORECASE)
_SECRET_ARGS = ("--api-key", "--app-id", "--admin-token")
_FORBIDDEN_CONF = re.compile(
    r"spark\.authenticate\.secret$|.*(password|token|api[._-]?key).*", re.IGNORECASE
)


@dataclass(frozen=True)
class SubmitRequest:
    """What the user asks for; :func:`build_submit_command` turns it into spark-submit's argv."""

    master: str
    image: str
    app_args: tuple[str, ...]
    deploy_dir: Path
    namespace: str = DEFAULT_NAMESPACE
    overlay: str = "sgx"
    name: str | None = None
    executors: int = 2
    executor_cores: int = 1
    executor_memory: str = "4g"
    driver_memory: str = "2g"
    app_resource: str = APP_RESOURCE
    spark_submit: str = "spark-submit"
    extra_conf: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SubmitCommand:
    """The assembled invocation: ``argv`` to run, and the confs it sets (in order)."""

    argv: tuple[str, ...]
    conf: Mapping[str, str]
    driver_template: Path
    executor_template: Path


def _check_master(master: str) -> str:
    if not master.startswith("k8s://"):
        raise UsageError(
            f"--master must be a Kubernetes API URL k8s://https://HOST:PORT, not {master!r}"
        )
    api = urlparse(master[len("k8s://") :])
    if api.scheme != "https" or not api.hostname:
        raise UsageError(
            f"--master must be k8s://https://HOST[:PORT] (TLS to the API server), not {master!r}"
        )
    if api.username or api.password or api.query:
        raise UsageError("--master carries no credentials or query; kubectl's config is used")
    return master


def _check_app_args(args: Sequence[str]) -> None:
    if not args:
        raise UsageError(
            "name the cipherspark command to run after '--', e.g. "
            "'-- query simple --input /data/people.csv.cspk ...'"
        )
    if args[0] not in ("query", "sql", "run"):
        raise UsageError(
            f"only 'query ...', 'sql ...' and 'run APP.py ...' run on the cluster, not {args[0]!r}"
        )
    if args[0] == "run":
        _check_run_application(args[1:])
    for arg in args:
        option = arg.split("=", 1)[0]
        if option in _SECRET_ARGS:
            raise UsageError(
                f"{option} would put a credential on the driver's command line; the "
                "pod templates mount the Secret cipherspark-kms-credentials instead"
            )
        if option == "--kms":
            raise UsageError("--kms is set by the pod templates (CIPHERSPARK_KMS); do not pass it")


def _application_index(args: Sequence[str]) -> int:
    """Where the application is in ``run``'s arguments (``len(args)`` if absent): options
    stop there, as ``cipherspark run`` parses them; what follows is the application's."""
    i = 0
    while i < len(args) and args[i].startswith("-"):
        option = args[i]
        i += 1
        # --unsafe-... options of run are flags; the others take a value unless inline.
        if "=" not in option and not option.startswith("--unsafe"):
            i += 1
    return i


def _check_run_application(args: Sequence[str]) -> None:
    """The application of ``run`` must be built into the image (every overlay).

    A driver pod reads it from its own file system: the data volume is storage the owner does
    not trust, and an application read from it would be code nobody measured, running with the
    keys. Under :data:`~cipherspark.deploy.launcher.APPS_ROOT` it is part of the image, which
    the SGX manifest measures and a TDX policy names.
    """
    from cipherspark.deploy._enclave_job import APPS_ROOT, application_problem

    rest = list(args[_application_index(args) :])
    if not rest:
        raise UsageError(f"name the application after 'run': {APPS_ROOT}/APP.py, in the image")
    found = application_problem(rest[0])
    if found is not None:
        raise UsageError(
            f"the application {rest[0]!r} {found}: a cluster runs applications built into the "
            f"image under {APPS_ROOT} (put it in deploy/apps/ and rebuild the image), so the "
            "TEE's measurement covers it"
        )


def _option_value(args: Sequence[str], option: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == option and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(option + "="):
            return arg.split("=", 1)[1]
    return None


def build_submit_command(request: SubmitRequest) -> SubmitCommand:
    """Validate ``request`` and assemble spark-submit's argument list.

    Raises :class:`~cipherspark.errors.UsageError` for anything that cannot work or would leak a
    secret. The job's own ``--master`` is added (or must equal ``request.master``): inside the
    driver pod, ``cipherspark query`` starts its SparkSession with it.
    """
    from cipherspark.deploy.launcher import JOB_CONF, check_enclave_job
    from cipherspark.spark.session import SECURE_CONF

    master = _check_master(request.master)
    if not request.image or any(c.isspace() for c in request.image):
        raise UsageError(f"--image must be an image reference, not {request.image!r}")
    if not _DNS_LABEL.fullmatch(request.namespace):
        raise UsageError(f"--namespace {request.namespace!r} is not a Kubernetes namespace name")
    if request.overlay not in OVERLAYS:
        raise UsageError(f"--overlay must be one of {', '.join(OVERLAYS)}, not {request.overlay!r}")
    if request.executors < 1 or request.executor_cores < 1:
        raise UsageError("--executors and --executor-cores must be at least 1")
    for what, value in (
        ("--executor-memory", request.executor_memory),
        ("--driver-memory", request.driver_memory),
    ):
        if not _MEMORY.fullmatch(value):
            raise UsageError(f"{what} takes a JVM size such as 4g or 512m, not {value!r}")
    for key in request.extra_conf:
        if key == JOB_CONF:
            raise UsageError(f"--conf {key} is set from the job after '--'")
        if _FORBIDDEN_CONF.fullmatch(key):
            raise UsageError(
                f"--conf {key}=... would put a secret on the command line; "
                "secrets are mounted from Kubernetes Secrets"
            )
    app_args = list(request.app_args)
    _check_app_args(app_args)
    # run's own options end at its application: an argument after it is the application's.
    options_end = 1 + _application_index(app_args[1:]) if app_args[0] == "run" else len(app_args)
    job_master = _option_value(app_args[:options_end], "--master")
    if job_master is None:
        app_args[options_end:options_end] = ["--master", master]
    elif job_master != master:
        raise UsageError(f"the job's --master {job_master!r} differs from {master!r}")
    if request.overlay == "sgx":
        try:
            check_enclave_job(app_args, master)
        except UsageError as exc:
            raise UsageError(f"the SGX enclave would refuse this job: {exc}") from exc

    templates = request.deploy_dir / "overlays" / request.overlay / "pod-templates"
    driver_template = (templates / "driver.yaml").absolute()
    executor_template = (templates / "executor.yaml").absolute()
    for template in (driver_template, executor_template):
        if not template.is_file():
            raise UsageError(
                f"pod template {template} not found: pass --deploy-dir, the "
                "deploy/ folder of the cipherspark repository"
            )

    conf: dict[str, str] = dict(SECURE_CONF)
    conf.update(
        {
            "spark.kubernetes.namespace": request.namespace,
            "spark.kubernetes.container.image": request.image,
            "spark.kubernetes.container.image.pullPolicy": "IfNotPresent",
            "spark.kubernetes.authenticate.driver.serviceAccountName": "spark",
            "spark.kubernetes.authenticate.executor.serviceAccountName": "spark-executor",
            "spark.kubernetes.driver.podTemplateFile": str(driver_template),
            "spark.kubernetes.executor.podTemplateFile": str(executor_template),
            "spark.kubernetes.driver.podTemplateContainerName": CONTAINER_NAMES["driver"],
            "spark.kubernetes.executor.podTemplateContainerName": CONTAINER_NAMES["executor"],
            # The secret is read from the mounted file by the driver and every executor: it is
            # neither on this command line nor in any pod's environment.
            "spark.authenticate.secret.driver.file": SPARK_AUTH_SECRET_FILE,
            "spark.authenticate.secret.executor.file": SPARK_AUTH_SECRET_FILE,
            "spark.executor.instances": str(request.executors),
            "spark.executor.cores": str(request.executor_cores),
            "spark.executor.memory": request.executor_memory,
            "spark.driver.memory": request.driver_memory,
            "spark.kubernetes.executor.limit.cores": str(request.executor_cores),
            "spark.kubernetes.driver.limit.cores": "1",
            "spark.dynamicAllocation.enabled": "false",
            "spark.pyspark.python": IMAGE_PYTHON,
            "spark.pyspark.driver.python": IMAGE_PYTHON,
            "spark.kubernetes.submission.waitAppCompletion": "true",
            "spark.kubernetes.executor.deleteOnTermination": "true",
            JOB_CONF: json.dumps(app_args),
        }
    )
    conf.update(request.extra_conf)

    if request.name is not None:
        name = request.name
    elif app_args[0] == "run":
        # The driver pod's name derives from it: the application's file name, not its path.
        stem = Path(app_args[1 + _application_index(app_args[1:])]).stem.lower()
        name = "cipherspark-run-" + (re.sub(r"[^a-z0-9]+", "-", stem).strip("-") or "app")
    else:
        name = f"cipherspark-{'-'.join(request.app_args[:2])}"
    argv = [request.spark_submit, "--master", master, "--deploy-mode", "cluster", "--name", name]
    for key, value in conf.items():
        argv += ["--conf", f"{key}={value}"]
    argv.append(request.app_resource)
    argv += app_args
    return SubmitCommand(
        argv=tuple(argv),
        conf=MappingProxyType(conf),
        driver_template=driver_template,
        executor_template=executor_template,
    )


def format_command(argv: Sequence[str]) -> str:
    """``argv`` as a shell command, one option per line (what ``--dry-run`` shows)."""
    lines = [shlex.quote(argv[0])]
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--") and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            lines.append("  " + shlex.join([arg, argv[i + 1]]))
            i += 2
        else:
            lines.append("  " + shlex.quote(arg))
            i += 1
    return " \\\n".join(lines)


def find_spark_submit() -> str:
    """The ``spark-submit`` of the installed PySpark (or the first on ``PATH``)."""
    try:
        import pyspark
    except ImportError:  # pragma: no cover - pyspark is a dependency
        pass
    else:
        candidate = Path(pyspark.__file__).parent / "bin" / "spark-submit"
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("spark-submit")
    if found is None:
        raise UsageError("spark-submit not found: install pyspark or put Spark's bin/ on PATH")
    return found
