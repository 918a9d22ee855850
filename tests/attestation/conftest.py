"""The real DCAP quotes in ``../shared/testdata/dcap/`` (read-only; never copied here)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
DCAP_DIR = Path(os.environ.get("CIPHERSPARK_DCAP_TESTDATA")
                or PROJECT.parent / "shared" / "testdata" / "dcap")
#: The collateral in the test data is valid at this moment (see its README).
VALID_AT = 1750400000


@dataclass(frozen=True)
class Sample:
    """One real quote and its collateral."""

    quote: bytes
    collateral: str
    quote_path: Path
    collateral_path: Path


def _sample(tee: str) -> Sample:
    quote, collateral = DCAP_DIR / f"{tee}_quote", DCAP_DIR / f"{tee}_quote_collateral.json"
    if not quote.is_file() or not collateral.is_file():
        pytest.skip(f"the real DCAP test quotes are absent ({DCAP_DIR}); set "
                    "CIPHERSPARK_DCAP_TESTDATA to the folder holding sgx_quote/tdx_quote")
    return Sample(quote.read_bytes(), collateral.read_text(), quote, collateral)


@pytest.fixture
def sgx() -> Sample:
    """The real SGX quote (TCB status ConfigurationAndSWHardeningNeeded at VALID_AT)."""
    return _sample("sgx")


@pytest.fixture
def tdx() -> Sample:
    """The real TDX quote (TCB status UpToDate at VALID_AT)."""
    return _sample("tdx")
