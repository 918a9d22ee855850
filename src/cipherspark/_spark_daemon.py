"""PySpark's worker daemon, faster per task and quiet at shutdown (``spark.python.daemon.module``).

It lives outside ``cipherspark.spark`` on purpose: that package imports PySpark, and this module
must adjust ``sys.path`` *before* PySpark is first imported in the daemon process.

Per task: Spark puts its own ``pyspark.zip``, ``py4j-*.zip`` and the ``spark-core`` jar (5,000+
entries, no Python in it) first on the Python workers' path, and PySpark's worker calls
``importlib.invalidate_caches()`` at the start of every task (``setup_spark_files``), which makes
each zip importer re-read its whole directory: about 100 ms of CPU per task, measured with py-spy
(70% of the Python workers' time on a 96-task scan). So the daemon drops, before PySpark is
imported, jars holding no Python module, and the zips whose packages are installed as directories
at the very same version (pip-installed PySpark: the zips are copies of it; checked byte for byte
on the version file). Workers then import from the installation and invalidating caches costs
nothing. Any other path entry stays.

PySpark's daemon also runs a full ``gc.collect()`` after every task of a reused worker, which walks
every object of the interpreter (PySpark, pyarrow, cipherspark): the next 40-50 ms per task. The
daemon imports the reader's modules once before it forks workers (they share them, and no worker
pays the imports in its first task) and freezes them out of the collector (``gc.freeze``, as
the Python docs advise before forking); after each task, a worker collects its own garbage and
freezes what survived (module state, caches), so the daemon's per-task collection has only that
task's objects to walk. Reference counting still frees frozen objects as usual.

At shutdown: when the JVM stops, idle forked workers find their socket closed and PySpark's daemon
prints a ``BrokenPipeError`` traceback to the console, after a job that succeeded. A user should
see no stack trace for a normal exit; a worker whose connection is gone simply ends here.
Everything else is PySpark's own daemon, unchanged.
"""

from __future__ import annotations

import gc
import importlib.machinery
import os
import socket
import sys
import zipfile

__all__ = ["prefer_installed_packages", "quiet_worker"]


def _same_version(zip_path: str, package: str, directory: str) -> bool:
    try:
        with zipfile.ZipFile(zip_path) as archive:
            zipped = archive.read(f"{package}/version.py")
        with open(os.path.join(directory, "version.py"), "rb") as f:
            return f.read() == zipped
    except (OSError, KeyError, zipfile.BadZipFile):
        return False


def _holds_python(archive_path: str) -> bool:
    try:
        with zipfile.ZipFile(archive_path) as archive:
            return any(n.endswith((".py", ".pyc", ".so")) for n in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return True  # unreadable: keep it, whatever it is


def prefer_installed_packages(path: list[str]) -> list[str]:
    """``path`` without jars that hold no Python module, and without Spark's ``pyspark.zip`` /
    ``py4j-*.zip`` when the package is installed, at the same version, in a directory on the
    rest of ``path``."""
    kept = list(path)
    for entry in path:
        name = os.path.basename(entry)
        if name.endswith(".jar"):
            if not _holds_python(entry):
                kept.remove(entry)
            continue
        if name == "pyspark.zip":
            package = "pyspark"
        elif name.startswith("py4j-") and name.endswith(".zip"):
            package = "py4j"
        else:
            continue
        others = [p for p in kept if p != entry]
        spec = importlib.machinery.PathFinder.find_spec(package, others)
        locations = list(spec.submodule_search_locations or []) if spec else []
        if (
            locations
            and not locations[0].endswith(".zip")
            and _same_version(entry, package, locations[0])
        ):
            kept = others
    return kept


if __name__ == "__main__":
    _kept = prefer_installed_packages(sys.path)
    for _entry in set(sys.path) - set(_kept):
        # Importers already cached for the entry, or for packages inside it, go too: they are
        # what invalidate_caches() would re-read.
        for _cached in [
            k for k in sys.path_importer_cache if k == _entry or k.startswith(_entry + os.sep)
        ]:
            del sys.path_importer_cache[_cached]
    sys.path[:] = _kept

from pyspark import daemon  # noqa: E402 - after the path is settled (see the module docstring)

_spark_worker = daemon.worker


def quiet_worker(sock: socket.socket, authenticated: bool) -> int:
    """PySpark's ``daemon.worker``, ending quietly if the JVM has closed the connection; after
    each task, garbage is collected and survivors frozen (see the module docstring)."""
    try:
        # PySpark 4.1 leaves daemon.worker unannotated, 4.3 annotates it: either is fine.
        code: int = _spark_worker(sock, authenticated)  # type: ignore[no-untyped-call,unused-ignore]
    except (BrokenPipeError, ConnectionResetError):
        return 1
    gc.collect()
    gc.freeze()
    return code


def _preload() -> None:
    """Import what every cipherspark task needs, once, before workers are forked."""
    try:
        import cipherspark.spark.datasource  # noqa: F401
    except Exception:  # a worker would report it; the daemon must start anyway
        return


if __name__ == "__main__":
    # On a failed final flush, re-raise (ending quietly above) instead of printing a traceback.
    os.environ["PYTHON_DAEMON_KILL_WORKER_ON_FLUSH_FAILURE"] = "1"
    daemon.worker = quiet_worker  # manager() looks the worker function up at call time
    _preload()
    gc.collect()
    gc.freeze()
    daemon.manager()  # type: ignore[no-untyped-call,unused-ignore]  # typed from PySpark 4.3
