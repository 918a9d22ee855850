"""The options several commands share, each defined once: one flag, one meaning, one default.

Every option that names a place or a credential defaults from a ``CIPHERSPARK_*`` environment
variable. With ``Annotated`` options Typer takes the default from the parameter, not from the
option, so each shared default is a constant here and commands write ``= DEFAULT_...``.

The KMS and Spark options show in their own help panels, the way sigstore-python groups its
shared arguments: a reader sees at a glance which options connect to what.

Secrets come from the environment or from files, not from flags: a flag's value shows in
``ps`` and in the shell's history. ``--api-key`` and ``--admin-token`` still work, with a
one-line deprecation warning on stderr; ``--api-key-file`` / ``--admin-token-file`` read the
value from a file (surrounding whitespace, such as the trailing newline, stripped). A command
that takes the file option declares it next to the secret option and uses only the secret's
parameter: the file option's callback (eager, so it runs first) reads the file, and the secret
option's callback returns its content. A file given on the command line wins over the
environment variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cipherspark import settings
from cipherspark.cli._io import warn
from cipherspark.errors import InputError, UsageError

__all__ = [
    "DEFAULT_CLUSTER_DIR",
    "DEFAULT_MASTER",
    "DEFAULT_SEGMENT_SIZE",
    "AdminTokenFileOpt",
    "AdminTokenOpt",
    "ApiKeyFileOpt",
    "ApiKeyOpt",
    "AppIdOpt",
    "ClusterDirOpt",
    "ColumnKeyOpt",
    "DataDirOpt",
    "JsonOpt",
    "KeyOpt",
    "KmsCaOpt",
    "KmsOpt",
    "MasterOpt",
    "OutputFolderOpt",
    "OverwriteOpt",
    "ParquetKeyOpt",
    "PccsCaOpt",
    "PccsUrlOpt",
    "SchemaOpt",
    "SeedOpt",
    "SegmentSizeOpt",
    "SimulatedKeyOpt",
    "SparkPropertiesOpt",
    "TableOpt",
    "UnsafePlaintextOutputOpt",
    "UnsafePlaintextParquetInputOpt",
    "UnsafePlaintextParquetOpt",
    "UnsafeSkipRegistryOpt",
]

_KMS_PANEL = "KMS"
_SPARK_PANEL = "Spark"
_PARQUET_PANEL = "Parquet"

DEFAULT_MASTER = "local[*]"
DEFAULT_CLUSTER_DIR = Path(".cipherspark/cluster")

# -- secrets: from the environment or a file --------------------------------------------------


def _meta_key(secret: str) -> str:
    return f"cipherspark.secret-file.{secret}"


def _read_secret_file(ctx: typer.Context, param: typer.CallbackParam, value: Path | None) -> None:
    """``--SECRET-file``: read the file now, for the ``--SECRET`` option's callback."""
    if value is None or ctx.resilient_parsing:
        return
    try:
        text = value.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
        raise InputError(f"{param.opts[0]}: cannot read {value}: {reason}") from exc
    # Surrounding whitespace (`echo KEY > file` adds a newline) is not the secret's, as for the
    # CIPHERSPARK_*_FILE files Spark's workers read (settings.worker_credentials).
    secret = text.strip()
    if not secret:
        raise InputError(f"{param.opts[0]}: {value} is empty")
    ctx.meta[_meta_key(str(param.name).removesuffix("_file"))] = secret


def _secret_option(ctx: typer.Context, param: typer.CallbackParam, value: str | None) -> str | None:
    """``--SECRET``: the value of ``--SECRET-file`` if given; a warning if given as a flag."""
    flag, envvar = param.opts[0], param.envvar
    source = ctx.get_parameter_source(str(param.name))
    on_command_line = source is not None and source.name == "COMMANDLINE"
    from_file = ctx.meta.get(_meta_key(str(param.name)))
    if from_file is not None:
        if on_command_line:
            raise UsageError(f"give {flag} or {flag}-file, not both")
        return str(from_file)
    if on_command_line and value is not None and not ctx.resilient_parsing:
        warn(
            f"{flag} is deprecated: its value shows in ps and in the shell's history; "
            f"set {envvar} or use {flag}-file FILE"
        )
    return value


# -- the KMS a command talks to ---------------------------------------------------------------

# None means the embedded keystore .cipherspark/kms (cipherspark.kms.open_kms decides that).
KmsOpt = Annotated[
    str | None,
    typer.Option(
        "--kms",
        metavar="URL",
        envvar=settings.ENV_KMS,
        show_envvar=True,
        rich_help_panel=_KMS_PANEL,
        help="KMS URL: https://HOST:PORT for a KMS server, or file://DIR for the embedded keystore "
        "(default: .cipherspark/kms).",
    ),
]
KmsCaOpt = Annotated[
    Path | None,
    typer.Option(
        "--kms-ca",
        envvar=settings.ENV_KMS_CA,
        show_envvar=True,
        rich_help_panel=_KMS_PANEL,
        help="CA (or self-signed certificate) the KMS server's TLS certificate must chain to "
        "(https:// KMS URLs; default: the system CAs).",
    ),
]
AppIdOpt = Annotated[
    str | None,
    typer.Option(
        "--app-id",
        envvar=settings.ENV_APP_ID,
        show_envvar=True,
        rich_help_panel=_KMS_PANEL,
        help="APP ID of your application at the KMS.",
    ),
]
ApiKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar=settings.ENV_API_KEY,
        show_envvar=True,
        rich_help_panel=_KMS_PANEL,
        callback=_secret_option,
        help="API KEY of your application. Deprecated as a flag (its value shows in ps): set "
        "the environment variable or use --api-key-file.",
    ),
]
ApiKeyFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--api-key-file",
        rich_help_panel=_KMS_PANEL,
        callback=_read_secret_file,
        is_eager=True,
        help="File holding the API KEY (surrounding whitespace is ignored).",
    ),
]
AdminTokenOpt = Annotated[
    str | None,
    typer.Option(
        "--admin-token",
        envvar=settings.ENV_KMS_ADMIN_TOKEN,
        show_envvar=True,
        rich_help_panel=_KMS_PANEL,
        callback=_secret_option,
        help="The admin token 'kms init' printed. Deprecated as a flag (its value shows in "
        "ps): set the environment variable or use --admin-token-file.",
    ),
]
AdminTokenFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--admin-token-file",
        rich_help_panel=_KMS_PANEL,
        callback=_read_secret_file,
        is_eager=True,
        help="File holding the admin token (surrounding whitespace is ignored).",
    ),
]
KeyOpt = Annotated[
    str,
    typer.Option(
        "--key",
        metavar="NAME",
        envvar=settings.ENV_KEY,
        show_envvar=True,
        help="Name of the primary key that wraps the data key.",
    ),
]

# -- the Spark a job runs on ------------------------------------------------------------------

MasterOpt = Annotated[
    str,
    typer.Option(
        "--master",
        metavar="URL",
        envvar=settings.ENV_MASTER,
        show_envvar=True,
        rich_help_panel=_SPARK_PANEL,
        help="Spark master URL (local[*], spark://HOST:PORT, k8s://https://HOST:PORT).",
    ),
]
SparkPropertiesOpt = Annotated[
    Path | None,
    typer.Option(
        "--spark-properties",
        envvar=settings.ENV_SPARK_PROPERTIES,
        show_envvar=True,
        rich_help_panel=_SPARK_PANEL,
        help="Spark properties file of a standalone cluster (holds its secret; printed by "
        "'cipherspark cluster start').",
    ),
]
ClusterDirOpt = Annotated[
    Path,
    typer.Option(
        "--dir",
        envvar=settings.ENV_CLUSTER_DIR,
        show_envvar=True,
        help="Folder for the cluster's conf (with its secret), logs and work dirs.",
    ),
]

# -- outputs and data -------------------------------------------------------------------------

OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace the output if it exists.")]
OutputFolderOpt = Annotated[
    Path, typer.Option("--output", "-o", help="Folder for the encrypted result.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for machines.")]
SeedOpt = Annotated[
    int | None,
    typer.Option(
        "--seed",
        help="Random seed for the data: same seed, same bytes (default: a fresh one each run).",
    ),
]
DataDirOpt = Annotated[
    Path,
    typer.Option(
        "--data",
        envvar=settings.ENV_KMS_DATA,
        show_envvar=True,
        help="The KMS server's data directory (root key, database, audit log, TLS files).",
    ),
]

TableOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--table",
        "-t",
        metavar="NAME=PATH",
        help="NAME=PATH: an encrypted table (CSV, JSON Lines, text or Parquet: told from the "
        "data) as a view; repeatable.",
    ),
]

SchemaOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--schema",
        metavar="NAME=DDL",
        help="NAME=DDL: the column types of CSV or JSON table NAME, all its columns in order, "
        "e.g. 'people=name string, age int, pay decimal(10,2), joined date' (default: "
        "inferred); repeatable.",
    ),
]

# -- Parquet an application writes -------------------------------------------------------------

ParquetKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--key",
        metavar="NAME",
        envvar=settings.ENV_KEY,
        show_envvar=True,
        rich_help_panel=_PARQUET_PANEL,
        help="Primary key of the Parquet files the application writes (footer and every "
        "column not given another key). Required unless --unsafe-plaintext-parquet.",
    ),
]
ColumnKeyOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--column-key",
        metavar="KEY=COLUMNS",
        rich_help_panel=_PARQUET_PANEL,
        help="KEY=COLUMN[,COLUMN...]: these columns of every Parquet write under KEY "
        "(readers without it still read the others); repeatable.",
    ),
]
UnsafePlaintextParquetOpt = Annotated[
    bool,
    typer.Option(
        "--unsafe-plaintext-parquet",
        rich_help_panel=_PARQUET_PANEL,
        help="Write Parquet in plaintext (anyone who can read the files reads every value).",
    ),
]
UnsafePlaintextParquetInputOpt = Annotated[
    bool,
    typer.Option(
        "--unsafe-plaintext-parquet-input",
        rich_help_panel=_PARQUET_PANEL,
        help="Let the application read plaintext Parquet files (refused by default: a "
        "plaintext file in an encrypted table may have been put there by anyone who can write "
        "to the storage).",
    ),
]

#: 1 MiB, the container's ``DEFAULT_SEGMENT_SIZE`` (cipherspark.crypto.container; spelled here so
#: the CLI's help imports no crypto; tests/test_cli_layout.py checks they agree).
DEFAULT_SEGMENT_SIZE = 1 << 20
SegmentSizeOpt = Annotated[
    int,
    typer.Option(
        min=57,
        max=64 << 20,
        metavar="BYTES",
        help="Ciphertext segment size in bytes (splits align to it).",
    ),
]

UnsafeSkipRegistryOpt = Annotated[
    bool,
    typer.Option(
        "--unsafe-skip-registry",
        help="Read an encrypted CSV input even where the KMS's dataset registry does not name "
        "it as the dataset at its location (one copied, moved, replaced or rolled back).",
    ),
]

UnsafePlaintextOutputOpt = Annotated[
    bool,
    typer.Option(
        "--unsafe-plaintext-output",
        help="Let the application write CSV, JSON, ORC, text (Spark's own writers) and other "
        "plaintext sinks; refused otherwise (anyone who can read the files reads every value).",
    ),
]

# -- attestation ------------------------------------------------------------------------------

SimulatedKeyOpt = Annotated[
    Path | None,
    typer.Option(
        "--simulated-key",
        envvar=settings.ENV_SIMULATED_TEE_KEY,
        show_envvar=True,
        help="The simulated-platform key file "
        "(default: ~/.cipherspark/simulated-tee/platform.key).",
    ),
]
PccsUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--pccs-url",
        metavar="URL",
        envvar=settings.ENV_PCCS_URL,
        show_envvar=True,
        help="PCCS (https) to fetch DCAP collateral from, e.g. "
        "https://pccs.example:8081/sgx/certification/v4 (the KMS server caches it until each "
        "part's nextUpdate, re-fetched daily). Without it, SGX/TDX evidence must come with "
        "its collateral.",
    ),
]
PccsCaOpt = Annotated[
    Path | None,
    typer.Option(
        "--pccs-ca",
        envvar=settings.ENV_PCCS_CA,
        show_envvar=True,
        help="CA bundle the PCCS's TLS certificate must chain to (default: system roots).",
    ),
]
