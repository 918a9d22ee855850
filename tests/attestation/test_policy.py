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
from cipherspark.attestation.policy import SgxPolicy, TdxPolicy
from cipherspark.deploy import SigstructMeasurement, policy_document
from cipherspark.errors import PolicyDeniedError, UsageError
from tests.attestation.conftest import VALID_AT, Sample
from tests.attestation.test_dcap import SGX_MR_ENCLAVE, SGX_MR_SIGNER, TDX_MR_TD

SGX_STATUS = "ConfigurationAndSWHardeningNeeded"
HEX32, HEX48 = "00" * 32, "ab" * 48
ANY_RTMRS = {f"rtmr{i}": "any" for i in range(4)}


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


def tdx_policy(sample: Sample, **rtmrs: Any) -> AttestationPolicy:
    """A TDX policy pinning the real quote's MRTD and every RTMR (overridden by ``rtmrs``)."""
    report = verify_dcap_quote(sample.quote, sample.collateral, VALID_AT)
    pinned = {f"rtmr{i}": [value] for i, value in enumerate(report.rtmr)}
    return AttestationPolicy.from_dict({"tee_types": ["tdx"], "tdx": {
        "mr_td": [TDX_MR_TD], **pinned, **rtmrs}})


def test_tdx_policy(tdx: Sample) -> None:
    verify_evidence(Evidence("tdx", tdx.quote), policy=tdx_policy(tdx), collateral=tdx.collateral,
                    now=VALID_AT)
    # "any", written out, accepts any value of that register.
    verify_evidence(Evidence("tdx", tdx.quote), policy=tdx_policy(tdx, **ANY_RTMRS),
                    collateral=tdx.collateral, now=VALID_AT)
    wrong = AttestationPolicy.from_dict({"tee_types": ["tdx"], "tdx": {
        "mr_td": ["ab" * 48], **ANY_RTMRS}})
    assert denied(wrong, tdx, "tdx") == "measurement"
    # An SGX-only policy refuses TDX evidence before looking at it.
    assert denied(sgx_policy(), tdx, "tdx") == "tee_type"


@pytest.mark.parametrize("index", range(4))
def test_each_pinned_rtmr_is_checked(tdx: Sample, index: int) -> None:
    other = tdx_policy(tdx, **{f"rtmr{index}": ["cd" * 48]})
    with pytest.raises(PolicyDeniedError, match=f"RTMR{index}") as info:
        verify_evidence(Evidence("tdx", tdx.quote), policy=other, collateral=tdx.collateral,
                        now=VALID_AT)
    assert info.value.reason == "measurement"


def test_a_report_without_rtmrs_is_denied_by_a_pinned_policy() -> None:
    policy = AttestationPolicy.from_dict({"tdx": {"mr_td": [HEX48], **ANY_RTMRS,
                                                  "rtmr1": [HEX48]}})
    report = VerifiedReport(tee="tdx", tcb_status="UpToDate", report_data=b"\0" * 64,
                            mr_td=HEX48, rtmr=())
    with pytest.raises(PolicyDeniedError) as info:
        policy.check(report)
    assert info.value.reason == "measurement"
    AttestationPolicy.from_dict({"tdx": {"mr_td": [HEX48], **ANY_RTMRS}}).check(report)


def test_empty_or_missing_policy_denies(sgx: Sample) -> None:
    assert denied(AttestationPolicy.from_dict({}), sgx) == "no_policy"
    assert AttestationPolicy().empty
    report = verify_dcap_quote(sgx.quote, sgx.collateral, VALID_AT)
    with pytest.raises(PolicyDeniedError) as info:
        check_policy(None, report)
    assert info.value.reason == "no_policy"


TDX_OK = {"mr_td": [HEX48], **ANY_RTMRS}
SIGNER = {"mr_signer": [HEX32], "isv_prod_id": 1}

# (id, document, words the message must contain). Every fail-closed rule has its own vectors:
# removing the rule lets its vectors parse, and these tests fail.
INVALID = [
    ("no-sgx-section", {"tee_types": ["sgx"]}, ["'sgx' section"]),
    ("unknown-tee", {"tee_types": ["sev"], "sgx": {"mr_enclave": [HEX32]}}, ["'sev'"]),
    ("bad-hex", {"sgx": {"mr_enclave": ["xyz"]}}, ["sgx.mr_enclave"]),
    ("signer-without-product", {"sgx": {"mr_signer": [HEX32]}}, ["isv_prod_id"]),
    ("debug-not-bool", {"sgx": {"mr_enclave": [HEX32], "allow_debug": "yes"}},
     ["sgx.allow_debug"]),
    ("unknown-status", {"sgx": {"mr_enclave": [HEX32]}, "tcb_status": ["Fine"]}, ["'Fine'"]),
    ("age", {"sgx": {"mr_enclave": [HEX32]}, "max_evidence_age_seconds": 3600},
     ["max_evidence_age_seconds"]),
    ("unknown-field", {"sgx": {"mr_enclave": [HEX32]}, "surprise": 1}, ["'surprise'"]),
    ("simulated-empty", {"simulated": {"platform_keys": [], "measurements": []},
                         "tee_types": ["simulated"]}, ["platform_keys"]),
    # TDX: every RTMR pinned or explicitly "any".
    *[(f"tdx-rtmr{i}-missing", {"tdx": {k: v for k, v in TDX_OK.items() if k != f"rtmr{i}"}},
       [f"tdx.rtmr{i} is missing", '"any"']) for i in range(4)],
    *[(f"tdx-rtmr{i}-empty", {"tdx": {**TDX_OK, f"rtmr{i}": []}},
       [f"tdx.rtmr{i} is empty", '"any"']) for i in range(4)],
    ("tdx-only-mr-td", {"tdx": {"mr_td": [HEX48]}}, ["tdx.rtmr0 is missing"]),
    ("tdx-rtmr-null", {"tdx": {**TDX_OK, "rtmr2": None}}, ["tdx.rtmr2 is missing"]),
    ("tdx-rtmr-ANY", {"tdx": {**TDX_OK, "rtmr1": "ANY"}}, ["tdx.rtmr1", '"any"']),
    ("tdx-rtmr-star", {"tdx": {**TDX_OK, "rtmr1": ["*"]}}, ["tdx.rtmr1"]),
    ("tdx-rtmr-any-in-list", {"tdx": {**TDX_OK, "rtmr3": ["any"]}}, ["tdx.rtmr3"]),
    ("tdx-rtmr-short", {"tdx": {**TDX_OK, "rtmr0": ["ab" * 32]}}, ["tdx.rtmr0", "48 bytes"]),
    # The policy 0.2's normal form wrote for "any": refused now, naming the field.
    ("tdx-old-normal-form", {"version": 1, "tee_types": ["tdx"], "tcb_status": ["UpToDate"],
                             "max_evidence_age_seconds": 60,
                             "tdx": {"mr_td": [HEX48], "rtmr0": [], "rtmr1": [],
                                     "rtmr2": [HEX48], "rtmr3": [], "allow_debug": False}},
     ["tdx.rtmr0 is empty"]),
    # Revoked is never acceptable, wherever it is listed.
    ("revoked-top", {"sgx": {"mr_enclave": [HEX32]}, "tcb_status": ["UpToDate", "Revoked"]},
     ["'Revoked'", "never"]),
    ("revoked-sgx", {"sgx": {"mr_enclave": [HEX32], "tcb_status": ["Revoked"]}},
     ["sgx.tcb_status", "'Revoked'", "never"]),
    ("revoked-tdx", {"tdx": {**TDX_OK, "tcb_status": ["OutOfDate", "Revoked"]}},
     ["tdx.tcb_status", "'Revoked'", "never"]),
    # By signer alone: an explicit minimum SVN of at least 1.
    ("signer-no-svn", {"sgx": SIGNER}, ["sgx.min_isv_svn", "at least 1"]),
    ("signer-svn-0", {"sgx": {**SIGNER, "min_isv_svn": 0}}, ["sgx.min_isv_svn", "at least 1"]),
    ("signer-svn-null", {"sgx": {**SIGNER, "min_isv_svn": None}}, ["sgx.min_isv_svn"]),
    ("signer-empty-enclave", {"sgx": {**SIGNER, "mr_enclave": []}}, ["sgx.min_isv_svn"]),
]


@pytest.mark.parametrize(("doc", "words"), [pytest.param(d, w, id=i) for i, d, w in INVALID])
def test_invalid_policies_are_refused(doc: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(UsageError) as info:
        AttestationPolicy.from_dict(doc)
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    # The same document as JSON text (what 'key policy set' and the server read).
    with pytest.raises(UsageError):
        AttestationPolicy.from_json(json.dumps(doc))


VALID = [
    ("tdx-any", {"tdx": TDX_OK}),
    ("tdx-pinned", {"tdx": {"mr_td": [HEX48], **{f"rtmr{i}": [HEX48, "cd" * 48]
                                                  for i in range(4)}}}),
    ("tdx-mixed", {"tdx": {**TDX_OK, "rtmr1": [HEX48], "tcb_status": ["OutOfDate"]}}),
    ("signer-svn-1", {"sgx": {**SIGNER, "min_isv_svn": 1}}),
    ("enclave-svn-0", {"sgx": {"mr_enclave": [HEX32], "min_isv_svn": 0}}),
    ("enclave-and-signer-svn-0", {"sgx": {"mr_enclave": [HEX32], "mr_signer": [HEX32]}}),
    ("statuses", {"sgx": {"mr_enclave": [HEX32]}, "tcb_status": [
        "UpToDate", "SWHardeningNeeded", "ConfigurationNeeded",
        "ConfigurationAndSWHardeningNeeded", "OutOfDate", "OutOfDateConfigurationNeeded"]}),
    ("both", {"tee_types": ["sgx", "tdx"], "sgx": {**SIGNER, "min_isv_svn": 3},
              "tdx": TDX_OK}),
]


@pytest.mark.parametrize("doc", [pytest.param(d, id=i) for i, d in VALID])
def test_valid_policies_round_trip_in_normal_form(doc: dict[str, Any]) -> None:
    policy = AttestationPolicy.from_dict(doc)
    normal = policy.to_dict()
    assert AttestationPolicy.from_dict(normal) == policy
    assert AttestationPolicy.from_json(policy.to_json()) == policy
    assert AttestationPolicy.from_json(policy.to_json()).to_dict() == normal
    if policy.tdx is not None:
        for i in range(4):  # "any" stays the literal string, never an empty list
            assert normal["tdx"][f"rtmr{i}"] == (doc["tdx"][f"rtmr{i}"])


def test_the_rules_hold_for_policies_built_in_code() -> None:
    """Not only the JSON parser: the policy types themselves refuse what fails open."""
    with pytest.raises(UsageError, match=r"tdx\.rtmr0 is missing"):
        TdxPolicy(mr_td=(HEX48,))
    with pytest.raises(UsageError, match=r"tdx\.rtmr3 is missing"):
        TdxPolicy(mr_td=(HEX48,), rtmr=("any", "any", "any"))
    with pytest.raises(UsageError, match=r"tdx\.rtmr2 is empty"):
        TdxPolicy(mr_td=(HEX48,), rtmr=("any", "any", (), "any"))
    with pytest.raises(UsageError, match=r"tdx\.rtmr1"):
        TdxPolicy(mr_td=(HEX48,), rtmr=("any", HEX48, "any", "any"))  # type: ignore[arg-type]
    TdxPolicy(mr_td=(HEX48,), rtmr=("any", (HEX48,), "any", "any"))
    with pytest.raises(UsageError, match="min_isv_svn"):
        SgxPolicy(mr_signer=(HEX32,), isv_prod_id=1)
    SgxPolicy(mr_signer=(HEX32,), isv_prod_id=1, min_isv_svn=1)
    SgxPolicy(mr_enclave=(HEX32,))
    sgx = SgxPolicy(mr_enclave=(HEX32,))
    for build in (
        lambda: AttestationPolicy(tee_types=("sgx",), tcb_status=("Revoked",), sgx=sgx),
        lambda: SgxPolicy(mr_enclave=(HEX32,), tcb_status=("UpToDate", "Revoked")),
        lambda: TdxPolicy(mr_td=(HEX48,), rtmr=("any",) * 4, tcb_status=("Revoked",)),
        lambda: dataclasses.replace(sgx_policy(), tcb_status=("Revoked",)),
    ):
        with pytest.raises(UsageError, match="Revoked"):
            build()


@pytest.mark.parametrize("tee", ["sgx", "tdx"])
def test_a_revoked_platform_is_denied_even_by_a_policy_that_lists_it(tee: str) -> None:
    """Defence in depth: a policy object that was altered after its checks still denies."""
    policy = AttestationPolicy.from_dict({"sgx": {"mr_enclave": [HEX32]}, "tdx": TDX_OK})
    object.__setattr__(policy, "tcb_status", ("UpToDate", "Revoked"))
    report = VerifiedReport(tee=tee, tcb_status="Revoked", report_data=b"\0" * 64,
                            mr_enclave=HEX32, mr_signer=HEX32, isv_prod_id=0, isv_svn=0,
                            mr_td=HEX48, rtmr=(HEX48,) * 4)
    with pytest.raises(PolicyDeniedError) as info:
        policy.check(report)
    assert info.value.reason == "tcb_status"
    policy.check(dataclasses.replace(report, tcb_status="UpToDate"))


def test_a_signer_policy_denies_enclaves_below_its_minimum_svn() -> None:
    policy = AttestationPolicy.from_dict({"sgx": {**SIGNER, "min_isv_svn": 2}})
    report = VerifiedReport(tee="sgx", tcb_status="UpToDate", report_data=b"\0" * 64,
                            mr_enclave="11" * 32, mr_signer=HEX32, isv_prod_id=1, isv_svn=1)
    with pytest.raises(PolicyDeniedError) as info:
        policy.check(report)
    assert info.value.reason == "svn"
    policy.check(dataclasses.replace(report, isv_svn=2))
    policy.check(dataclasses.replace(report, mr_enclave="22" * 32, isv_svn=5))


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
