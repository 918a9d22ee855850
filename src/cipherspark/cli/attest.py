"""``cipherspark attest ...``: produce and verify TEE evidence.

A thin layer over :mod:`cipherspark.attestation`. Release policies, which live with the keys, are
``cipherspark key policy ...`` (:mod:`cipherspark.cli.keys`).
"""

from __future__ import annotations

import base64
import binascii
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cipherspark import settings
from cipherspark.cli import _help
from cipherspark.cli._io import out as _out
from cipherspark.cli._io import read_input
from cipherspark.cli._options import PccsCaOpt, PccsUrlOpt, SimulatedKeyOpt
from cipherspark.errors import AttestationError, InputError, UsageError

if TYPE_CHECKING:
    from cipherspark.attestation import Evidence

__all__ = ["app", "evidence", "platform_key", "verify"]

app = _help.Typer(
    help="Produce and verify TEE evidence (attested key release).",
    epilog=_help.examples(
        "cipherspark attest evidence --tee simulated > evidence.json",
        "cipherspark attest verify --quote evidence.json --policy policy.json",
        "cipherspark attest platform-key",
    ),
    no_args_is_help=True,
)

_TeeOpt = Annotated[
    str,
    typer.Option(
        "--tee",
        envvar=settings.ENV_TEE,
        show_envvar=True,
        help="gramine-sgx, tdx, auto (never falls back to simulated) or simulated (insecure).",
    ),
]


def _fail(exc: AttestationError) -> typer.Exit:
    # The verdict of 'attest evidence' / 'attest verify' is the result itself, so it carries
    # the reason code scripts branch on, not the generic one-line error of cipherspark.cli.
    print(f"cipherspark: attestation failed ({exc.reason}): {exc}", file=sys.stderr)
    return typer.Exit(1)


@app.command(
    "evidence",
    epilog=_help.examples(
        "cipherspark attest evidence --tee simulated > evidence.json",
        "cipherspark attest evidence --tee gramine-sgx --report-data $(openssl rand -hex 64) \\",
        "    --out quote.bin",
    ),
)
def evidence(
    tee: _TeeOpt = "auto",
    report_data: Annotated[
        # 128 zeros in a [default: ...] would fill two lines; the help says it in one word.
        str, typer.Option(help="64 bytes of report data, hex (default: zeros).", show_default=False)
    ] = "00" * 64,
    out: Annotated[
        Path | None, typer.Option(help="Write the raw quote here instead of printing JSON.")
    ] = None,
    simulated_key: SimulatedKeyOpt = None,
) -> None:
    """Produce evidence in this TEE over REPORT_DATA and print it (JSON: tee, quote base64)."""
    from cipherspark.attestation import evidence_provider

    try:
        data = bytes.fromhex(report_data)
    except ValueError as exc:
        raise UsageError("--report-data must be hex") from exc
    try:
        produced = evidence_provider(tee, simulated_key_path=simulated_key).evidence(data)
    except AttestationError as exc:
        raise _fail(exc) from exc
    if out is not None:
        out.write_bytes(produced.quote)
        _out.print(f"wrote {produced.tee} evidence ({len(produced.quote)} bytes) to {out}")
        return
    _out.print(
        json.dumps(
            {
                "tee": produced.tee,
                "report_data": data.hex(),
                "quote": base64.b64encode(produced.quote).decode(),
            }
        )
    )


def _load_evidence(raw: bytes) -> Evidence:
    from cipherspark.attestation import Evidence
    from cipherspark.attestation.dcap import dcap_quote_tee

    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and "tee" in doc and "quote" in doc:
        try:
            return Evidence(str(doc["tee"]), base64.b64decode(str(doc["quote"]), validate=True))
        except (binascii.Error, ValueError) as exc:
            raise InputError("the evidence file's quote is not base64") from exc
    if isinstance(doc, dict) and "statement" in doc:
        return Evidence("simulated", raw)
    return Evidence(dcap_quote_tee(raw), raw)


@app.command(
    "verify",
    epilog=_help.examples(
        "cipherspark attest verify --quote evidence.json --policy policy.json",
        "cipherspark attest verify --quote quote.bin --collateral collateral.json --at 1767225600",
    ),
)
def verify(
    quote: Annotated[Path, typer.Option("--quote", help="Raw DCAP quote, or evidence JSON.")],
    collateral: Annotated[
        Path | None, typer.Option(help="DCAP collateral JSON (QuoteCollateralV3).")
    ] = None,
    pccs_url: PccsUrlOpt = None,
    pccs_ca: PccsCaOpt = None,
    at: Annotated[
        int | None, typer.Option("--at", help="Verify at this UNIX time (default: now).")
    ] = None,
    policy: Annotated[
        Path | None, typer.Option(help="Also apply this release policy (JSON).")
    ] = None,
    simulated_platform_key: Annotated[
        list[str] | None,
        typer.Option(
            help="Trusted simulated-platform public key (hex), when no --policy names them."
        ),
    ] = None,
) -> None:
    """Verify evidence and print the report as JSON; exit 1 with the reason on failure."""
    from cipherspark.attestation import (
        AttestationPolicy,
        DcapVerifier,
        PccsCollateral,
        verify_evidence,
    )

    if collateral is not None and pccs_url:
        raise UsageError("give --collateral or --pccs-url, not both")
    if pccs_ca is not None and not pccs_url:
        raise UsageError("--pccs-ca needs --pccs-url")
    loaded = _load_evidence(read_input(quote))
    rules = AttestationPolicy.from_json(read_input(policy)) if policy is not None else None
    coll = read_input(collateral).decode() if collateral is not None else None
    try:
        dcap = DcapVerifier(PccsCollateral(pccs_url, ca_file=pccs_ca)) if pccs_url else None
        report = verify_evidence(
            loaded,
            policy=rules,
            collateral=coll,
            now=at,
            dcap=dcap,
            simulated_platform_keys=simulated_platform_key or (),
        )
    except AttestationError as exc:
        raise _fail(exc) from exc
    doc = report.to_dict()
    doc["policy"] = "accepted" if rules is not None else "not checked"
    _out.print(json.dumps(doc, indent=2))


@app.command(
    "platform-key",
    epilog=_help.examples(
        "cipherspark attest platform-key",
        "cipherspark attest platform-key --simulated-key worker-platform.key",
    ),
)
def platform_key(simulated_key: SimulatedKeyOpt = None) -> None:
    """Print this installation's simulated-platform public key and code measurement (JSON).

    A KMS server accepts this platform's evidence only once its operator has run
    'cipherspark kms simulated-platform add PLATFORM_KEY'; a key's policy lists it too.
    """
    from cipherspark.attestation import (
        code_measurement,
        load_simulated_platform_key,
        simulated_platform_public_key,
    )

    key = load_simulated_platform_key(simulated_key)
    _out.print(
        json.dumps(
            {
                "tee": "simulated",
                "platform_key": simulated_platform_public_key(key),
                "measurement": code_measurement(),
            }
        )
    )
