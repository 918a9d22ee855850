"""Ctrl-C during a command: remembered, so that whatever ends the command ends as
``interrupted`` with exit 130.

The terminal sends SIGINT to the whole process group, Spark's JVM included, which shuts down at
once; what surfaces in Python is then often not the KeyboardInterrupt but whatever the dying
Py4J link raised (a connection error, a Spark error mapped to a JobError), and Py4J logs its own
tracebacks. PySpark's SparkContext also installs a SIGINT handler of its own, which calls
``cancelAllJobs`` through Py4J from inside the signal handler, while the main thread is in a
Py4J call: "RuntimeError: reentrant call", logged with its traceback. Measured before this
module: about 45 lines of traceback and exit 1 or 70 for Ctrl-C in ``query simple``
(tests/test_cli_interrupt.py). So the CLI takes SIGINT back once its session has started
(:func:`install` with ``replace=True``); the JVM, in the same process group, stops its jobs
itself by dying.
"""

from __future__ import annotations

import logging
import signal
from types import FrameType
from typing import Any

__all__: list[str] = []  # private machinery of cipherspark.cli

MESSAGE = "cipherspark: interrupted"
EXIT_CODE = 130

_state = {"interrupted": False}


def _on_interrupt(signum: int, frame: FrameType | None) -> None:
    _state["interrupted"] = True
    # Py4J's and PySpark's failure logging goes through the root logger and py4j's; nothing
    # after Ctrl-C is worth a traceback on the user's terminal.
    logging.getLogger().setLevel(logging.CRITICAL + 1)
    logging.getLogger("py4j").setLevel(logging.CRITICAL + 1)
    raise KeyboardInterrupt


def interrupted() -> bool:
    """Whether SIGINT arrived since :func:`reset`."""
    return _state["interrupted"]


def reset() -> None:
    """Forget an earlier SIGINT (a new command starts)."""
    _state["interrupted"] = False


def current() -> Any:
    """The SIGINT handler now (for :func:`restore`)."""
    return signal.getsignal(signal.SIGINT)


def install(*, replace: bool = False) -> Any:
    """Install the handler where Python's default one is (or over any, with ``replace``);
    the previous handler, or ``None`` if nothing was installed (not the main thread)."""
    try:
        now = signal.getsignal(signal.SIGINT)
        if now is _on_interrupt:
            return None
        if replace or now is signal.default_int_handler:
            return signal.signal(signal.SIGINT, _on_interrupt)
    except ValueError:  # not the main thread: leave signals alone
        pass
    return None


def restore(previous: Any) -> None:
    """Put ``previous`` back (from :func:`current`; ``None``: nothing to do)."""
    if previous is not None:
        try:
            signal.signal(signal.SIGINT, previous)
        except ValueError:
            pass
