"""``cipherspark attest verify`` / ``evidence`` / ``platform-key``: JSON out, reasons on failure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cipherspark.cli import main
from tests.attestation.conftest import VALID_AT, Sample
from tests.attestation.test_dcap import SGX_MR_ENCLAVE, SGX_MR_SIGNER


def test_verify_prints_the_report(sgx: Sample, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["attest", "verify", "--quote", str(sgx.quote_path), "--collateral",
                 str(sgx.collateral_path), "--at", str(VALID_AT)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["tee"] == "sgx" and doc["tcb_status"] == "ConfigurationAndSWHardeningNeeded"
    assert doc["advisory_ids"] == ["INTEL-SA-00289", "INTEL-SA-00615"]
    assert doc["measurements"]["mr_enclave"] == SGX_MR_ENCLAVE
    assert doc["report_data"].startswith(b"Hello, world!".hex())


def test_verify_tdx_and_failures(tdx: Sample, sgx: Sample, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["attest", "verify", "--quote", str(tdx.quote_path), "--collateral",
                 str(tdx.collateral_path), "--at", str(VALID_AT)]) == 0
    assert json.loads(capsys.readouterr().out)["tcb_status"] == "UpToDate"
    # Current time: the collateral has expired.
    assert main(["attest", "verify", "--quote", str(tdx.quote_path), "--collateral",
                 str(tdx.collateral_path)]) == 1
    assert "(expired)" in capsys.readouterr().err
    # A policy that accepts only UpToDate refuses the SGX quote, naming the reason.
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"sgx": {"mr_enclave": [SGX_MR_ENCLAVE],
                                          "mr_signer": [SGX_MR_SIGNER]}}))
    assert main(["attest", "verify", "--quote", str(sgx.quote_path), "--collateral",
                 str(sgx.collateral_path), "--at", str(VALID_AT), "--policy", str(policy)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "(tcb_status)" in captured.err
    policy.write_text(json.dumps({"tcb_status": ["ConfigurationAndSWHardeningNeeded"],
                                  "sgx": {"mr_enclave": [SGX_MR_ENCLAVE]}}))
    assert main(["attest", "verify", "--quote", str(sgx.quote_path), "--collateral",
                 str(sgx.collateral_path), "--at", str(VALID_AT), "--policy", str(policy)]) == 0
    assert json.loads(capsys.readouterr().out)["policy"] == "accepted"


def test_simulated_evidence_round_trip(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    key = str(tmp_path / "platform.key")
    assert main(["attest", "platform-key", "--simulated-key", key]) == 0
    platform = json.loads(capsys.readouterr().out)
    assert main(["attest", "evidence", "--tee", "simulated", "--simulated-key", key,
                 "--report-data", "ab" * 64]) == 0
    evidence = tmp_path / "evidence.json"
    evidence.write_text(capsys.readouterr().out)
    assert json.loads(evidence.read_text())["tee"] == "simulated"
    assert main(["attest", "verify", "--quote", str(evidence), "--simulated-platform-key",
                 platform["platform_key"]]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["report_data"] == "ab" * 64
    assert doc["measurements"]["measurement"] == platform["measurement"]
    # Without the registered platform key, the statement is not trusted.
    assert main(["attest", "verify", "--quote", str(evidence)]) == 1
    assert "(signature)" in capsys.readouterr().err


def test_auto_without_a_tee_refuses(capsys: pytest.CaptureFixture[str]) -> None:
    if Path("/dev/attestation").exists() or Path("/sys/kernel/config/tsm/report").exists():
        pytest.skip("this machine has a TEE interface")
    assert main(["attest", "evidence", "--tee", "auto"]) == 1
    assert "(unavailable)" in capsys.readouterr().err


def test_verify_with_collateral_from_a_pccs(sgx: Sample, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from tests.attestation.fake_pccs import fake_pccs, sample_pairs

    with fake_pccs(sample_pairs((sgx.quote_path, sgx.collateral_path)), tmp_path / "t") as pccs:
        assert main(["attest", "verify", "--quote", str(sgx.quote_path), "--pccs-url",
                     pccs.url, "--pccs-ca", str(pccs.ca_file), "--at", str(VALID_AT)]) == 0
        assert json.loads(capsys.readouterr().out)["tcb_status"] == (
            "ConfigurationAndSWHardeningNeeded")
        assert "/sgx/certification/v4/tcb" in pccs.requests
        # Without the pinned CA the self-signed PCCS is not trusted.
        assert main(["attest", "verify", "--quote", str(sgx.quote_path), "--pccs-url",
                     pccs.url, "--at", str(VALID_AT)]) == 1
        assert "(unavailable)" in capsys.readouterr().err


@pytest.mark.parametrize(("extra", "message"), [
    (["--collateral", "c.json", "--pccs-url", "https://127.0.0.1:1"], "not both"),
    (["--pccs-ca", "ca.pem"], "--pccs-ca needs --pccs-url"),
    (["--pccs-url", "http://127.0.0.1:1"], "https://"),
])
def test_verify_pccs_usage_errors(sgx: Sample, extra: list[str], message: str,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["attest", "verify", "--quote", str(sgx.quote_path), *extra]) != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
