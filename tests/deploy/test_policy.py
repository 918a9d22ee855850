"""The attestation policy skeleton and MRENCLAVE from a gramine-sgx-sign .sig (SIGSTRUCT)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from cipherspark.attestation import AttestationPolicy
from cipherspark.cli import main
from cipherspark.deploy import MRENCLAVE_PLACEHOLDER, policy_document, read_sigstruct
from cipherspark.errors import FormatError, UsageError


def sigstruct(*, mrenclave: bytes, modulus: bytes, prod: int = 7, svn: int = 3,
              debug: bool = False) -> bytes:
    """A SIGSTRUCT laid out per the Intel SDM (vol. 3D, 38.13), signature fields left zero."""
    data = bytearray(1808)
    data[0:16] = bytes.fromhex("06000000e10000000000010000000000")
    data[24:40] = bytes.fromhex("01010000600000006000000001000000")
    data[128:512] = modulus
    data[928:936] = (0x4 | 0x1 | (0x2 if debug else 0)).to_bytes(8, "little")
    data[960:992] = mrenclave
    data[1024:1026] = prod.to_bytes(2, "little")
    data[1026:1028] = svn.to_bytes(2, "little")
    return bytes(data)


def test_reads_the_measurement(tmp_path: Path) -> None:
    modulus = bytes(range(256)) + bytes(range(128))
    sig = tmp_path / "cipherspark.sig"
    sig.write_bytes(sigstruct(mrenclave=bytes.fromhex("ab" * 32), modulus=modulus))
    m = read_sigstruct(sig)
    assert m.mr_enclave == "ab" * 32
    assert m.mr_signer == hashlib.sha256(modulus).hexdigest()
    assert (m.isv_prod_id, m.isv_svn, m.debug) == (7, 3, False)


def test_rejects_what_is_not_a_sigstruct(tmp_path: Path) -> None:
    bad = tmp_path / "x.sig"
    bad.write_bytes(b"\0" * 1808)
    with pytest.raises(FormatError):
        read_sigstruct(bad)


def test_debug_enclaves_are_refused(tmp_path: Path) -> None:
    sig = tmp_path / "debug.sig"
    sig.write_bytes(sigstruct(mrenclave=b"\1" * 32, modulus=b"\2" * 384, debug=True))
    with pytest.raises(UsageError, match="debug"):
        policy_document(read_sigstruct(sig))


def test_cli_skeleton_has_the_placeholder_and_explains(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "policy.json"
    assert main(["attestation-policy", str(out), "--key", "simple"]) == 0
    doc = json.loads(out.read_text())
    assert doc["sgx"]["mr_enclave"] == [MRENCLAVE_PLACEHOLDER]
    assert doc["sgx"]["allow_debug"] is False
    # The one policy format: nothing but what AttestationPolicy reads and writes.
    assert set(doc) == {"version", "tee_types", "tcb_status", "max_evidence_age_seconds", "sgx"}
    text = capsys.readouterr().out
    assert "gramine-sgx-sign" in text and "--sigstruct" in text


def test_cli_fills_in_the_measurement(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    sig = tmp_path / "cipherspark.sig"
    sig.write_bytes(sigstruct(mrenclave=bytes.fromhex("cd" * 32), modulus=b"\5" * 384))
    out = tmp_path / "policy.json"
    assert main(["deploy", "attestation-policy", str(out), "--key", "simple",
                 "--sigstruct", str(sig)]) == 0
    doc = json.loads(out.read_text())
    assert doc["sgx"]["mr_enclave"] == ["cd" * 32]
    assert doc["sgx"]["mr_signer"] == [hashlib.sha256(b"\5" * 384).hexdigest()]
    assert (doc["sgx"]["isv_prod_id"], doc["sgx"]["min_isv_svn"]) == (7, 3)
    # Exactly what the KMS stores: the document is AttestationPolicy's normal form.
    assert AttestationPolicy.from_dict(doc).to_dict() == doc
    printed = capsys.readouterr().out
    assert ("cd" * 32) in printed
    assert f"cipherspark key policy set simple {out}" in printed
    assert main(["deploy", "attestation-policy", str(out), "--key", "simple"]) == 1
    assert main(["deploy", "attestation-policy", str(tmp_path / "p2.json"),
                 "--key", "no/such name"]) == 2
    assert not (tmp_path / "p2.json").exists()
