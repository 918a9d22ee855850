"""Evidence providers: produce TEE evidence over 64 bytes of report data.

* ``gramine-sgx``: write the report data to ``/dev/attestation/user_report_data`` and read the
  DCAP quote from ``/dev/attestation/quote`` (Gramine's attestation pseudo-files);
* ``tdx``: Linux configfs-tsm: make ``/sys/kernel/config/tsm/report/<name>``, write ``inblob``,
  read ``outblob``, and check that ``provider`` is ``tdx_guest``;
* ``simulated``: a software statement (see :mod:`cipherspark.attestation.simulated`);
* ``auto``: gramine if ``/dev/attestation`` exists, else tdx if configfs-tsm does; otherwise a
  refusal — never a silent fall-back to ``simulated``, which must be asked for by name.
"""

from __future__ import annotations

import os
import uuid
from abc import ABC, abstractmethod
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cipherspark.attestation.evidence import Evidence
from cipherspark.attestation.simulated import (
    load_simulated_platform_key,
    simulated_evidence,
)
from cipherspark.errors import AttestationError

__all__ = [
    "GRAMINE_DIR",
    "PROVIDER_NAMES",
    "TSM_REPORT_DIR",
    "EvidenceProvider",
    "GramineSgxProvider",
    "SimulatedProvider",
    "TdxProvider",
    "evidence_provider",
]

GRAMINE_DIR = Path("/dev/attestation")
TSM_REPORT_DIR = Path("/sys/kernel/config/tsm/report")
PROVIDER_NAMES = ("gramine-sgx", "tdx", "simulated", "auto")


def _check(report_data: bytes) -> bytes:
    if len(report_data) != 64:
        raise AttestationError("report data must be exactly 64 bytes", "binding")
    return report_data


class EvidenceProvider(ABC):
    """Produces evidence binding 64 bytes of report data."""

    #: The TEE type the evidence claims (``sgx``, ``tdx`` or ``simulated``).
    tee: str

    @abstractmethod
    def evidence(self, report_data: bytes) -> Evidence:
        """Evidence whose report data is ``report_data`` (64 bytes)."""


class GramineSgxProvider(EvidenceProvider):
    """A Gramine SGX enclave's DCAP quote through ``/dev/attestation``."""

    tee = "sgx"

    def __init__(self, root: Path = GRAMINE_DIR) -> None:
        self._root = root

    def evidence(self, report_data: bytes) -> Evidence:
        """Write the user report data, read the quote Gramine produced for it."""
        _check(report_data)
        try:
            (self._root / "user_report_data").write_bytes(report_data)
            quote = (self._root / "quote").read_bytes()
        except OSError as exc:
            raise AttestationError(
                f"Gramine attestation through {self._root} failed: {exc.strerror or exc}",
                "unavailable",
            ) from exc
        if not quote:
            raise AttestationError("Gramine returned an empty quote", "unavailable")
        return Evidence("sgx", quote)


class TdxProvider(EvidenceProvider):
    """A TDX guest's quote through Linux configfs-tsm."""

    tee = "tdx"

    def __init__(self, root: Path = TSM_REPORT_DIR) -> None:
        self._root = root

    def evidence(self, report_data: bytes) -> Evidence:
        """Create a report entry, write ``inblob``, check ``provider``, read ``outblob``."""
        _check(report_data)
        entry = self._root / f"cipherspark-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            entry.mkdir()
            try:
                (entry / "inblob").write_bytes(report_data)
                provider = (entry / "provider").read_text().strip()
                if provider != "tdx_guest":
                    raise AttestationError(
                        f"configfs-tsm provider is {provider!r}, not tdx_guest", "tee_type"
                    )
                quote = (entry / "outblob").read_bytes()
            finally:
                entry.rmdir()
        except OSError as exc:
            raise AttestationError(
                f"TDX attestation through {self._root} failed: {exc.strerror or exc}", "unavailable"
            ) from exc
        return Evidence("tdx", quote)


class SimulatedProvider(EvidenceProvider):
    """Software evidence signed by the simulated-platform key. Protects nothing (see docs)."""

    tee = "simulated"

    def __init__(
        self,
        key: Ed25519PrivateKey | None = None,
        *,
        key_path: Path | None = None,
        measurement: str | None = None,
    ) -> None:
        self._key = key or load_simulated_platform_key(key_path)
        self._measurement = measurement

    def evidence(self, report_data: bytes) -> Evidence:
        """A signed simulated statement over ``report_data``."""
        return simulated_evidence(self._key, _check(report_data), measurement=self._measurement)


def evidence_provider(
    name: str,
    *,
    simulated_key_path: Path | None = None,
    gramine_dir: Path = GRAMINE_DIR,
    tsm_dir: Path = TSM_REPORT_DIR,
) -> EvidenceProvider:
    """The provider called ``name`` (``gramine-sgx``, ``tdx``, ``simulated`` or ``auto``)."""
    if name == "gramine-sgx":
        return GramineSgxProvider(gramine_dir)
    if name == "tdx":
        return TdxProvider(tsm_dir)
    if name == "simulated":
        return SimulatedProvider(key_path=simulated_key_path)
    if name == "auto":
        if gramine_dir.exists():
            return GramineSgxProvider(gramine_dir)
        if tsm_dir.exists():
            return TdxProvider(tsm_dir)
        raise AttestationError(
            f"no TEE found (neither {gramine_dir} nor {tsm_dir} exists); 'auto' never falls "
            "back to the insecure 'simulated' TEE: ask for it by name",
            "unavailable",
        )
    raise AttestationError(
        f"unknown TEE {name!r}; choose one of {', '.join(PROVIDER_NAMES)}", "tee_type"
    )
