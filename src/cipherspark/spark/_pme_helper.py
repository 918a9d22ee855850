"""The key helper of Parquet encryption: a child process of a Spark JVM, serving its KmsClient.

``org.cipherspark.pme.CipherSparkKmsClient`` (java/) starts ``python -m
cipherspark.spark._pme_helper`` once per JVM and sends it one request per line on stdin;
answers are one line each on stdout. Like a PySpark worker, the helper takes everything else
from the environment the JVM passes on: the credentials and
:class:`~cipherspark.settings.ExecutorConfig` (KMS CA, TEE for attested release), so the keys
are fetched exactly as the encrypted CSV source's workers fetch them
(:mod:`cipherspark.spark._executor`), with the same per-process cache.

The protocol (ASCII; every field base64, so none holds a space or a newline)::

    helper:  cipherspark-pme 1                          once, when ready
    JVM:     wrap URL MASTER_KEY KEK                    -> ok WRAPPED_KEK (UTF-8 text)
    JVM:     unwrap URL MASTER_KEY WRAPPED_KEK          -> ok KEK
    helper:  error NAME MESSAGE REASON                  a cipherspark error: its class name in
                                                        cipherspark.errors, its message, and
                                                        an attestation denial's reason (or -)

Only the JVM that started the helper holds its pipes: no other process can ask it anything.
It exits when its stdin closes (the JVM stopped, however it stopped). This module is a process
entry point (like :mod:`cipherspark._spark_daemon`): it is the one place below the CLI that
writes to a standard stream, and only the protocol.
"""

from __future__ import annotations

import base64
import binascii
import os
import sys
from typing import BinaryIO

from cipherspark import errors
from cipherspark.errors import AttestationError, CipherSparkError, KmsError, UsageError

__all__ = ["PROTOCOL", "answer", "serve"]

#: The first line the helper writes (the Java side checks it).
PROTOCOL = "cipherspark-pme 1"


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def _error(exc: CipherSparkError) -> bytes:
    # The nearest class cipherspark.errors defines: the JVM's message names it so that
    # cipherspark.spark._errors can rebuild the error on the driver.
    name = next(c.__name__ for c in type(exc).__mro__ if getattr(errors, c.__name__, None) is c)
    reason = exc.reason.value if isinstance(exc, AttestationError) else "-"
    return b" ".join([b"error", name.encode(), _b64(str(exc).encode()), reason.encode()])


def answer(line: bytes) -> bytes:
    """The answer line (without its newline) to one request line."""
    from cipherspark.spark._pme_keys import unwrap_key, wrap_key

    try:
        try:
            op, url, master, payload = line.split()
            url_text = base64.b64decode(url, validate=True).decode()
            master_text = base64.b64decode(master, validate=True).decode()
            data = base64.b64decode(payload, validate=True)
        except (ValueError, binascii.Error) as exc:
            raise UsageError("the PME key helper got a malformed request") from exc
        if op == b"wrap":
            return b"ok " + _b64(wrap_key(url_text, master_text, data).encode())
        if op == b"unwrap":
            return b"ok " + _b64(unwrap_key(url_text, master_text, data.decode()))
        raise UsageError("the PME key helper got an unknown request")
    except CipherSparkError as exc:
        return _error(exc)
    except Exception as exc:
        # Only the type: the message of an arbitrary failure may quote what it was given.
        return _error(KmsError(f"the PME key helper failed ({type(exc).__name__})"))


def serve(requests: BinaryIO, answers: BinaryIO) -> None:
    """Answer request lines from ``requests`` on ``answers`` until ``requests`` ends."""
    answers.write(PROTOCOL.encode() + b"\n")
    answers.flush()
    for line in requests:
        answers.write(answer(line) + b"\n")
        answers.flush()


def _main() -> None:
    # The protocol owns the real stdout; anything else printed (a library's warning) goes to
    # stderr, which the JVM sends to its own log, instead of corrupting an answer.
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve(sys.stdin.buffer, protocol)


if __name__ == "__main__":
    _main()
