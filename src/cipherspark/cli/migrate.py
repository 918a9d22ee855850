"""The migration commands: ``migrate bigdl`` (Intel BigDL PPML's encrypted files).

A thin layer over :mod:`cipherspark.jobs.migrate`: it turns the BigDL key options into a
:class:`~cipherspark.jobs.migrate.BigDLSource` and prints what was verified and written.

BigDL's secrets (SimpleKMS's APIKEY, the plaintext primary key) come from files
(``--bigdl-*-file``) or from the environment (``CIPHERSPARK_BIGDL_API_KEY``,
``CIPHERSPARK_BIGDL_PRIMARY_KEY_PLAINTEXT``, read by :mod:`cipherspark.settings`); the flags
that take their values stay for compatibility and warn (a value shows in ``ps``). A flag or a
file given on the command line wins over the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cipherspark import settings
from cipherspark.cli import _help
from cipherspark.cli._io import out as _out
from cipherspark.cli._io import progress, read_input, warn
from cipherspark.cli._options import (
    DEFAULT_SEGMENT_SIZE,
    ApiKeyFileOpt,
    ApiKeyOpt,
    AppIdOpt,
    KmsCaOpt,
    KmsOpt,
    OverwriteOpt,
    SegmentSizeOpt,
)
from cipherspark.cli._services import credentials, open_service

# The one progress bar of the CLI (a transfer bar on a terminal, silent otherwise).
from cipherspark.errors import InputError, IntegrityError, UsageError

if TYPE_CHECKING:
    from cipherspark.crypto._bigdl import BigDLKeys
    from cipherspark.jobs.migrate import BigDLSource

__all__ = ["app", "bigdl"]

app = _help.Typer(
    help="Move encrypted data from other systems into cipherspark datasets.",
    epilog=_help.examples(
        "cipherspark migrate bigdl bigdl-output people.cspk --key simple \\",
        "    --bigdl-data-keys data-keys.json",
    ),
    no_args_is_help=True,
)

_BIGDL_PANEL = "BigDL keys"
# BigDL's own names for its SimpleKeyManagementService are accepted too.
_SIMPLE_NAMES = ("simple", "SimpleKeyManagementService")

# Like the shared --key, but optional: --check-only writes nothing and needs no key.
MigrateKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--key",
        metavar="NAME",
        envvar=settings.ENV_KEY,
        show_envvar=True,
        help="Name of the primary key that wraps the new data key (not needed with --check-only).",
    ),
]


def _secret(flag: str, variable: str, value: str | None, file: Path | None) -> str | None:
    """A BigDL secret from ``--FLAG-file`` or ``--FLAG`` (warns: shows in ps); ``None`` if
    neither is given (the caller then looks at the environment variable ``variable``)."""
    if value is not None and file is not None:
        raise UsageError(f"give {flag} or {flag}-file, not both")
    if file is not None:
        try:
            text = read_input(file).decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise InputError(f"{flag}-file: {file} is not UTF-8 text") from exc
        if not text:
            raise InputError(f"{flag}-file: {file} is empty")
        return text
    if value is not None:
        warn(
            f"{flag} shows in ps and in the shell's history; set {variable} or use {flag}-file FILE"
        )
    return value


def _bigdl_keys(
    kms_type: str,
    app_id: str | None,
    api_key: str | None,
    primary_key: Path | None,
    primary_key_plaintext: str | None,
    data_keys: Path | None,
) -> BigDLKeys:
    from cipherspark.crypto._bigdl import ExportedDataKeys, PlaintextPrimaryKey, SimpleKms

    if kms_type not in _SIMPLE_NAMES:
        raise UsageError(
            f"unknown --bigdl-kms {kms_type!r}: only 'simple' (SimpleKeyManagementService) is "
            "read directly; for EHSM, BigDL KMS and Azure see docs/migrate-bigdl.md"
        )
    given = [primary_key, primary_key_plaintext, data_keys]
    if sum(value is not None for value in given) > 1:
        raise UsageError(
            "give one of --bigdl-primary-key (SimpleKMS), --bigdl-primary-key-plaintext and "
            "--bigdl-data-keys, not both"
        )
    if primary_key_plaintext is not None:
        return PlaintextPrimaryKey.from_base64(primary_key_plaintext)
    if data_keys is not None:
        return ExportedDataKeys.from_json(read_input(data_keys))
    if primary_key is None:
        raise UsageError(
            "BigDL key missing: give --bigdl-primary-key FILE (SimpleKMS, with --bigdl-app-id "
            f"and {settings.ENV_BIGDL_API_KEY} or --bigdl-api-key-file), "
            f"{settings.ENV_BIGDL_PRIMARY_KEY_PLAINTEXT} or --bigdl-primary-key-plaintext-file "
            "FILE, or --bigdl-data-keys FILE"
        )
    if not app_id:
        raise UsageError("SimpleKMS needs --bigdl-app-id")
    if not api_key:
        raise UsageError(
            f"SimpleKMS needs its APIKEY: set {settings.ENV_BIGDL_API_KEY} or give "
            "--bigdl-api-key-file FILE"
        )
    return SimpleKms.from_material(app_id, api_key, read_input(primary_key))


def _total(src: Path) -> int:
    if src.is_dir():
        return sum(p.stat().st_size for p in src.iterdir() if p.is_file())
    return src.stat().st_size if src.exists() else 0


@app.command(
    "bigdl",
    epilog=_help.examples(
        "cipherspark migrate bigdl bigdl-output --check-only --bigdl-data-keys data-keys.json",
        "cipherspark migrate bigdl bigdl-output people.cspk --key simple \\",
        "    --bigdl-data-keys data-keys.json",
        "cipherspark migrate bigdl people.csv.bigdl people.csv.cspk --key simple \\",
        "    --bigdl-app-id 123456 --bigdl-primary-key primary.material  # APIKEY: the variable",
    ),
)
def bigdl(
    src: Annotated[Path, typer.Argument(help="A BigDL encrypted file, or a BigDL output folder.")],
    dst: Annotated[
        Path | None,
        typer.Argument(help="cipherspark file (or dataset folder, for a folder) to write."),
    ] = None,
    key: MigrateKeyOpt = None,
    bigdl_kms: Annotated[
        str,
        typer.Option(
            "--bigdl-kms",
            rich_help_panel=_BIGDL_PANEL,
            help="BigDL's KMS type: simple (SimpleKeyManagementService).",
        ),
    ] = "simple",
    bigdl_app_id: Annotated[
        str | None,
        typer.Option("--bigdl-app-id", rich_help_panel=_BIGDL_PANEL, help="SimpleKMS APPID."),
    ] = None,
    bigdl_api_key: Annotated[
        str | None,
        typer.Option(
            "--bigdl-api-key",
            rich_help_panel=_BIGDL_PANEL,
            help="SimpleKMS APIKEY. Its value shows in ps: prefer the environment variable "
            f"{settings.ENV_BIGDL_API_KEY} (or --bigdl-api-key-file).",
        ),
    ] = None,
    bigdl_api_key_file: Annotated[
        Path | None,
        typer.Option(
            "--bigdl-api-key-file",
            rich_help_panel=_BIGDL_PANEL,
            help="File holding the SimpleKMS APIKEY (surrounding whitespace is ignored); "
            f"without it and --bigdl-api-key, {settings.ENV_BIGDL_API_KEY} is used.",
        ),
    ] = None,
    bigdl_primary_key: Annotated[
        Path | None,
        typer.Option(
            "--bigdl-primary-key",
            rich_help_panel=_BIGDL_PANEL,
            help="SimpleKMS primary key material file (spark.bigdl.primaryKey.NAME.material).",
        ),
    ] = None,
    bigdl_primary_key_plaintext: Annotated[
        str | None,
        typer.Option(
            "--bigdl-primary-key-plaintext",
            rich_help_panel=_BIGDL_PANEL,
            help="Plaintext primary key, base64 (spark.bigdl.primaryKey.NAME.plainText). Its "
            "value shows in ps: prefer the environment variable "
            f"{settings.ENV_BIGDL_PRIMARY_KEY_PLAINTEXT} (or "
            "--bigdl-primary-key-plaintext-file).",
        ),
    ] = None,
    bigdl_primary_key_plaintext_file: Annotated[
        Path | None,
        typer.Option(
            "--bigdl-primary-key-plaintext-file",
            rich_help_panel=_BIGDL_PANEL,
            help="File holding the plaintext primary key, base64; without any BigDL key "
            f"option, {settings.ENV_BIGDL_PRIMARY_KEY_PLAINTEXT} is used.",
        ),
    ] = None,
    bigdl_data_keys: Annotated[
        Path | None,
        typer.Option(
            "--bigdl-data-keys",
            rich_help_panel=_BIGDL_PANEL,
            help="EHSM, BigDL KMS, Azure: a JSON file of the data keys you exported, "
            '{"wrapped key as in the header": "data key", ...} (docs/migrate-bigdl.md).',
        ),
    ] = None,
    bigdl_data_key: Annotated[
        Path | None,
        typer.Option(
            "--bigdl-data-key",
            rich_help_panel=_BIGDL_PANEL,
            help="BigDL 2.1/2.2 (v1 files): the data key file (spark.bigdl.kms.key.data).",
        ),
    ] = None,
    unsafe_unauthenticated_input: Annotated[
        bool,
        typer.Option(
            "--unsafe-unauthenticated-input",
            help="Also migrate input that is not fully authenticated: nativeaescbc files (no "
            "MAC: nothing about them can be verified, a modified file migrates as garbage) and "
            "AES_GCM_CTR_V1 Parquet (footer and page headers authenticated, page data not).",
        ),
    ] = False,
    check_only: Annotated[
        bool,
        typer.Option(
            "--check-only", help="Only verify every file and list the outcome; write nothing."
        ),
    ] = False,
    kms: KmsOpt = None,
    kms_ca: KmsCaOpt = None,
    app_id: AppIdOpt = None,
    api_key: ApiKeyOpt = None,
    api_key_file: ApiKeyFileOpt = None,
    segment_size: SegmentSizeOpt = DEFAULT_SEGMENT_SIZE,
    overwrite: OverwriteOpt = False,
) -> None:
    """Verify BigDL PPML encrypted files (HMAC over the ciphertext), re-encrypt them under --key.

    Every file is verified before anything is written: one that does not verify refuses the
    whole migration. A folder becomes a dataset; nothing partial is ever left behind.
    """
    from cipherspark.jobs.migrate import BigDLSource, migrate_bigdl

    api_key_value = _secret(
        "--bigdl-api-key", settings.ENV_BIGDL_API_KEY, bigdl_api_key, bigdl_api_key_file
    )
    if api_key_value is None:
        api_key_value = settings.bigdl_api_key()
    plaintext = _secret(
        "--bigdl-primary-key-plaintext",
        settings.ENV_BIGDL_PRIMARY_KEY_PLAINTEXT,
        bigdl_primary_key_plaintext,
        bigdl_primary_key_plaintext_file,
    )
    if plaintext is None and bigdl_primary_key is None and bigdl_data_keys is None:
        # Only when no key is named on the command line: an exported variable left over from
        # another migration must not make an explicit --bigdl-primary-key "not both".
        plaintext = settings.bigdl_primary_key_plaintext()
    keys = _bigdl_keys(
        bigdl_kms, bigdl_app_id, api_key_value, bigdl_primary_key, plaintext, bigdl_data_keys
    )
    v1_data_key = None
    if bigdl_data_key is not None:
        v1_data_key = read_input(bigdl_data_key).decode("ascii", "replace").strip()
    source = BigDLSource(keys, v1_data_key, unsafe_unauthenticated_input)
    if check_only:
        _check(src, source)
        return
    if dst is None:
        raise UsageError("give the output DST (or --check-only)")
    if key is None:
        raise UsageError("give --key (or set CIPHERSPARK_KEY): the primary key for the output")
    with (
        open_service(kms, kms_ca, credentials(app_id, api_key)) as service,
        progress("migrating", 2 * _total(src)) as advance,
    ):
        result = migrate_bigdl(
            src,
            dst,
            service,
            key,
            source,
            segment_size=segment_size,
            overwrite=overwrite,
            progress=advance,
        )
    _out.print(
        f"migrated {result.files} BigDL file(s), {result.plaintext_bytes:,} bytes -> {dst} "
        f"(under key {key})"
    )
    if result.dataset is not None:
        ident = result.dataset
        _out.print(f"dataset {ident.dataset_id} (generation {ident.generation}) under key {key}")
    _report_unverified(result.unverified)
    _out.print(
        "the BigDL files' keys are weak (27 to 96 effective bits): delete the BigDL "
        "originals once the migrated data is checked"
    )


def _report_unverified(paths: tuple[Path, ...]) -> None:
    if paths:
        warn(
            f"{len(paths)} file(s) not fully authenticated (nativeaescbc: no MAC; "
            "AES_GCM_CTR_V1 Parquet: page data has no MAC): a modified file may migrate as "
            "garbage"
        )


def _check(src: Path, source: BigDLSource) -> None:
    from cipherspark.jobs.migrate import check_bigdl

    with progress("verifying", _total(src)) as advance:
        checks = check_bigdl(src, source, progress=advance)
    for check in checks:
        if check.problem is not None:
            _out.print(f"FAILED      {check.path}: {check.problem.removeprefix(f'{check.path}: ')}")
        elif check.verified:
            _out.print(f"verified    {check.path} ({check.layout}, {check.size:,} bytes)")
        else:
            what = "page data has no MAC" if "parquet" in str(check.layout) else "no MAC"
            _out.print(f"UNVERIFIED  {check.path} ({check.layout}: {what}, not verified)")
    failed = sum(1 for c in checks if c.problem is not None)
    if failed:
        raise IntegrityError(f"{failed} of {len(checks)} BigDL file(s) do not verify")
