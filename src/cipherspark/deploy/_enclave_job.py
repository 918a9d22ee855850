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
#: Where the image holds the applications ``cipherspark run`` may run on the cluster
#: (deploy/apps/, copied by deploy/Dockerfile): part of the image, and so of the measurement
#: (the SGX manifest trusts the launcher's folder; a TDX policy names the image).
APPS_ROOT = "/opt/cipherspark/apps"
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
    if list(args[:2]) == ["query", "simple"]:
        return _query_simple_problems(args[2:], master)
    if list(args[:1]) == ["run"]:
        return _run_problems(args[1:], master)
    shown = " ".join(args[:2]) or "nothing"
    return (), [
        f"an SGX driver runs only 'query simple ...' and 'run {APPS_ROOT}/APP.py ...', not "
        f"{shown!r} (Spark SQL can load code with ADD JAR and call Java methods with reflect(), "
        "which would run host-chosen code inside the measured enclave)"
    ]


def _parse_options(
    rest: list[str],
    value_options: Mapping[str, str],
    flags: Sequence[str],
    repeatable: Sequence[str],
    command: str,
    problems: list[str],
    *,
    stop_at_positional: bool = False,
) -> tuple[dict[str, list[str]], set[str], list[str]]:
    """Options of ``rest`` (consumed): values by canonical name, flags given, positionals."""
    given: dict[str, list[str]] = {}
    flags_given: set[str] = set()
    positionals: list[str] = []
    while rest:
        arg = rest.pop(0)
        if stop_at_positional and not arg.startswith("-"):
            positionals.append(arg)
            break
        name, sep, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name in _JOB_REFUSED or name.startswith("--unsafe"):
            reason = _JOB_REFUSED.get(name, "it turns a protection off")
            problems.append(f"{name} is not allowed in an SGX driver: {reason}")
        elif name in flags and not sep:
            flags_given.add(name)
        elif name in value_options:
            option = value_options[name]
            if sep:
                value = inline
            elif rest:
                value = rest.pop(0)
            else:
                problems.append(f"{name} needs a value")
                continue
            if option in given and option not in repeatable:
                problems.append(f"{option} is given twice")
            given.setdefault(option, []).append(value)
        else:
            problems.append(f"{values.show(arg)} is not an option of {command!r} here")
    return given, flags_given, positionals


def _key_problem(key: str) -> str | None:
    from cipherspark.kms.base import validate_key_name

    try:
        validate_key_name(key)
    except UsageError as exc:
        return str(exc)
    return None


def _master_problems(given: dict[str, list[str]], master: str, problems: list[str]) -> None:
    if given.setdefault("--master", [master]) != [master]:
        problems.append(f"--master {values.show(given['--master'][-1])} is not spark.master")


def _query_simple_problems(args: Sequence[str], master: str) -> tuple[tuple[str, ...], list[str]]:
    problems: list[str] = []
    given, flags, _ = _parse_options(
        list(args), _JOB_VALUE_OPTIONS, _JOB_FLAGS, (), "query simple", problems
    )
    for option in ("--input", "--output", "--key"):
        if option not in given:
            problems.append(f"{option} is missing")
    for option in ("--input", "--output"):
        if option in given:
            found = values.path_problem(given[option][0], DATA_ROOT)
            if found is not None:
                problems.append(f"{option} {values.show(given[option][0])} {found}")
    if "--key" in given:
        key = given["--key"][0]
        found = _key_problem(key)
        if found is not None:
            problems.append(f"--key: {found}")
        # The output goes under the key the input is under (query simple checks the input's
        # key, --input-key defaulting to --key): a host cannot have the measured driver
        # re-encrypt data under a weaker key of the same application.
        if given.get("--input-key", [key])[0] != key:
            problems.append(
                "--input-key differs from --key: an SGX driver writes its output under the key "
                "its input is under"
            )
    _master_problems(given, master, problems)
    if problems:
        return (), problems
    job = ["query", "simple"]
    for option in ("--input", "--output", "--key", "--master"):
        job += [option, given[option][0]]
    return (*job, *sorted(flags)), []


# `cipherspark run`'s options (cli/run.py) as an SGX driver accepts them: the key of what the
# application writes, column keys, encrypted tables on the data volume; every --unsafe-...
# option is refused.
_RUN_VALUE_OPTIONS = {
    "--key": "--key",
    "--column-key": "--column-key",
    "--table": "--table",
    "--master": "--master",
}
_RUN_REPEATABLE = ("--column-key", "--table")


def application_problem(app: str) -> str | None:
    """What keeps ``app`` from being an application built into the image (a normalised
    ``.py`` path under :data:`APPS_ROOT`), or ``None``. ``deploy submit`` checks it for every
    overlay, the SGX launcher again inside the enclave."""
    found = values.path_problem(app, APPS_ROOT)
    if found is None and not app.endswith(".py"):
        found = "is not a .py file"
    return found


def _run_problems(args: Sequence[str], master: str) -> tuple[tuple[str, ...], list[str]]:
    problems: list[str] = []
    rest = list(args)
    given, _, positionals = _parse_options(
        rest, _RUN_VALUE_OPTIONS, (), _RUN_REPEATABLE, "run", problems, stop_at_positional=True
    )
    if not positionals:
        problems.append(f"the application is missing (run {APPS_ROOT}/APP.py ...)")
        return (), problems
    app = positionals[0]
    found = application_problem(app)
    if found is not None:
        problems.append(
            f"the application {values.show(app)} {found}: an SGX driver runs only applications "
            f"built into the image under {APPS_ROOT} (deploy/apps/), which the enclave's "
            "measurement covers"
        )
    if "--key" not in given:
        problems.append("--key is missing (the key of the Parquet files the application writes)")
    else:
        found = _key_problem(given["--key"][0])
        if found is not None:
            problems.append(f"--key: {found}")
    for item in given.get("--column-key", []):
        key, sep, columns = item.partition("=")
        found = _key_problem(key) if sep and columns else "takes KEY=COLUMN[,COLUMN...]"
        if found is not None or _CONTROL.search(item):
            problems.append(f"--column-key {values.show(item)}: {found or 'control characters'}")
    for item in given.get("--table", []):
        name, sep, path = item.partition("=")
        found = values.path_problem(path, DATA_ROOT) if sep and name else "takes NAME=PATH"
        if found is not None:
            problems.append(f"--table {values.show(item)} {found}")
    _master_problems(given, master, problems)
    app_args = rest
    for arg in app_args:
        if _CONTROL.search(arg):
            problems.append(f"the application argument {values.show(arg)} has control characters")
    if problems:
        return (), problems
    job = ["run", "--key", given["--key"][0]]
    for option in _RUN_REPEATABLE:
        for value in given.get(option, []):
            job += [option, value]
    job += ["--master", given["--master"][0], app, *app_args]
    return tuple(job), []


def check_enclave_job(args: Sequence[str], master: str) -> tuple[str, ...]:
    """``args`` as an SGX driver runs them, normalised; raise :class:`UsageError` otherwise.

    ``run APP.py [ARGS...]`` only with an application built into the image under
    :data:`APPS_ROOT` (measured with it), ``--key`` (required: what it writes is encrypted),
    ``--column-key``, ``--table NAME=PATH`` under ``/data`` and ``--master`` (as below); no
    ``--unsafe-...`` option, no KMS, credential or Spark-settings option. Its own arguments are
    passed on as given (no control characters): they are input to measured code, which decides
    what they may do. Otherwise only ``query simple`` with ``--input`` / ``--output`` under
    ``/data``, ``--key`` (and
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
