"""PySpark's worker daemon, quiet when Spark shuts it down (``spark.python.daemon.module``).

When the JVM stops, idle forked workers find their socket closed and PySpark's daemon prints a
``BrokenPipeError`` traceback to the console, after a job that succeeded. A user should see no
stack trace for a normal exit; a worker whose connection is gone simply ends here. Everything else
is PySpark's own daemon, unchanged.
"""

from __future__ import annotations

import os
import socket

from pyspark import daemon

__all__ = ["quiet_worker"]

_spark_worker = daemon.worker


def quiet_worker(sock: socket.socket, authenticated: bool) -> int:
    """PySpark's ``daemon.worker``, ending quietly if the JVM has closed the connection."""
    try:
        code: int = _spark_worker(sock, authenticated)  # type: ignore[no-untyped-call]
        return code
    except (BrokenPipeError, ConnectionResetError):
        return 1


if __name__ == "__main__":
    # On a failed final flush, re-raise (ending quietly above) instead of printing a traceback.
    os.environ["PYTHON_DAEMON_KILL_WORKER_ON_FLUSH_FAILURE"] = "1"
    daemon.worker = quiet_worker  # manager() looks the worker function up at call time
    daemon.manager()  # type: ignore[no-untyped-call]
