"""A Spark standalone cluster on this machine, started from the installed PySpark.

The ``pyspark`` wheel ships no ``sbin/`` scripts, so the master and workers are launched directly
with ``bin/spark-class``, bound to 127.0.0.1, with the same security settings as the secure
session (:data:`cipherspark.spark.session.SECURE_CONF`). The shared authentication secret lives
only in ``DIR/conf/spark-defaults.conf`` (mode 0600), which the daemons and the driver read as a
properties file: it is never on a command line or in Spark's public conf. Workers hand it to
executors through the environment, as Spark does. The daemons' web UIs, which Spark 4 cannot
turn off, answer only requests signed with a second key from that file (:func:`_ui_conf`); the
REST submission server is off.

The daemons get a minimal environment, not this process's (:func:`_daemon_env`): what the JVM
and Python need to run, the Spark settings set here and, for workers, the ``CIPHERSPARK_*``
names executors read (:mod:`cipherspark.settings`: the KMS CA, TEE, simulated-platform key,
credentials or credential files), plus the caller's ``extra_env``. An exported admin token,
cloud credentials or any other secret of the shell that starts the cluster stay behind.

Layout of the cluster folder::

    DIR/conf/spark-defaults.conf   security settings and the secrets (0600, created new)
    DIR/cluster.json               master URL and the PIDs this module started
    DIR/logs/                      master and worker logs
    DIR/work/worker-N/             worker work dirs (executor logs, Python files)
    DIR/local/                     Spark local dirs (shuffle, spill: encrypted)
"""

from __future__ import annotations

import base64
import getpass
import json
import os
import secrets
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pyspark

from cipherspark import settings
from cipherspark._atomic import create_file
from cipherspark.errors import ClusterError, UsageError
from cipherspark.spark.session import SECURE_CONF

__all__ = [
    "Cluster",
    "ClusterError",
    "cluster_status",
    "properties_file",
    "start_cluster",
    "stop_cluster",
]

_STATE = "cluster.json"
# Inherited by every daemon, if set: the JVM and spark-class need PATH / JAVA_HOME; Python workers
# need HOME (the default simulated-platform key lives under it), the locale, temporary folder,
# library and import paths, and OpenSSL's CA locations (for a KMS server on the system CAs).
# None of these holds a secret. Everything else is dropped: SPARK_*_OPTS could carry a conf
# secret, *_TOKEN / *_SECRET_* names what they are.
_INHERITED = (
    "PATH",
    "JAVA_HOME",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "LD_LIBRARY_PATH",
    "PYTHONPATH",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)
# Inherited by workers only (executors read them; the master runs no job code): every name of
# settings.ExecutorConfig.environ() and the application credentials that worker_credentials()
# reads. The admin token is not among them: no executor needs it.
_EXECUTOR_VARIABLES = (
    settings.ENV_KMS_CA,
    settings.ENV_TEE,
    settings.ENV_SIMULATED_TEE_KEY,
    settings.ENV_APP_ID_FILE,
    settings.ENV_API_KEY_FILE,
    settings.ENV_KMS_UNSAFE_PLAINTEXT,
    settings.ENV_KEY_CACHE_SECONDS,
    settings.ENV_APP_ID,
    settings.ENV_API_KEY,
)
_MASTER_CLASS = "org.apache.spark.deploy.master.Master"
_WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"

# The daemons this process started, kept so that they can be reaped when stopped here (a
# long-lived caller such as a test run would otherwise collect zombies) and so that CPython does
# not warn "subprocess N is still running" when a dropped Popen of a live daemon is collected.
# A CLI process that exits leaves them to init, which reaps them.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class Cluster:
    """A running (or recorded) standalone cluster."""

    directory: Path
    master_url: str
    master_pid: int
    worker_pids: tuple[int, ...]

    @property
    def properties(self) -> Path:
        """The properties file (with the secret) that drivers must use."""
        return properties_file(self.directory)


def properties_file(directory: Path) -> Path:
    """``DIR/conf/spark-defaults.conf`` of a cluster folder."""
    return directory.absolute() / "conf" / "spark-defaults.conf"


def _spark_home() -> Path:
    return Path(pyspark.__file__).parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _private_dir(path: Path) -> None:
    """Create ``path`` (0700), or accept it only if it is a real folder of this user that no
    one else can write: whoever can write the folder could swap the secret file for theirs."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise ClusterError(
            f"{path} must be a folder of this user that others cannot write (it holds the "
            "cluster secret)"
        )


def _write_conf(directory: Path, conf: Mapping[str, str]) -> Path:
    path = properties_file(directory)
    _private_dir(path.parent)
    lines = [f"{key} {value}" for key, value in sorted(conf.items())]
    text = "# written by cipherspark cluster start; holds the cluster secret (0600)\n"
    # A new 0600 file renamed into place: a conf file already there (perhaps readable by
    # others, or hard-linked to a file they can read) is never written into.
    create_file(path, (text + "\n".join(lines) + "\n").encode(), mode=0o600)
    return path


def _ui_conf() -> dict[str, str]:
    """Spark settings that close the standalone daemons' web UIs to anyone without the key.

    Spark 4's Master and Worker always start their web UI (``spark.ui.enabled`` is the
    application's UI only; there is no setting to turn theirs off), bound to SPARK_LOCAL_IP,
    and on loopback any local user can reach it: the worker's pages serve executors' stderr.
    Spark's own ``JWSFilter`` (no JVM class of ours) answers 403 to every request without an
    ``Authorization: Bearer`` JWS signed (HS256) with a key that exists only in the 0600
    properties file and that must carry an expiry. The filter applies to every page and to
    the JSON API of the master, the workers and (if a driver opts in to ``ui=True``) the
    application. Kill and decommission actions are off as well, and ACLs are on for the
    owner: the filter names no user, so they add nothing today; they are there for a filter
    that does.
    """
    jws = "org.apache.spark.ui.JWSFilter"
    user = getpass.getuser()
    return {
        "spark.ui.filters": jws,
        f"spark.{jws}.param.secretKey": base64.urlsafe_b64encode(secrets.token_bytes(32))
        .rstrip(b"=")
        .decode(),
        f"spark.{jws}.param.requireExpiration": "true",
        "spark.ui.killEnabled": "false",
        "spark.master.ui.decommission.allow.mode": "DENY",
        "spark.acls.enable": "true",
        "spark.admin.acls": user,
        "spark.ui.view.acls": user,
        "spark.modify.acls": user,
    }


def _daemon_env(
    directory: Path, extra_env: Mapping[str, str] | None, *, worker: bool
) -> dict[str, str]:
    """The whole environment of a master (``worker=False``) or worker daemon.

    From this process's environment only the names of ``_INHERITED`` (and, for workers, of
    ``_EXECUTOR_VARIABLES``); then the Spark settings of this cluster; then ``extra_env``,
    which wins.
    """
    names = _INHERITED + (_EXECUTOR_VARIABLES if worker else ())
    env = {name: os.environ[name] for name in names if name in os.environ}
    env.update(
        {
            "SPARK_HOME": str(_spark_home()),
            "SPARK_CONF_DIR": str(properties_file(directory).parent),
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_LOG_DIR": str(directory / "logs"),
            "SPARK_LOCAL_DIRS": str(directory / "local"),
            "PYSPARK_PYTHON": sys.executable,
        }
    )
    env.update(extra_env or {})
    return env


def _launch(directory: Path, name: str, args: list[str], env: Mapping[str, str]) -> int:
    spark_class = _spark_home() / "bin" / "spark-class"
    log = open(directory / "logs" / f"{name}.log", "ab")
    with log:
        process = subprocess.Popen(
            [str(spark_class), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            start_new_session=True,
        )
    _CHILDREN[process.pid] = process
    return process.pid


def _alive(pid: int, main_class: str) -> bool:
    """True if ``pid`` runs and is still the JVM of ``main_class`` (not a recycled PID)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return main_class.encode() in cmdline


def _wait_for(path: Path, needle: str, count: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text(errors="replace").count(needle) >= count:
            return True
        time.sleep(0.2)
    return False


def start_cluster(
    directory: str | os.PathLike[str],
    *,
    workers: int = 2,
    cores: int = 1,
    memory: str = "2g",
    port: int | None = None,
    secure: bool = True,
    extra_env: Mapping[str, str] | None = None,
    timeout: float = 90.0,
) -> Cluster:
    """Start a master and ``workers`` workers on 127.0.0.1; return once all have registered.

    ``secure=False`` leaves Spark's security settings off: only for the chain-proof test's
    control run, which must show that the checks can fail. The daemons' environment is minimal
    (see :func:`_daemon_env`); ``extra_env`` is added to it and reaches the workers and,
    through them, the executors (e.g. KMS credentials or CA).
    """
    if workers < 1 or cores < 1:
        raise UsageError("a cluster needs at least one worker with one core")
    folder = Path(directory).absolute()
    state = folder / _STATE
    if state.exists():
        recorded = _load(folder)
        if _alive(recorded.master_pid, _MASTER_CLASS):
            raise ClusterError(
                f"a cluster is already running from {folder} ({recorded.master_url}); stop it first"
            )
    for sub in ("logs", "work", "local"):
        (folder / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
    conf: dict[str, str] = {}
    if secure:
        conf.update(SECURE_CONF)
        conf["spark.authenticate.secret"] = secrets.token_hex(32)
        conf.update(_ui_conf())
    conf["spark.master.rest.enabled"] = "false"  # unauthenticated even with auth on
    conf["spark.worker.cleanup.enabled"] = "true"
    conf["spark.pyspark.python"] = sys.executable
    props = _write_conf(folder, conf)
    port = port or _free_port()
    master_url = f"spark://127.0.0.1:{port}"
    master_pid = _launch(
        folder,
        "master",
        [
            _MASTER_CLASS,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--webui-port",
            str(_free_port()),
            "--properties-file",
            str(props),
        ],
        _daemon_env(folder, extra_env, worker=False),
    )
    pids: list[int] = []
    try:
        if not _wait_for(folder / "logs" / "master.log", "Starting Spark master", 1, timeout):
            raise ClusterError(f"the master did not start; see {folder / 'logs' / 'master.log'}")
        for number in range(workers):
            work = folder / "work" / f"worker-{number}"
            work.mkdir(mode=0o700, exist_ok=True)
            pids.append(
                _launch(
                    folder,
                    f"worker-{number}",
                    [
                        _WORKER_CLASS,
                        "--host",
                        "127.0.0.1",
                        "--cores",
                        str(cores),
                        "--memory",
                        memory,
                        "--work-dir",
                        str(work),
                        "--webui-port",
                        str(_free_port()),
                        "--properties-file",
                        str(props),
                        master_url,
                    ],
                    _daemon_env(folder, extra_env, worker=True),
                )
            )
        if not _wait_for(folder / "logs" / "master.log", "Registering worker", workers, timeout):
            raise ClusterError(
                f"the workers did not register with the master; see {folder / 'logs'}"
            )
    except BaseException:
        _terminate([(master_pid, _MASTER_CLASS)] + [(p, _WORKER_CLASS) for p in pids])
        raise
    cluster = Cluster(folder, master_url, master_pid, tuple(pids))
    record = {"master_url": master_url, "master_pid": master_pid, "worker_pids": pids}
    create_file(state, json.dumps(record).encode(), mode=0o644)
    return cluster


def _load(folder: Path) -> Cluster:
    try:
        doc = json.loads((folder / _STATE).read_text())
        return Cluster(
            folder,
            str(doc["master_url"]),
            int(doc["master_pid"]),
            tuple(int(p) for p in doc["worker_pids"]),
        )
    except FileNotFoundError as exc:
        raise ClusterError(f"no cluster was started from {folder}") from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ClusterError(f"{folder / _STATE} is damaged") from exc


def cluster_status(directory: str | os.PathLike[str]) -> tuple[Cluster, dict[int, bool]]:
    """The recorded cluster and, per PID, whether that process is still running."""
    cluster = _load(Path(directory).absolute())
    alive = {cluster.master_pid: _alive(cluster.master_pid, _MASTER_CLASS)}
    alive.update({pid: _alive(pid, _WORKER_CLASS) for pid in cluster.worker_pids})
    return cluster, alive


def _terminate(processes: list[tuple[int, str]], timeout: float = 15.0) -> None:
    running = [(pid, cls) for pid, cls in processes if _alive(pid, cls)]
    for pid, _ in running:
        try:
            os.killpg(pid, signal.SIGTERM)  # the JVM and anything it started (executors)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while running and time.monotonic() < deadline:
        running = [(pid, cls) for pid, cls in running if _alive(pid, cls)]
        time.sleep(0.2)
    for pid, _ in running:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid, _ in processes:
        child = _CHILDREN.pop(pid, None)
        if child is not None:
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                _CHILDREN[pid] = child  # still exiting; reaped on a later call


def stop_cluster(directory: str | os.PathLike[str]) -> Cluster:
    """Stop exactly the processes :func:`start_cluster` recorded in ``directory``."""
    folder = Path(directory).absolute()
    cluster = _load(folder)
    _terminate(
        [(p, _WORKER_CLASS) for p in cluster.worker_pids] + [(cluster.master_pid, _MASTER_CLASS)]
    )
    (folder / _STATE).unlink(missing_ok=True)
    return cluster
