"""Strict checks of the few host-supplied values the enclave launcher accepts, and a reader of
Java ``.properties`` files (Spark's ``spark.properties``).

Everything here is input from the host of an SGX node: the variables Spark's Kubernetes
scheduler puts into the pod (which the node's kubelet, and so the host, can change) and the
driver's ``spark.properties`` ConfigMap. A value is accepted only in the exact form Spark itself
produces, within bounds; anything else is a problem, reported by variable name. The launcher
collects every problem of one start and refuses with one error naming them all.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from cipherspark.errors import InputError

__all__: list[str] = []  # private machinery of cipherspark.deploy.launcher

#: One DNS label (RFC 1123), as Kubernetes names services and pods.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DNS_NAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*")
#: Spark's driver endpoint: RpcEndpointAddress(host, port, "CoarseGrainedScheduler").toString,
#: https://github.com/apache/spark/blob/master/resource-managers/kubernetes/core/src/main/scala/
#: org/apache/spark/deploy/k8s/features/BasicExecutorFeatureStep.scala
_DRIVER_URL = re.compile(
    r"spark://CoarseGrainedScheduler@(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(?P<port>[0-9]+)"
)
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,9}")
#: Spark's application ids ("spark-" and 32 hex digits, or a configured spark.app.id).
_APP_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_USER = re.compile(r"[A-Za-z0-9._-]{1,64}")
#: Spark's SPARK_EXECUTOR_MEMORY is always whole MiB with "m" (executorMemoryMiB + "m").
_MIB = re.compile(r"[1-9][0-9]{0,7}m")
#: A JVM size (spark.driver.memory), as Spark's JavaUtils.byteStringAs reads it.
_JVM_SIZE = re.compile(r"(?P<n>[1-9][0-9]{0,9})(?P<unit>[kmgt]?)b?", re.IGNORECASE)
_UNIT_MIB = {"k": 1 / 1024, "": 1 / (1024 * 1024), "m": 1, "g": 1024, "t": 1024 * 1024}
#: Path components we accept under the data and local-dir roots (no spaces, quotes, controls).
_COMPONENT = re.compile(r"[A-Za-z0-9._,=+@-]{1,255}")
_MAX_PATH = 1024


@dataclass
class Problems:
    """The problems found in one start, in the order found."""

    found: list[str] = field(default_factory=list)

    def add(self, message: str) -> None:
        """Record one problem (one clause, naming the variable or option)."""
        self.found.append(message)

    def check(
        self,
        environ: Mapping[str, str],
        name: str,
        parse: Callable[[str], str | None],
        *,
        required: bool = True,
    ) -> str | None:
        """``environ[name]`` if ``parse`` accepts it (``parse`` returns a problem or None)."""
        value = environ.get(name)
        if value is None:
            if required:
                self.add(f"{name} is not set")
            return None
        problem = parse(value)
        if problem is not None:
            self.add(f"{name}={show(value)} {problem}")
            return None
        return value

    def raise_if_any(self, what: str) -> None:
        """Raise one :class:`InputError` naming every problem, if there are any."""
        if self.found:
            raise InputError(f"the enclave refuses to start the {what}: " + "; ".join(self.found))


def show(value: str) -> str:
    """``value`` quoted for a message, cut short and with controls escaped (never multi-line)."""
    text = value if len(value) <= 80 else value[:77] + "..."
    return repr(text)


def port_problem(text: str) -> str | None:
    """A TCP port 1-65535 in decimal."""
    if not _DECIMAL.fullmatch(text) or not 1 <= int(text) <= 65535:
        return "is not a port number (1-65535)"
    return None


def host_problem(host: str) -> str | None:
    """A DNS name or an IP address (IPv6 in brackets), as Spark writes a driver host."""
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return "has an invalid IPv6 address"
        return None
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        pass
    else:
        return None
    if not _DNS_NAME.fullmatch(host.lower()):
        return "has an invalid host name"
    return None


def driver_url_problem(text: str) -> str | None:
    """``spark://CoarseGrainedScheduler@HOST:PORT`` exactly."""
    match = _DRIVER_URL.fullmatch(text)
    if match is None:
        return "is not spark://CoarseGrainedScheduler@HOST:PORT"
    return host_problem(match["host"]) or port_problem(match["port"])


def int_problem(low: int, high: int) -> Callable[[str], str | None]:
    """A decimal integer from ``low`` to ``high`` (no sign, no leading zeros, no spaces)."""

    def problem(text: str) -> str | None:
        if not _DECIMAL.fullmatch(text) or not low <= int(text) <= high:
            return f"is not an integer from {low} to {high}"
        return None

    return problem


def mib_problem(high: int) -> Callable[[str], str | None]:
    """Whole MiB with ``m`` (Spark's form), 64 MiB to ``high`` MiB."""

    def problem(text: str) -> str | None:
        if not _MIB.fullmatch(text) or not 64 <= int(text[:-1]) <= high:
            return f"is not a heap size from 64m to {high}m"
        return None

    return problem


def jvm_size_mib(text: str) -> float | None:
    """A JVM size (``2g``, ``512m``, ``4096``) in MiB, or None if it is not one."""
    match = _JVM_SIZE.fullmatch(text)
    if match is None:
        return None
    return int(match["n"]) * _UNIT_MIB[match["unit"].lower()]


def app_id_problem(text: str) -> str | None:
    """A Spark application id (letters, digits, ``.``, ``_``, ``-``; at most 128)."""
    return None if _APP_ID.fullmatch(text) else "is not a Spark application id"


def user_problem(text: str) -> str | None:
    """A user name (letters, digits, ``.``, ``_``, ``-``; at most 64)."""
    return None if _USER.fullmatch(text) else "is not a user name"


def pod_ip_problem(text: str) -> str | None:
    """A pod's IP address: IPv4 or IPv6, not loopback, unspecified or multicast."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return "is not an IP address"
    if address.is_loopback or address.is_unspecified or address.is_multicast:
        return "is not a pod address"
    return None


def pod_name_problem(text: str) -> str | None:
    """A Kubernetes object name (DNS subdomain, lower case, at most 253)."""
    return None if _DNS_NAME.fullmatch(text) else "is not a Kubernetes pod name"


def path_problem(text: str, root: str) -> str | None:
    """An absolute, normalised path strictly under ``root`` (``/data``), plain characters."""
    if len(text) > _MAX_PATH or not text.startswith(root.rstrip("/") + "/"):
        return f"is not a path under {root}"
    parts = PurePosixPath(text).parts[1:]
    if str(PurePosixPath(text)) != text.rstrip("/") or "//" in text:
        return "is not a normalised path"
    if not parts or any(p in (".", "..") or not _COMPONENT.fullmatch(p) for p in parts):
        return "has a path component that is not plain (letters, digits, . _ , = + @ -)"
    return None


def local_dirs_problem(root: str) -> Callable[[str], str | None]:
    """1-16 comma-separated paths under ``root`` (Spark's ``SPARK_LOCAL_DIRS``)."""

    def problem(text: str) -> str | None:
        dirs = text.split(",")
        if not 1 <= len(dirs) <= 16:
            return "names 1 to 16 folders"
        for item in dirs:
            found = path_problem(item, root)
            if found is not None:
                return found
        return None

    return problem


# -- Java .properties --------------------------------------------------------------------------

_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}
_KEY_END = re.compile(r"(?<!\\)(?:\\\\)*[=:\s]")


def _unescape(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "\\" or i + 1 == len(text):
            out.append(char)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "u":
            digits = text[i + 2 : i + 6]
            if not re.fullmatch(r"[0-9a-fA-F]{4}", digits):
                raise InputError(f"malformed \\u escape in a properties value: {show(text)}")
            out.append(chr(int(digits, 16)))
            i += 6
        else:
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
    return "".join(out)


def _logical_lines(text: str) -> list[str]:
    """Physical lines joined where one ends in an odd number of backslashes (Properties.load)."""
    lines: list[str] = []
    pending = ""
    for raw in re.split(r"\r\n|\r|\n", text):
        line = raw.lstrip(" \t\f") if pending else raw
        if not pending and line.lstrip(" \t\f")[:1] in ("#", "!"):
            continue
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2 == 1:
            pending += line[:-1]
            continue
        lines.append(pending + line)
        pending = ""
    if pending:
        lines.append(pending)
    return lines


def parse_properties(text: str) -> dict[str, str]:
    """The entries of a Java ``.properties`` text (``java.util.Properties.load`` rules).

    A key given twice is refused: ``Properties.store``, which wrote Spark's file, never does
    that, so a repeated key means the file was edited (and which one counts would be a guess).
    """
    entries: dict[str, str] = {}
    for line in _logical_lines(text):
        stripped = line.lstrip(" \t\f")
        if not stripped:
            continue
        end = _KEY_END.search(stripped)
        if end is None:
            key_raw, rest = stripped, ""
        else:
            cut = end.end() - 1
            key_raw, rest = stripped[:cut], stripped[cut:]
            rest = rest.lstrip(" \t\f")
            if rest[:1] in ("=", ":"):
                rest = rest[1:].lstrip(" \t\f")
        key = _unescape(key_raw)
        if key in entries:
            raise InputError(f"spark.properties sets {key!r} twice")
        entries[key] = _unescape(rest)
    return entries
