"""Release policies: each mismatch is denied with its reason; empty or missing denies."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from cipherspark.attestation import (
    AttestationPolicy,
    Evidence,
    VerifiedReport,
    check_policy,
    verify_dcap_quote,
    verify_evidence,
)
from cipherspark.deploy import SigstructMeasurement, policy_document
from cipherspark.errors import PolicyDeniedError, UsageError
from tests.attestation.conftest import VALID_AT, Sample
from tests.attestation.test_dcap import SGX_MR_ENCLAVE, SGX_MR_SIGNER, TDX_MR_TD

SGX_STATUS = "ConfigurationAndSWHardeningNeeded"


def sgx_policy(**sgx: Any) -> AttestationPolicy:
    section = {"mr_enclave": [SGX_MR_ENCLAVE], "mr_signer": [SGX_MR_SIGNER], "isv_prod_id": 0,
               "min_isv_svn": 0, **sgx}
    return AttestationPolicy.from_dict({"version": 1, "tee_types": ["sgx"],
                                        "tcb_status": ["UpToDate", SGX_STATUS], "sgx": section})


def denied(policy: AttestationPolicy, sample: Sample, tee: str = "sgx") -> str:
    with pytest.raises(PolicyDeniedError) as info:
        verify_evidence(Evidence(tee, sample.quote), policy=policy,
                        collateral=sample.collateral, now=VALID_AT)
    return info.value.reason


def test_the_real_sgx_quote_is_accepted_by_a_matching_policy(sgx: Sample) -> None:
    report = verify_evidence(Evidence("sgx", sgx.quote), policy=sgx_policy(),
                             collateral=sgx.collateral, now=VALID_AT)
    assert report.mr_enclave == SGX_MR_ENCLAVE


def test_wrong_mr_enclave_is_denied(sgx: Sample) -> None:
    assert denied(sgx_policy(mr_enclave=["00" * 32]), sgx) == "measurement"
    assert denied(sgx_policy(mr_signer=["11" * 32]), sgx) == "measurement"
    assert denied(sgx_policy(isv_prod_id=7), sgx) == "measurement"


def test_low_isv_svn_is_denied(sgx: Sample) -> None:
    assert denied(sgx_policy(min_isv_svn=1), sgx) == "svn"


def test_tcb_status_not_accepted_is_denied(sgx: Sample) -> None:
    # The default accepts UpToDate only; this quote's platform needs configuration + hardening.
    strict = dataclasses.replace(sgx_policy(), tcb_status=("UpToDate",))
    assert strict.tcb_status == ("UpToDate",)
    assert denied(strict, sgx) == "tcb_status"
    assert AttestationPolicy.from_dict({"sgx": {"mr_enclave": [SGX_MR_ENCLAVE]}}).tcb_status \
        == ("UpToDate",)


def test_debug_enclave_is_denied_unless_allowed() -> None:
    report = VerifiedReport(tee="sgx", tcb_status="UpToDate", report_data=b"\0" * 64,
                            debug=True, mr_enclave=SGX_MR_ENCLAVE, mr_signer=SGX_MR_SIGNER,
                            isv_prod_id=0, isv_svn=0)
    policy = dataclasses.replace(sgx_policy(), tcb_status=("UpToDate",))
    with pytest.raises(PolicyDeniedError) as info:
        policy.check(report)
    assert info.value.reason == "debug"
    dataclasses.replace(policy, sgx=dataclasses.replace(policy.sgx, allow_debug=True)  # type: ignore[type-var]
                        ).check(report)


def test_tdx_policy(tdx: Sample) -> None:
    doc = {"tee_types": ["tdx"], "tdx": {"mr_td": [TDX_MR_TD]}}
    policy = AttestationPolicy.from_dict(doc)
    verify_evidence(Evidence("tdx", tdx.quote), policy=policy, collateral=tdx.collateral,
                    now=VALID_AT)
    wrong = AttestationPolicy.from_dict({**doc, "tdx": {"mr_td": ["ab" * 48]}})
    assert denied(wrong, tdx, "tdx") == "measurement"
    rtmr = AttestationPolicy.from_dict({**doc, "tdx": {"mr_td": [TDX_MR_TD],
                                                       "rtmr3": ["cd" * 48]}})
    assert denied(rtmr, tdx, "tdx") == "measurement"
    # An SGX-only policy refuses TDX evidence before looking at it.
    assert denied(sgx_policy(), tdx, "tdx") == "tee_type"


def test_empty_or_missing_policy_denies(sgx: Sample) -> None:
    assert denied(AttestationPolicy.from_dict({}), sgx) == "no_policy"
    assert AttestationPolicy().empty
    report = verify_dcap_quote(sgx.quote, sgx.collateral, VALID_AT)
    with pytest.raises(PolicyDeniedError) as info:
        check_policy(None, report)
    assert info.value.reason == "no_policy"


@pytest.mark.parametrize("doc", [
    {"tee_types": ["sgx"]},  # no sgx section
    {"tee_types": ["sev"], "sgx": {"mr_enclave": ["00" * 32]}},
    {"sgx": {"mr_enclave": ["xyz"]}},
    {"sgx": {"mr_signer": ["00" * 32]}},  # signer alone needs isv_prod_id
    {"sgx": {"mr_enclave": ["00" * 32], "allow_debug": "yes"}},
    {"sgx": {"mr_enclave": ["00" * 32]}, "tcb_status": ["Fine"]},
    {"sgx": {"mr_enclave": ["00" * 32]}, "max_evidence_age_seconds": 3600},
    {"sgx": {"mr_enclave": ["00" * 32]}, "surprise": 1},
    {"simulated": {"platform_keys": [], "measurements": []}, "tee_types": ["simulated"]},
])
def test_invalid_policies_are_refused(doc: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        AttestationPolicy.from_dict(doc)


def test_round_trip_and_the_deploy_skeleton() -> None:
    policy = sgx_policy()
    assert AttestationPolicy.from_json(policy.to_json()) == policy
    # The k8s work's document (cipherspark.deploy.policy_document) is a valid policy once it
    # holds a real measurement, and its placeholder is refused rather than matched.
    measured = SigstructMeasurement(SGX_MR_ENCLAVE, SGX_MR_SIGNER, 0, 0, False)
    doc = json.loads(json.dumps(policy_document(measured)))
    parsed = AttestationPolicy.from_dict(doc)
    assert parsed.tee_types == ("sgx",)
    assert parsed.tcb_status == ("UpToDate",)
    assert parsed.to_dict() == doc
    with pytest.raises(UsageError, match="placeholder"):
        AttestationPolicy.from_dict(policy_document())
