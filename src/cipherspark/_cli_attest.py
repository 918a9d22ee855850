"""``cipherspark attest ...`` and ``cipherspark key policy ...``: TEE evidence and release policies.

A thin layer over :mod:`cipherspark.attestation`, :class:`cipherspark.kms.remote.RemoteKms` and
(for ``file://`` keystores, whose policies allow only the simulated TEE)
:class:`~cipherspark.kms.LocalKms`.
"""

from __future__ import annotations

import base64
import binascii
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from cipherspark.errors import AttestationError, InputError, UsageError

__all__ = ["app", "policy_app"]

_out = Console(highlight=False, markup=False, soft_wrap=True)

app = typer.Typer(help="Produce and verify TEE evidence (attested key release).",
                  no_args_is_help=True)
policy_app = typer.Typer(help="Set and show a primary key's release policy (server or keystore).",
                         no_args_is_help=True)

TeeOpt = Annotated[str, typer.Option(
    "--tee", envvar="CIPHERSPARK_TEE", show_envvar=True,
    help="gramine-sgx, tdx, auto (never falls back to simulated) or simulated (insecure).")]
SimKeyOpt = Annotated[Path | None, typer.Option(
    "--simulated-key", envvar="CIPHERSPARK_SIMULATED_TEE_KEY", show_envvar=True,
    help="The simulated-platform key file (default ~/.cipherspark/simulated-tee/platform.key).")]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc


def _fail(exc: AttestationError) -> typer.Exit:
    print(f"cipherspark: attestation failed ({exc.reason}): {exc}", file=sys.stderr)
    return typer.Exit(1)


@app.command("evidence")
def evidence(
    tee: TeeOpt = "auto",
    report_data: Annotated[str, typer.Option(
        help="64 bytes of report data, hex (default: zeros).")] = "00" * 64,
    out: Annotated[Path | None, typer.Option(
        help="Write the raw quote here instead of printing JSON.")] = None,
    simulated_key: SimKeyOpt = None,
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
    _out.print(json.dumps({"tee": produced.tee, "report_data": data.hex(),
                           "quote": base64.b64encode(produced.quote).decode()}))


def _load_evidence(raw: bytes) -> Any:
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


@app.command("verify")
def verify(
    quote: Annotated[Path, typer.Option("--quote", help="Raw DCAP quote, or evidence JSON.")],
    collateral: Annotated[Path | None, typer.Option(
        help="DCAP collateral JSON (QuoteCollateralV3).")] = None,
    pccs_url: Annotated[str | None, typer.Option(
        envvar="CIPHERSPARK_PCCS_URL", show_envvar=True,
        help="Fetch the DCAP collateral from this PCCS (https) instead of --collateral.")
    ] = None,
    pccs_ca: Annotated[Path | None, typer.Option(
        envvar="CIPHERSPARK_PCCS_CA", show_envvar=True,
        help="CA bundle the PCCS's TLS certificate must chain to (default: system roots).")
    ] = None,
    at: Annotated[int | None, typer.Option(
        "--at", help="Verify at this UNIX time (default: now).")] = None,
    policy: Annotated[Path | None, typer.Option(
        help="Also apply this release policy (JSON).")] = None,
    simulated_platform_key: Annotated[list[str] | None, typer.Option(
        help="Trusted simulated-platform public key (hex), when no --policy names them.")
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
    loaded = _load_evidence(_read(quote))
    rules = AttestationPolicy.from_json(_read(policy)) if policy is not None else None
    coll = _read(collateral).decode() if collateral is not None else None
    try:
        dcap = DcapVerifier(PccsCollateral(pccs_url, ca_file=pccs_ca)) if pccs_url else None
        report = verify_evidence(loaded, policy=rules, collateral=coll, now=at, dcap=dcap,
                                 simulated_platform_keys=simulated_platform_key or ())
    except AttestationError as exc:
        raise _fail(exc) from exc
    doc = report.to_dict()
    doc["policy"] = "accepted" if rules is not None else "not checked"
    _out.print(json.dumps(doc, indent=2))


@app.command("platform-key")
def platform_key(simulated_key: SimKeyOpt = None) -> None:
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
    _out.print(json.dumps({"tee": "simulated",
                           "platform_key": simulated_platform_public_key(key),
                           "measurement": code_measurement()}))


KmsOpt = Annotated[str | None, typer.Option(
    "--kms", envvar="CIPHERSPARK_KMS", show_envvar=True,
    help="KMS: https://HOST:PORT, or file://DIR for the embedded keystore (default: "
    ".cipherspark/kms).")]
CaOpt = Annotated[Path | None, typer.Option(
    "--kms-ca", envvar="CIPHERSPARK_KMS_CA", show_envvar=True,
    help="CA (or self-signed certificate) the KMS server's certificate must chain to.")]
AppIdOpt = Annotated[str | None, typer.Option(
    "--app-id", envvar="CIPHERSPARK_APP_ID", show_envvar=True, help="APP ID at the KMS.")]
ApiKeyOpt = Annotated[str | None, typer.Option(
    "--api-key", envvar="CIPHERSPARK_API_KEY", show_envvar=True,
    help="API KEY (prefer the environment variable).")]


@contextmanager
def _policy_kms(url: str | None, ca: Path | None, app_id: str | None,
                api_key: str | None) -> Iterator[Any]:
    """The KMS holding release policies: a server (https://) or the embedded keystore."""
    from cipherspark.kms import Credentials, open_kms
    from cipherspark.kms.remote import RemoteKms

    if not app_id or not api_key:
        raise UsageError("KMS credentials missing: set CIPHERSPARK_APP_ID and "
                         "CIPHERSPARK_API_KEY")
    credentials = Credentials(app_id, api_key)
    if url is not None and url.startswith(("https://", "http://")):
        remote = RemoteKms(url, credentials, ca_file=ca)
        try:
            yield remote
        finally:
            remote.close()
        return
    yield open_kms(url, credentials)


@policy_app.command("set")
def policy_set(
    name: Annotated[str, typer.Argument(help="Primary key name.")],
    file: Annotated[Path, typer.Argument(help="Policy JSON (see docs/attestation.md).")],
    kms: KmsOpt = None, kms_ca: CaOpt = None, app_id: AppIdOpt = None, api_key: ApiKeyOpt = None,
) -> None:
    """Set NAME's release policy from FILE; prints the stored (normalised) policy."""
    from cipherspark.attestation import AttestationPolicy

    rules = AttestationPolicy.from_json(_read(file))
    with _policy_kms(kms, kms_ca, app_id, api_key) as service:
        stored = service.set_policy(name, rules)
    _out.print(json.dumps(stored.to_dict(), indent=2, sort_keys=True))
    if stored.empty:
        _out.print("note: this policy is empty and denies every attested unwrap")


@policy_app.command("show")
def policy_show(
    name: Annotated[str, typer.Argument(help="Primary key name.")],
    kms: KmsOpt = None, kms_ca: CaOpt = None, app_id: AppIdOpt = None, api_key: ApiKeyOpt = None,
) -> None:
    """Print NAME's release policy (``null``: none, every attested unwrap is denied)."""
    with _policy_kms(kms, kms_ca, app_id, api_key) as service:
        stored = service.get_policy(name)
    _out.print(json.dumps(None if stored is None else stored.to_dict(), indent=2,
                          sort_keys=True))
