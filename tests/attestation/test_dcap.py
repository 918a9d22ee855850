"""Real Intel DCAP quotes verify with dcap-qvl; tampering and expired collateral fail."""

from __future__ import annotations

import json
import time

import pytest

from cipherspark.attestation import (
    DcapVerifier,
    Evidence,
    StaticCollateral,
    verify_dcap_quote,
    verify_evidence,
)
from cipherspark.errors import AttestationError
from tests.attestation.conftest import VALID_AT, Sample

SGX_MR_ENCLAVE = "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
SGX_MR_SIGNER = "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6"
TDX_MR_TD = ("91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407"
             "de03ae6dc5f87f27428b2538873118b7")


def test_sgx_quote_verifies_at_the_stored_time(sgx: Sample) -> None:
    report = verify_dcap_quote(sgx.quote, sgx.collateral, VALID_AT)
    assert report.tee == "sgx"
    assert report.tcb_status == "ConfigurationAndSWHardeningNeeded"
    assert report.advisory_ids == ("INTEL-SA-00289", "INTEL-SA-00615")
    assert (report.mr_enclave, report.mr_signer) == (SGX_MR_ENCLAVE, SGX_MR_SIGNER)
    assert (report.isv_prod_id, report.isv_svn, report.debug) == (0, 0, False)
    assert report.report_data.startswith(b"Hello, world!")


def test_tdx_quote_verifies_at_the_stored_time(tdx: Sample) -> None:
    report = verify_dcap_quote(tdx.quote, tdx.collateral, VALID_AT)
    assert (report.tee, report.tcb_status, report.advisory_ids) == ("tdx", "UpToDate", ())
    assert report.mr_td == TDX_MR_TD
    assert len(report.rtmr) == 4 and report.debug is False
    assert json.loads(json.dumps(report.to_dict()))["measurements"]["mr_td"] == TDX_MR_TD


@pytest.mark.parametrize("offset", [8, 48 + 64, 48 + 300, 48 + 400])
def test_one_flipped_byte_in_the_signed_part_fails(sgx: Sample, tdx: Sample,
                                                    offset: int) -> None:
    # Offsets inside the 48-byte header and the report body (both signed by the QE's key).
    for sample in (sgx, tdx):
        tampered = bytearray(sample.quote)
        tampered[offset] ^= 0x01
        with pytest.raises(AttestationError) as info:
            verify_dcap_quote(bytes(tampered), sample.collateral, VALID_AT)
        assert info.value.reason == "signature"


def test_expired_collateral_fails_at_the_current_time(sgx: Sample, tdx: Sample) -> None:
    for sample in (sgx, tdx):
        with pytest.raises(AttestationError) as info:
            verify_dcap_quote(sample.quote, sample.collateral, int(time.time()))
        assert info.value.reason == "expired"
        assert "Expired" in str(info.value)


def test_tampered_collateral_fails(sgx: Sample) -> None:
    doc = json.loads(sgx.collateral)
    doc["tcb_info"] = doc["tcb_info"].replace('"tcbEvaluationDataNumber":17',
                                              '"tcbEvaluationDataNumber":18')
    assert doc["tcb_info"] != json.loads(sgx.collateral)["tcb_info"]
    with pytest.raises(AttestationError):
        verify_dcap_quote(sgx.quote, json.dumps(doc), VALID_AT)


def test_verifier_uses_injected_time_and_source(sgx: Sample) -> None:
    verifier = DcapVerifier(StaticCollateral(sgx.collateral), clock=lambda: VALID_AT)
    assert verifier.verify(sgx.quote).tcb_status == "ConfigurationAndSWHardeningNeeded"
    with pytest.raises(AttestationError, match="collateral"):
        DcapVerifier(clock=lambda: VALID_AT).verify(sgx.quote)
    # The evidence says tdx, the quote is sgx: refused.
    with pytest.raises(AttestationError) as info:
        verify_evidence(Evidence("tdx", sgx.quote), dcap=verifier, now=VALID_AT)
    assert info.value.reason == "tee_type"
