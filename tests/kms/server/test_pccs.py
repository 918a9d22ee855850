"""The KMS server takes DCAP collateral from its PCCS (``kms serve --pccs-url``), not the worker.

In process (the real quotes' collateral is valid only at ``VALID_AT``, so the service's clock is
set to it): a real SGX quote passes signature, TCB and policy checks with collateral fetched
over TLS from a PCCS on 127.0.0.1 and cached, and is then denied only for its binding (it was not
made for our nonce). As a process: ``kms serve --pccs-url`` fetches from the PCCS on an attested
unwrap, and a bad PCCS setting is one clear error.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from cipherspark.attestation import (
    AttestationPolicy,
    DcapVerifier,
    EphemeralKey,
    GramineSgxProvider,
    PccsCollateral,
    verify_dcap_quote,
)
from cipherspark.errors import AttestationError, PolicyDeniedError
from cipherspark.kms import Credentials
from cipherspark.kms.remote import KmsAdmin, RemoteKms
from cipherspark.kms.server import init_data_dir, keyring, open_service
from cipherspark.kms.server.release import ReleaseEvidence
from cipherspark.kms.server.service import KeyService
from tests.attestation.conftest import VALID_AT, Sample, sgx  # noqa: F401 (fixture)
from tests.attestation.fake_pccs import FakePccs, fake_pccs, sample_pairs
from tests.kms.server.conftest import cli, free_port

pytestmark = pytest.mark.servers

ACCEPTED = ["UpToDate", "ConfigurationAndSWHardeningNeeded"]


@pytest.fixture
def pccs(sgx: Sample, tmp_path: Path) -> Iterator[FakePccs]:  # noqa: F811
    with fake_pccs(sample_pairs((sgx.quote_path, sgx.collateral_path)),
                   tmp_path / "pccs-tls") as server:
        yield server


def sgx_policy(sample: Sample, statuses: list[str]) -> AttestationPolicy:
    report = verify_dcap_quote(sample.quote, sample.collateral, VALID_AT)
    return AttestationPolicy.from_dict({"tee_types": ["sgx"], "sgx": {
        "mr_enclave": [report.mr_enclave], "tcb_status": statuses}})


def test_real_quote_verified_with_pccs_collateral_then_denied_for_binding(
        pccs: FakePccs, sgx: Sample, tmp_path: Path) -> None:  # noqa: F811
    init_data_dir(tmp_path / "d")
    opened = open_service(tmp_path / "d")
    storage, audit = opened.storage, opened.audit
    source = PccsCollateral(pccs.url, ca_file=pccs.ca_file, clock=lambda: VALID_AT)
    service = KeyService(storage, keyring.load_root_key(tmp_path / "d" / "root.key"), audit,
                         hasher=keyring.SecretHasher(n=1 << 10), dcap=DcapVerifier(source),
                         attestation_clock=lambda: VALID_AT)
    try:
        creds = service.create_app("worker", "r0")
        app = service.authenticate(creds.app_id, creds.api_key)
        service.create_key(app, "k", "r1")
        _, _, wrapped = service.generate_data_key(app, "k", "r2", with_plaintext=False)

        def attempt(collateral: str | None) -> str:
            nonce, _ = service.attestation_nonce(app, "k")
            with pytest.raises(AttestationError) as info:
                service.attested_unwrap(app, "k", ReleaseEvidence(
                    nonce, "sgx", sgx.quote, EphemeralKey.generate().public_bytes, collateral),
                    wrapped=wrapped, request_id="r3")
            return info.value.reason

        service.set_policy(app, "k", sgx_policy(sgx, ACCEPTED), "r4")
        # Signature, certificates, TCB and policy pass; the quote was not made for this nonce.
        # The worker's (here: broken) collateral is ignored: the server's PCCS decides.
        assert attempt("{}") == "binding"
        assert attempt(None) == "binding"
        assert source.fetches == 1  # cached until its nextUpdate
        assert "/sgx/certification/v4/tcb" in pccs.requests
        service.set_policy(app, "k", sgx_policy(sgx, ["UpToDate"]), "r5")
        assert attempt(None) == "tcb_status"
        pccs.status = 503
        fresh = KeyService(storage, keyring.load_root_key(tmp_path / "d" / "root.key"), audit,
                           dcap=DcapVerifier(PccsCollateral(pccs.url, ca_file=pccs.ca_file)),
                           attestation_clock=lambda: VALID_AT)
        nonce, _ = fresh.attestation_nonce(app, "k")
        with pytest.raises(AttestationError, match="cannot fetch DCAP collateral") as info:
            fresh.attested_unwrap(app, "k", ReleaseEvidence(
                nonce, "sgx", sgx.quote, EphemeralKey.generate().public_bytes),
                wrapped=wrapped, request_id="r6")
        assert info.value.reason == "unavailable"
    finally:
        opened.close()


def test_kms_serve_fetches_collateral_from_its_pccs(pccs: FakePccs, sgx: Sample,  # noqa: F811
                                                    tmp_path: Path) -> None:
    assert pccs.ca_file is not None
    # A Gramine-shaped /dev/attestation that replays the real quote, whatever it is asked.
    gramine = tmp_path / "attestation"
    gramine.mkdir()
    (gramine / "quote").write_bytes(sgx.quote)
    env = {"CIPHERSPARK_PCCS_URL": pccs.url, "CIPHERSPARK_PCCS_CA": str(pccs.ca_file)}
    with running_server(tmp_path / "kms", env) as (url, ca, token, out):
        with KmsAdmin(url, token, ca_file=ca) as admin:
            new = admin.create_app("worker")
        kms = RemoteKms(url, Credentials(new.app_id, new.api_key), ca_file=ca)
        try:
            kms.create_key("k")
            kms.set_policy("k", sgx_policy(sgx, ACCEPTED))
            wrapped = kms.generate_wrapped_data_key("k")
            with pytest.raises(PolicyDeniedError) as info:
                kms.attested_unwrap("k", wrapped, GramineSgxProvider(gramine))
        finally:
            kms.close()
    # Today the real quote's collateral has expired: fetched from the PCCS, then refused.
    assert info.value.reason == "expired"
    assert (gramine / "user_report_data").stat().st_size == 64
    assert "/sgx/certification/v4/tcb" in pccs.requests
    assert f"DCAP collateral from the PCCS {pccs.url}" in out.read_text()


@contextmanager
def running_server(data: Path, env: dict[str, str]) -> Iterator[tuple[str, Path, str, Path]]:
    """``cipherspark kms serve`` with ``env`` added: (url, CA file, admin token, stdout file)."""
    token = init_data_dir(data).admin_token
    port = free_port()
    url, ca, out = f"https://127.0.0.1:{port}", data / "tls" / "cert.pem", data / "out.txt"
    with open(out, "wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cipherspark", "kms", "serve", "--data", str(data),
             "--port", str(port)], env={**os.environ, **env}, stdout=sink,
            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if ca.exists() and httpx.get(f"{url}/healthz", verify=ssl.create_default_context(
                        cafile=str(ca))).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, out.read_text()
            assert time.monotonic() < deadline, "the KMS server did not start"
            time.sleep(0.1)
        yield url, ca, token, out
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.parametrize(("args", "message"), [
    (["--pccs-url", "http://127.0.0.1:8081"], "must be an https:// URL"),
    (["--pccs-ca", "/nonexistent.pem"], "--pccs-ca needs --pccs-url"),
    (["--pccs-url", "https://127.0.0.1:8081", "--pccs-ca", "/nonexistent.pem"],
     "cannot load the PCCS CA file"),
])
def test_bad_pccs_settings_are_one_clear_error(tmp_path: Path, args: list[str],
                                               message: str) -> None:
    init_data_dir(tmp_path / "kms")
    result = cli("kms", "serve", "--data", str(tmp_path / "kms"), "--port",
                 str(free_port()), *args, check=False)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
