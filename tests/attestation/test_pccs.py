"""PccsCollateral against a real HTTPS PCCS on 127.0.0.1 serving the real collateral."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import dcap_qvl  # type: ignore[import-untyped]
import pytest

from cipherspark.attestation import DcapVerifier, PccsCollateral, verify_dcap_quote
from cipherspark.attestation.dcap import collateral_next_update
from cipherspark.errors import AttestationError
from tests.attestation.conftest import VALID_AT, Sample
from tests.attestation.fake_pccs import Answer, FakePccs, fake_pccs, sample_pairs


def pairs(*samples: Sample) -> list[tuple[bytes, dict[str, str]]]:
    return sample_pairs(*((s.quote_path, s.collateral_path) for s in samples))


@pytest.fixture
def pccs(sgx: Sample, tdx: Sample, tmp_path: Path) -> Iterator[FakePccs]:
    with fake_pccs(pairs(sgx, tdx), tmp_path / "pccs-tls") as server:
        yield server


def source(pccs: FakePccs, now: list[float] | None = None, **kwargs: object) -> PccsCollateral:
    clock = (lambda: now[0]) if now is not None else (lambda: float(VALID_AT))
    return PccsCollateral(pccs.url, ca_file=pccs.ca_file, clock=clock, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("tee", ["sgx", "tdx"])
def test_fetched_collateral_is_what_intel_issued_and_verifies(
        pccs: FakePccs, sgx: Sample, tdx: Sample, tee: str) -> None:
    sample = sgx if tee == "sgx" else tdx
    got = source(pccs).collateral(sample.quote)
    assert json.loads(got) == json.loads(sample.collateral)
    report = verify_dcap_quote(sample.quote, got, VALID_AT)
    assert report.tee == tee
    # The TDX quote's TCB info comes from the tdx path, the CRLs from the sgx one.
    assert f"/{tee}/certification/v4/tcb" in pccs.requests
    assert "/sgx/certification/v4/pckcrl" in pccs.requests


def test_same_requests_and_result_as_dcap_qvls_own_client(sgx: Sample, tdx: Sample,
                                                          tmp_path: Path) -> None:
    # dcap-qvl's client only reaches publicly trusted https or plain http: compare on http.
    with fake_pccs(pairs(sgx, tdx), None) as plain, \
            fake_pccs(pairs(sgx, tdx), tmp_path / "tls") as secure:
        for sample in (sgx, tdx):
            async def theirs(quote: bytes = sample.quote) -> str:
                return str((await dcap_qvl.get_collateral(plain.url, quote)).to_json())
            expected = json.loads(asyncio.run(theirs()))
            # dcap-qvl also copies the PCK chain out of the quote itself; the quote carries it.
            expected.pop("pck_certificate_chain", None)
            ours = json.loads(source(secure).collateral(sample.quote))
            assert ours == expected
        assert sorted(plain.requests) == sorted(secure.requests)


def test_cached_until_the_next_update_then_fetched_again(pccs: FakePccs, sgx: Sample) -> None:
    now = [float(VALID_AT)]
    src = source(pccs, now)
    first = src.collateral(sgx.quote)
    assert src.collateral(sgx.quote) == first
    assert src.fetches == 1
    now[0] = collateral_next_update(sgx.collateral) + 1
    src.collateral(sgx.quote)
    assert src.fetches == 2


def test_refreshed_daily_and_a_down_pccs_keeps_serving_valid_cache(
        pccs: FakePccs, sgx: Sample) -> None:
    now = [float(VALID_AT)]
    src = source(pccs, now, refresh_after=3600)
    cached = src.collateral(sgx.quote)
    now[0] += 3601
    pccs.status = 503
    assert src.collateral(sgx.quote) == cached  # still valid by its nextUpdate
    assert src.fetches == 2
    now[0] = collateral_next_update(sgx.collateral) + 1
    with pytest.raises(AttestationError, match="HTTP 503") as info:
        src.collateral(sgx.quote)
    assert info.value.reason == "unavailable"


def test_expired_collateral_is_not_cached(pccs: FakePccs, sgx: Sample) -> None:
    now = [collateral_next_update(sgx.collateral) + 10]
    src = source(pccs, now)
    src.collateral(sgx.quote)
    src.collateral(sgx.quote)
    assert src.fetches == 2
    with pytest.raises(AttestationError) as info:
        DcapVerifier(src, clock=lambda: now[0]).verify(sgx.quote)
    assert info.value.reason == "expired"


def test_verifier_with_pccs_verifies_the_real_quote(pccs: FakePccs, sgx: Sample) -> None:
    report = DcapVerifier(source(pccs), clock=lambda: VALID_AT).verify(sgx.quote)
    assert report.tcb_status == "ConfigurationAndSWHardeningNeeded"


def test_pccs_certificate_must_chain_to_the_pinned_ca(pccs: FakePccs, sgx: Sample,
                                                      tmp_path: Path) -> None:
    # The system's roots do not know the fake's self-signed certificate.
    with pytest.raises(AttestationError, match="cannot fetch DCAP collateral") as info:
        PccsCollateral(pccs.url, clock=lambda: VALID_AT).collateral(sgx.quote)
    assert info.value.reason == "unavailable"
    other = tmp_path / "other"
    with fake_pccs(pairs(sgx), other) as second:
        assert second.ca_file is not None
        with pytest.raises(AttestationError, match="cannot fetch"):
            PccsCollateral(pccs.url, ca_file=second.ca_file,
                           clock=lambda: VALID_AT).collateral(sgx.quote)
    assert pccs.requests == []


@pytest.mark.parametrize("url", ["http://127.0.0.1:8081", "ftp://pccs", "pccs.example", ""])
def test_pccs_url_must_be_https(url: str) -> None:
    with pytest.raises(AttestationError, match="https://"):
        PccsCollateral(url)


def test_unreadable_ca_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AttestationError, match="CA file"):
        PccsCollateral("https://127.0.0.1:1", ca_file=tmp_path / "absent.pem")


def test_pccs_down_is_unavailable(sgx: Sample, tmp_path: Path) -> None:
    with fake_pccs(pairs(sgx), tmp_path / "t") as gone:
        url, ca = gone.url, gone.ca_file
    with pytest.raises(AttestationError, match="cannot fetch DCAP collateral") as info:
        PccsCollateral(url, ca_file=ca, timeout=2).collateral(sgx.quote)
    assert info.value.reason == "unavailable"


def _set_body(body: bytes) -> object:
    return lambda answer: (answer[0], answer[1], body)


def _drop_headers(answer: Answer) -> Answer:
    return answer[0], {}, answer[2]


def _flip_tcb_info(answer: Answer) -> Answer:
    return answer[0], answer[1], answer[2].replace(b'"version":3', b'"version":2', 1)


BAD_ANSWERS = [
    ("/pckcrl", _set_body(b"not a crl"), "PCK CRL is not a CRL"),
    ("/pckcrl", _drop_headers, "no SGX-PCK-CRL-Issuer-Chain header"),
    ("/rootcacrl", _set_body(b"zz"), "root CA CRL is not a CRL"),
    ("/tcb", _set_body(b"{}"), "TCB info lacks"),
    ("/tcb", _set_body(b"[1, 2]"), "not a JSON object"),
    ("/tcb", _set_body(b'{"tcbInfo": {"x": 1}, "signature": "zz"}'), "TCB info lacks"),
    ("/tcb", _set_body(b'{"tcbInfo": {'), "not a JSON object"),
    ("/tcb", _set_body(b"\xff\xfe"), "not UTF-8"),
    ("/tcb", _drop_headers, "no TCB-Info-Issuer-Chain header"),
    ("/qe/identity", _set_body(b'{"enclaveIdentity": {}, "signature": "00"}'), "QE identity"),
    ("/qe/identity", _set_body(b"x" * (2 << 20)), "exceeds"),
]


@pytest.mark.parametrize(("suffix", "rewrite", "message"), BAD_ANSWERS,
                         ids=[f"{s}:{m}" for s, _, m in BAD_ANSWERS])
def test_bad_pccs_answers_are_refused_clearly(pccs: FakePccs, sgx: Sample, suffix: str,
                                              rewrite: object, message: str) -> None:
    pccs.rewrite[suffix] = rewrite  # type: ignore[assignment]
    with pytest.raises(AttestationError, match=message) as info:
        source(pccs).collateral(sgx.quote)
    assert info.value.reason == "unavailable"


def test_tampered_tcb_info_is_caught_by_its_intel_signature(pccs: FakePccs,
                                                            sgx: Sample) -> None:
    pccs.rewrite["/tcb"] = _flip_tcb_info
    collateral = source(pccs).collateral(sgx.quote)  # the PCCS is not trusted for integrity
    with pytest.raises(AttestationError) as info:
        verify_dcap_quote(sgx.quote, collateral, VALID_AT)
    assert info.value.reason == "signature"


def test_fuzzed_pccs_answers_never_escape_as_other_errors(pccs: FakePccs, sgx: Sample) -> None:
    import random

    rng = random.Random(7)
    parsed = dcap_qvl.parse_quote(sgx.quote)
    base = "/sgx/certification/v4"
    original = {"/tcb": pccs.answer(f"{base}/tcb", {"fmspc": str(parsed.fmspc())}),
                "/qe/identity": pccs.answer(f"{base}/qe/identity", {}),
                "/pckcrl": pccs.answer(f"{base}/pckcrl", {"ca": str(parsed.ca())}),
                "/rootcacrl": pccs.answer(f"{base}/rootcacrl", {})}
    assert all(status == 200 for status, _, _ in original.values())
    for _ in range(60):
        suffix = rng.choice(list(original))
        body = original[suffix][2]
        mutated = bytearray(body)
        for _ in range(rng.randint(1, 4)):
            position = rng.randrange(len(mutated))
            mutated[position] = rng.randrange(256)
        if rng.random() < 0.3:
            mutated = mutated[: rng.randrange(len(mutated))]
        pccs.rewrite = {suffix: _set_body(bytes(mutated))}  # type: ignore[dict-item]
        try:
            collateral = source(pccs).collateral(sgx.quote)
        except AttestationError as exc:
            assert exc.reason == "unavailable"
            continue
        # What parses is still judged by Intel's signatures: it verifies only if the change
        # did not alter the collateral (say, the case of a hex digit).
        try:
            verify_dcap_quote(sgx.quote, collateral, VALID_AT)
        except AttestationError as exc:
            assert exc.reason in ("signature", "expired")
        else:
            assert json.loads(collateral) == json.loads(sgx.collateral)


def test_signed_parts_are_taken_byte_for_byte_from_spaced_json(pccs: FakePccs,
                                                               sgx: Sample) -> None:
    # A PCCS may format its answer as it likes around the signed object; the object's own
    # bytes are what Intel signed and must reach the verifier unchanged.
    def spaced(answer: Answer) -> Answer:
        body = answer[2].decode()
        inner = body[len('{"tcbInfo":'):body.rindex(',"signature":')]
        signature = body[body.rindex(',"signature":') + len(',"signature":'):-1]
        spaced_body = f'\n{{ "tcbInfo" :\t{inner} ,\r\n  "signature" : {signature} }}\n'
        return answer[0], answer[1], spaced_body.encode()

    pccs.rewrite["/tcb"] = spaced
    collateral = source(pccs).collateral(sgx.quote)
    assert json.loads(collateral)["tcb_info"] == json.loads(sgx.collateral)["tcb_info"]
    assert verify_dcap_quote(sgx.quote, collateral, VALID_AT).tee == "sgx"
