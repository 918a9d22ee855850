"""The ``simulated`` TEE: a software stand-in for development and tests. It protects NOTHING.

A per-installation *simulated-platform key* (Ed25519, a file only its owner can read) signs a
quote-like statement: the TEE type (always ``simulated``), a *measurement* — the SHA-256 digest of
the installed cipherspark code, so changed code changes the measurement — the 64-byte report data
and a timestamp. The KMS server accepts it only for keys whose policy names ``simulated`` *and*
lists the platform's public key and the measurement, and only if the KMS *operator* registered
that platform key too (``cipherspark kms simulated-platform add``): a key owner alone cannot make
the server trust a platform. Anyone who can read the platform key file can
forge evidence for any measurement: ``simulated`` proves which code asked only among processes
that cannot read that file, and nothing about the hardware.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from cipherspark.attestation.evidence import Evidence, VerifiedReport
from cipherspark.errors import AttestationError, InputError, UsageError
from cipherspark.settings import ENV_SIMULATED_TEE_KEY, default_simulated_key_path

__all__ = [
    "ENV_SIMULATED_TEE_KEY",
    "SIMULATED_FORMAT",
    "code_measurement",
    "default_simulated_key_path",
    "load_simulated_platform_key",
    "simulated_evidence",
    "simulated_platform_public_key",
    "validate_platform_key",
    "verify_simulated",
]

SIMULATED_FORMAT = "cipherspark-simulated-evidence/v1"
_CLOCK_SKEW = 30
_PLATFORM_KEY = re.compile(r"[0-9a-fA-F]{64}")
# How a KMS operator registers a simulated platform (quoted in the denials that need it).
_ADD_HINT = "the operator runs 'cipherspark kms simulated-platform add KEY'"


def code_measurement(package_dir: Path | None = None) -> str:
    """SHA-256 (hex) over the relative path and content of every ``.py`` file of cipherspark."""
    root = package_dir or Path(__file__).resolve().parent.parent
    digest = hashlib.sha256(b"cipherspark-code-measurement/v1\0")
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        rel = path.relative_to(root).as_posix().encode()
        data = path.read_bytes()
        digest.update(len(rel).to_bytes(4, "big") + rel + len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()


def load_simulated_platform_key(
    path: Path | None = None, *, create: bool = True
) -> Ed25519PrivateKey:
    """The simulated-platform private key at ``path``, created (mode 0600) if absent."""
    path = path or default_simulated_key_path()
    try:
        if not path.exists():
            if not create:
                raise InputError(f"no simulated-platform key at {path}")
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            raw = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, raw.hex().encode() + b"\n")
            finally:
                os.close(fd)
        return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(path.read_text().strip()))
    except FileExistsError:
        return load_simulated_platform_key(path, create=False)
    except OSError as exc:
        raise InputError(f"cannot use the simulated-platform key {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise InputError(f"{path} is not a simulated-platform key") from exc


def simulated_platform_public_key(key: Ed25519PrivateKey) -> str:
    """The platform's public key (hex), which a policy lists to accept its evidence."""
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        .hex()
    )


def validate_platform_key(value: str) -> str:
    """``value`` lowercased if it is a simulated-platform public key (32 bytes as 64 hex digits),
    else :class:`UsageError` saying what a platform key looks like."""
    if not isinstance(value, str) or not _PLATFORM_KEY.fullmatch(value):
        shown = value if isinstance(value, str) and len(value) <= 80 else "the value given"
        raise UsageError(
            f"{shown!r} is not a simulated-platform public key (64 hex digits, "
            "as 'cipherspark attest platform-key' prints it)"
        )
    return value.lower()


def simulated_evidence(
    key: Ed25519PrivateKey,
    report_data: bytes,
    *,
    measurement: str | None = None,
    timestamp: int | None = None,
) -> Evidence:
    """A signed ``simulated`` statement over ``report_data`` (64 bytes)."""
    if len(report_data) != 64:
        raise AttestationError("report data must be 64 bytes", "binding")
    statement = {
        "format": SIMULATED_FORMAT,
        "tee": "simulated",
        "measurement": measurement or code_measurement(),
        "report_data": report_data.hex(),
        "timestamp": int(time.time()) if timestamp is None else timestamp,
        "platform_key": simulated_platform_public_key(key),
    }
    body = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
    quote = json.dumps(
        {"statement": base64.b64encode(body).decode(), "signature": key.sign(body).hex()}
    ).encode()
    return Evidence("simulated", quote)


def verify_simulated(
    quote: bytes,
    trusted_platform_keys: Collection[str],
    *,
    max_age: int | None = None,
    clock: Callable[[], float] = time.time,
    operator_keys: Collection[str] | None = None,
) -> VerifiedReport:
    """Check a ``simulated`` statement's signature against ``trusted_platform_keys`` (hex).

    ``operator_keys`` (the KMS server passes it): the platform keys the verifier's operator
    registered; the statement's platform key must then be in both lists, and an empty
    ``operator_keys`` denies everything. ``None`` (the embedded keystore, ``attest verify``):
    ``trusted_platform_keys`` alone decide.

    Raises :class:`AttestationError` with reason ``signature`` (malformed, unknown or
    unregistered platform key, bad signature) or ``expired`` (older than ``max_age`` seconds,
    or from the future).
    """
    if operator_keys is not None and not operator_keys:
        # Checked first: whatever the statement holds, the fix is the operator's.
        raise AttestationError(
            "no simulated platform is registered at this KMS: " + _ADD_HINT, "signature"
        )
    try:
        outer = json.loads(quote)
        body = base64.b64decode(outer["statement"], validate=True)
        signature = bytes.fromhex(outer["signature"])
        statement: dict[str, Any] = json.loads(body)
        platform = str(statement["platform_key"]).lower()
        if statement["format"] != SIMULATED_FORMAT or statement["tee"] != "simulated":
            raise ValueError("not a simulated statement")
        report_data = bytes.fromhex(statement["report_data"])
        measurement = str(statement["measurement"]).lower()
        timestamp = int(statement["timestamp"])
    except (ValueError, KeyError, TypeError) as exc:
        raise AttestationError("not a valid simulated-TEE statement", "signature") from exc
    if platform not in {k.lower() for k in trusted_platform_keys}:
        raise AttestationError(
            f"the simulated evidence is signed by platform key {platform}, "
            "which is not among the trusted ones (a policy's "
            "simulated.platform_keys)",
            "signature",
        )
    if operator_keys is not None and platform not in {k.lower() for k in operator_keys}:
        # The key's owner listed this platform, but only the KMS operator decides which
        # simulated platforms the server trusts at all.
        raise AttestationError(
            f"the simulated platform {platform} is not registered at this "
            "KMS: " + _ADD_HINT.replace("KEY", platform),
            "signature",
        )
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(platform)).verify(signature, body)
    except (InvalidSignature, ValueError) as exc:
        raise AttestationError(
            "the simulated evidence's signature does not verify", "signature"
        ) from exc
    now = clock()
    if timestamp > now + _CLOCK_SKEW or (max_age is not None and now - timestamp > max_age):
        raise AttestationError(
            f"the simulated evidence is from {timestamp}, outside the accepted age of {max_age} s",
            "expired",
        )
    return VerifiedReport(
        tee="simulated",
        tcb_status="NotApplicable",
        report_data=report_data,
        measurement=measurement,
        platform_key=platform,
        timestamp=timestamp,
    )
