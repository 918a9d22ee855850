"""What an SGX driver accepts from the host: its cipherspark command and Spark conf keys.

The driver's command line is fixed by the manifest, so ``cipherspark deploy submit`` sends the
cipherspark command in the Spark conf :data:`JOB_CONF` (a JSON array), and the launcher accepts it
only as :func:`check_enclave_job` allows. Of the rest of the host's ``spark.properties`` only
the allow-listed keys are kept (:func:`driver_conf`); Spark's security settings and the secret
files are forced over them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from cipherspark.deploy import _launch_values as values
from cipherspark.errors import UsageError

__all__: list[str] = []  # private machinery of cipherspark.deploy.launcher

#: The data volume: the only place a job's input and output may be.
DATA_ROOT = "/data"
#: The Spark conf that carries the cipherspark command (a JSON array) to an SGX driver, whose
#: command line the manifest fixes. ``cipherspark deploy submit`` sets it.
JOB_CONF = "spark.cipherspark.job"

# What a driver keeps from the host's spark.properties: the keys spark-submit and `cipherspark
# deploy submit` write that do not select code (the rest of Spark's conf is dropped). Under
# spark.kubernetes. (the pods and API access the driver manages: host-level objects anyway),
# everything except the entries that name classes the driver instantiates or env for pods.
_DRIVER_CONF_KEYS = frozenset(
    {
        "spark.app.id",
        "spark.app.name",
        "spark.app.startTime",
        "spark.app.submitTime",
        "spark.blockManager.port",
        "spark.default.parallelism",
        "spark.driver.blockManager.port",
        "spark.driver.cores",
        "spark.driver.host",
        "spark.driver.memory",
        "spark.driver.memoryOverhead",
        "spark.driver.port",
        "spark.dynamicAllocation.enabled",
        "spark.executor.cores",
        "spark.executor.instances",
        "spark.executor.memory",
        "spark.executor.memoryOverhead",
        "spark.master",
        "spark.sql.files.maxPartitionBytes",
        "spark.sql.shuffle.partitions",
        "spark.submit.deployMode",
    }
)
_DRIVER_CONF_PREFIX = "spark.kubernetes."
_DRIVER_CONF_DENIED = (
    "spark.kubernetes.allocation.pods.allocator",
    "spark.kubernetes.driver.pod.featureSteps",
    "spark.kubernetes.driverEnv.",
    "spark.kubernetes.executor.pod.featureSteps",
    "spark.kubernetes.file.upload.path",
)
_K8S_MASTER = re.compile(
    r"k8s://https://(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(?::(?P<port>[0-9]+))?"
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# `cipherspark query simple`'s options (cli/data.py) as an SGX driver accepts them.
_JOB_VALUE_OPTIONS = {
    "--input": "--input",
    "-i": "--input",
    "--output": "--output",
    "-o": "--output",
    "--key": "--key",
    "--input-key": "--input-key",
    "--master": "--master",
}
_JOB_FLAGS = ("--overwrite",)
_JOB_REFUSED = {
    "--show": "it prints plaintext rows into the pod's log, outside the enclave",
    "--kms": "the KMS URL is measured into the enclave",
    "--kms-ca": "the KMS CA is measured into the enclave",
    "--app-id": "credentials are mounted files",
    "--api-key": "credentials are mounted files",
    "--spark-properties": "Spark's settings are fixed by the launcher",
}


def master_problem(master: str) -> str | None:
    """``k8s://https://HOST[:PORT]``, the only master an SGX driver runs with."""
    match = _K8S_MASTER.fullmatch(master)
    if match is None or values.host_problem(match["host"]):
        return "is not k8s://https://HOST[:PORT]"
    if match["port"] is not None and values.port_problem(match["port"]):
        return "is not k8s://https://HOST[:PORT]"
    return None


def job_problems(args: Sequence[str], master: str) -> tuple[tuple[str, ...], list[str]]:
    """The normalised job and the problems of ``args`` (see :func:`check_enclave_job`)."""
    if list(args[:2]) != ["query", "simple"]:
        shown = " ".join(args[:2]) or "nothing"
        return (), [
            f"an SGX driver runs only 'query simple ...', not {shown!r} (Spark SQL can load "
            "code with ADD JAR and call Java methods with reflect(), which would run "
            "host-chosen code inside the measured enclave)"
        ]
    problems: list[str] = []
    given: dict[str, str] = {}
    flags: set[str] = set()
    rest = list(args[2:])
    while rest:
        arg = rest.pop(0)
        name, sep, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name in _JOB_REFUSED:
            problems.append(f"{name} is not allowed in an SGX driver: {_JOB_REFUSED[name]}")
        elif name in _JOB_FLAGS and not sep:
            flags.add(name)
        elif name in _JOB_VALUE_OPTIONS:
            option = _JOB_VALUE_OPTIONS[name]
            if sep:
                value = inline
            elif rest:
                value = rest.pop(0)
            else:
                problems.append(f"{name} needs a value")
                continue
            if option in given:
                problems.append(f"{option} is given twice")
            given[option] = value
        else:
            problems.append(f"{values.show(arg)} is not an option of 'query simple' here")
    for option in ("--input", "--output", "--key"):
        if option not in given:
            problems.append(f"{option} is missing")
    for option in ("--input", "--output"):
        if option in given:
            found = values.path_problem(given[option], DATA_ROOT)
            if found is not None:
                problems.append(f"{option} {values.show(given[option])} {found}")
    if "--key" in given:
        from cipherspark.kms.base import validate_key_name

        try:
            validate_key_name(given["--key"])
        except UsageError as exc:
            problems.append(f"--key: {exc}")
        # The output goes under the key the input is under (query simple checks the input's
        # key, --input-key defaulting to --key): a host cannot have the measured driver
        # re-encrypt data under a weaker key of the same application.
        if given.get("--input-key", given["--key"]) != given["--key"]:
            problems.append(
                "--input-key differs from --key: an SGX driver writes its output under the key "
                "its input is under"
            )
    if given.setdefault("--master", master) != master:
        problems.append(f"--master {values.show(given['--master'])} is not spark.master")
    if problems:
        return (), problems
    job = ["query", "simple"]
    for option in ("--input", "--output", "--key", "--master"):
        job += [option, given[option]]
    return (*job, *sorted(flags)), []


def check_enclave_job(args: Sequence[str], master: str) -> tuple[str, ...]:
    """``args`` as an SGX driver runs them, normalised; raise :class:`UsageError` otherwise.

    Only ``query simple`` with ``--input`` / ``--output`` under ``/data``, ``--key`` (and
    ``--input-key`` only equal to it: the output stays under the input's key), ``--master``
    (equal to ``master``; added if absent) and ``--overwrite``: no ``--show`` (it prints rows to
    the log, which leaves the enclave), no KMS or credential options (measured or mounted), and
    no ``sql`` (Spark SQL can load and call code).
    """
    job, problems = job_problems(args, master)
    if problems:
        raise UsageError("; ".join(problems))
    return job


def _denied(key: str) -> bool:
    """A spark.kubernetes. key that names classes to instantiate or pod environment."""
    return any(key == d or (d.endswith(".") and key.startswith(d)) for d in _DRIVER_CONF_DENIED)


def driver_conf(
    properties: Mapping[str, str], forced: Mapping[str, str], problems: values.Problems
) -> tuple[dict[str, str], tuple[str, ...]]:
    """The allow-listed entries of ``properties`` with ``forced`` over them, and the keys left
    out (sorted). A kept value with control characters is a problem."""
    kept: dict[str, str] = {}
    dropped = []
    for key, value in properties.items():
        if key == JOB_CONF:
            continue
        if key in _DRIVER_CONF_KEYS or (key.startswith(_DRIVER_CONF_PREFIX) and not _denied(key)):
            if _CONTROL.search(value):
                problems.add(f"spark.properties {key} has control characters")
            kept[key] = value
        else:
            dropped.append(key)
    return {**kept, **forced}, tuple(sorted(dropped))
