"""``cipherspark kms ...``: run and administer the KMS server (a thin layer over the library).

The admin commands (``app``, ``credential``, ``admin-token``, ``simulated-platform``) reach the
server named by the shared ``--kms`` / ``--kms-ca`` options with the operator's
``--admin-token``; the others work on the server's data directory (``--data``).
"""

from __future__ import annotations

import dataclasses
import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from cipherspark.cli import _help
from cipherspark.cli._io import out as _out
from cipherspark.cli._options import (
    AdminTokenFileOpt,
    AdminTokenOpt,
    DataDirOpt,
    JsonOpt,
    KmsCaOpt,
    KmsOpt,
    PccsCaOpt,
    PccsUrlOpt,
)
from cipherspark.cli._services import open_admin
from cipherspark.errors import InputError, KmsUnavailableError, OutputExistsError, UsageError

__all__ = ["admin_token_app", "app", "app_app", "audit_app", "credential_app", "platform_app"]

# The admin commands' examples take the server from CIPHERSPARK_KMS (and its CA from
# CIPHERSPARK_KMS_CA), as the README's KMS-server block exports them: lines short enough to copy.
app = _help.Typer(
    help="Run and administer the cipherspark KMS server.",
    epilog=_help.examples(
        "cipherspark kms init --data kms-data --save-admin-token kms-admin.token",
        "cipherspark kms serve --data kms-data",
        "cipherspark kms wait --kms https://127.0.0.1:8443 --kms-ca kms-data/tls/cert.pem",
    ),
    no_args_is_help=True,
)
app_app = _help.Typer(
    help="Register applications at the KMS server (--kms https://HOST:PORT).",
    epilog=_help.examples(
        "cipherspark kms app create my-app --admin-token-file kms-admin.token",
        'cipherspark kms app disable "$CIPHERSPARK_APP_ID" --admin-token-file kms-admin.token',
    ),
    no_args_is_help=True,
)
audit_app = _help.Typer(
    help="Check the KMS server's audit log.",
    epilog=_help.examples("cipherspark kms audit verify --data kms-data"),
    no_args_is_help=True,
)
platform_app = _help.Typer(
    help="Register the simulated TEE platforms the KMS server (--kms https://HOST:PORT) trusts "
    "(operator, admin token). Development only: simulated evidence protects nothing.",
    epilog=_help.examples(
        "cipherspark kms simulated-platform add PLATFORM_KEY --admin-token-file kms-admin.token",
        "cipherspark kms simulated-platform list --admin-token-file kms-admin.token",
    ),
    no_args_is_help=True,
)
credential_app = _help.Typer(
    help="Mint, list and revoke an application's credentials at the KMS server (admin token): "
    "owner credentials manage keys, workload credentials are for clusters.",
    epilog=_help.examples(
        'cipherspark kms credential create --app "$CIPHERSPARK_APP_ID" --label cluster-1 \\',
        "    --admin-token-file kms-admin.token",
        'cipherspark kms credential list --app "$CIPHERSPARK_APP_ID" \\',
        "    --admin-token-file kms-admin.token",
    ),
    no_args_is_help=True,
)
admin_token_app = _help.Typer(
    help="The KMS server's admin token.",
    epilog=_help.examples("cipherspark kms admin-token rotate --admin-token-file kms-admin.token"),
    no_args_is_help=True,
)
app.add_typer(app_app, name="app")
app.add_typer(credential_app, name="credential")
app.add_typer(admin_token_app, name="admin-token")
app.add_typer(audit_app, name="audit")
app.add_typer(platform_app, name="simulated-platform")


@app.command(
    "init",
    epilog=_help.examples(
        "cipherspark kms init --data kms-data --save-admin-token kms-admin.token",
        "cipherspark kms init --data kms-data --json",
    ),
)
def init(
    data: DataDirOpt,
    as_json: JsonOpt = False,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--save-admin-token",
            help="Write the admin token into this new file (0600) instead of printing it; "
            "the admin commands read it back with --admin-token-file.",
        ),
    ] = None,
) -> None:
    """Create the data directory: root key (0600), database and admin token (printed once)."""
    from cipherspark._atomic import create_file
    from cipherspark.kms.server import init_data_dir

    if token_file is not None and (token_file.exists() or token_file.is_symlink()):
        # Checked before anything is created: a failed init leaves no half-made directory.
        raise OutputExistsError(f"{token_file} exists; the admin token goes into a new file")
    result = init_data_dir(data)
    if token_file is not None:
        try:
            create_file(token_file, f"{result.admin_token}\n".encode(), replace=False)
        except FileExistsError as exc:
            raise OutputExistsError(f"{token_file} appeared while initialising") from exc
        except OSError as exc:
            raise InputError(f"cannot write {token_file}: {exc.strerror}") from exc
        _out.print(f"initialised the KMS data directory {result.data_dir}")
        _out.print(f"the admin token is in {token_file} (0600); keep it safe")
        return
    if as_json:
        _out.print(
            json.dumps({"data_dir": str(result.data_dir), "admin_token": result.admin_token})
        )
        return
    _out.print(f"initialised the KMS data directory {result.data_dir}")
    _out.print(f"ADMIN TOKEN: {result.admin_token}")
    _out.print("Store the admin token now: it is shown only once (the server keeps a hash).")


@app.command(
    "wait",
    epilog=_help.examples(
        "cipherspark kms wait --kms https://127.0.0.1:8443 --kms-ca kms-data/tls/cert.pem",
        "cipherspark kms wait --timeout 60",
    ),
)
def wait(
    kms: KmsOpt = None,
    kms_ca: KmsCaOpt = None,
    timeout: Annotated[
        float, typer.Option(min=0.0, help="Seconds to wait at most.", show_default=True)
    ] = 30.0,
) -> None:
    """Wait until the KMS server answers (after 'kms serve ... &'), at most --timeout seconds."""
    from cipherspark.kms.server.launch import wait_for_server

    if kms is None:
        raise UsageError("kms wait needs the KMS server's URL: pass --kms or set CIPHERSPARK_KMS")
    wait_for_server(kms, kms_ca, timeout=timeout)
    _out.print(f"the KMS server at {kms} answers")


@app.command(
    "serve",
    epilog=_help.examples(
        "cipherspark kms serve --data kms-data",
        "cipherspark kms serve --data kms-data --host 0.0.0.0 --port 443 \\",
        "    --tls-cert kms.example.pem --tls-key kms.example.key",
    ),
)
def serve(
    data: DataDirOpt,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = 8443,
    tls_cert: Annotated[
        Path | None,
        typer.Option(help="PEM certificate (chain); default: a self-signed one in DATA/tls/."),
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option(help="PEM private key of --tls-cert; default: the self-signed one's."),
    ] = None,
    unsafe_plaintext: Annotated[
        bool,
        typer.Option(
            "--unsafe-plaintext",
            help="Serve plain HTTP: API keys and data keys travel in the clear. Tests only.",
        ),
    ] = False,
    pccs_url: PccsUrlOpt = None,
    pccs_ca: PccsCaOpt = None,
    api_docs: Annotated[
        bool,
        typer.Option(
            "--api-docs",
            help="Serve the interactive API documentation (/docs, /redoc, /openapi.json) to "
            "anyone who can connect. Off by default.",
        ),
    ] = False,
) -> None:
    """Serve the KMS API (TLS) until interrupted."""
    from cipherspark.kms.server import plan_server, run_server

    _require_server_extra()
    plan = plan_server(
        data,
        host=host,
        port=port,
        tls_cert=tls_cert,
        tls_key=tls_key,
        unsafe_plaintext=unsafe_plaintext,
        pccs_url=pccs_url,
        pccs_ca=pccs_ca,
        api_docs=api_docs,
    )
    if plan.cert_file is None:
        _out.print(
            "WARNING: serving plain HTTP (--unsafe-plaintext): credentials and data keys "
            "are readable on the network"
        )
    else:
        made = " (self-signed, just created)" if plan.created_certificate else ""
        _out.print(f"TLS certificate {plan.cert_file}{made}")
        _out.print(f"SHA-256 fingerprint: {plan.fingerprint}")
        _out.print(f"clients pin it with --kms-ca {plan.cert_file}")
    if plan.pccs is not None:
        _out.print(f"DCAP collateral from the PCCS {plan.pccs.url}")
    if plan.api_docs:
        _out.print(f"API documentation at {plan.url}/docs (--api-docs: open to anyone)")
    _out.print(f"serving the KMS at {plan.url}")
    run_server(plan)


#: The packages of the 'server' extra that ``kms serve`` imports (the other kms commands,
#: and every other command, work without them: executor and enclave images leave them out).
_SERVER_PACKAGES = ("fastapi", "starlette", "uvicorn")


def _require_server_extra() -> None:
    """One clear line, before anything is planned or created, if the extra is not installed."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in _SERVER_PACKAGES:
            raise
        raise KmsUnavailableError(
            "the KMS server needs the 'server' extra: pip install 'cipherspark[server]'"
        ) from exc


@app_app.command(
    "create",
    epilog=_help.examples(
        "cipherspark kms app create my-app --admin-token-file kms-admin.token",
        'eval "$(cipherspark kms app create my-app --admin-token-file kms-admin.token --env)"',
    ),
)
def app_create(
    name: Annotated[str, typer.Argument(help="A name for the application (free text).")],
    kms: KmsOpt = None,
    kms_ca: KmsCaOpt = None,
    admin_token: AdminTokenOpt = None,
    admin_token_file: AdminTokenFileOpt = None,
    as_json: JsonOpt = False,
    as_env: Annotated[
        bool,
        typer.Option(
            "--env",
            help="Print only the shell lines that export CIPHERSPARK_APP_ID and "
            "CIPHERSPARK_API_KEY, for eval.",
        ),
    ] = False,
) -> None:
    """Register an application; prints its APP ID and owner API KEY (shown only once)."""
    if as_json and as_env:
        raise UsageError("--json and --env are two ways of printing: give one")
    with open_admin(kms, kms_ca, admin_token) as admin:
        new = admin.create_app(name)
    # The one place an API key is shown: to the operator who just created it, once (the server
    # keeps only its salted hash). It is never logged.
    if as_env:
        import shlex

        typer.echo(f"export CIPHERSPARK_APP_ID={shlex.quote(new.app_id)}")
        typer.echo(f"export CIPHERSPARK_API_KEY={shlex.quote(new.api_key)}")
        return
    if as_json:
        _out.print(
            json.dumps(
                {
                    "app_id": new.app_id,
                    "api_key": new.api_key,
                    "credential_id": new.credential_id,
                    "vault_token": new.vault_token,
                }
            )
        )
        return
    _out.print(f"APP ID: {new.app_id}")
    _out.print(f"API KEY: {new.api_key}")
    _out.print(f"VAULT TOKEN: {new.vault_token}")
    _out.print(f"CREDENTIAL ID: {new.credential_id} (role owner)")
    _out.print("The API KEY is shown only once; set CIPHERSPARK_APP_ID and CIPHERSPARK_API_KEY.")
    _out.print(
        "It is the owner credential: give clusters workload credentials "
        "('cipherspark kms credential create --app APP_ID --role workload')."
    )


_AppIdArg = Annotated[str, typer.Argument(metavar="APP_ID", help="The application's APP ID.")]
_AppIdOpt = Annotated[
    str, typer.Option("--app", metavar="APP_ID", help="The application's APP ID.")
]


@app_app.command(
    "disable",
    epilog=_help.examples(
        'cipherspark kms app disable "$CIPHERSPARK_APP_ID" --admin-token-file kms-admin.token'
    ),
)
def app_disable(
    app_id: _AppIdArg,
    kms: KmsOpt = None,
    kms_ca: KmsCaOpt = None,
    admin_token: AdminTokenOpt = None,
    admin_token_file: AdminTokenFileOpt = None,
) -> None:
    """Disable an application: every credential of it is refused from its next request on."""
    with open_admin(kms, kms_ca, admin_token) as admin:
        info = admin.set_app_enabled(app_id, False)
    _out.print(f"disabled the app {info.app_id} ({info.name}): its credentials are refused")


@app_app.command(
    "enable",
    epilog=_help.examples(
        'cipherspark kms app enable "$CIPHERSPARK_APP_ID" --admin-token-file kms-admin.token'
    ),
)
def app_enable(
    app_id: _AppIdArg,
    kms: KmsOpt = None,
    kms_ca: KmsCaOpt = None,
    admin_token: AdminTokenOpt = None,
    admin_token_file: AdminTokenFileOpt = None,
) -> None:
    """Enable a disabled application again (revoked credentials stay revoked)."""
    with open_admin(kms, kms_ca, admin_token) as admin:
        info = admin.set_app_enabled(app_id, True)
    _out.print(f"enabled the app {info.app_id} ({info.name})")


class _Role(StrEnum):
    workload = "workload"
    owner = "owner"


@credential_app.command(
    "create",
    epilog=_help.examples(
        'cipherspark kms credential create --app "$CIPHERSPARK_APP_ID" --label cluster-1 \\',
        "    --admin-token-file kms-admin.token",
        'cipherspark kms credential create --app "$CIPHERSPARK_APP_ID" --role owner --json \\',
        "    --admin-token-file kms-admin.token",
    ),
)
def credential_create(
    app_id: _AppIdOpt,
    role: Annotated[
        _Role,
        typer.Option(
            "--role",
            help="workload: for a cluster (wrapped data keys, attested release; plain unwrap "
            "only of keys without a release policy). owner: manages the app's keys.",
        ),
    ] = _Role.workload,
    label: Annotated[
        str, typer.Option("--label", help="Whose it is, e.g. the cluster (up to 128 characters).")
    ] = "",
    kms: KmsOpt = None,
    kms_ca: KmsCaOpt = None,
    admin_token: AdminTokenOpt = None,
    admin_token_file: AdminTokenFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Mint a credential of an application; prints its API KEY (shown only once)."""
    with open_admin(kms, kms_ca, admin_token) as admin:
        new = admin.create_credential(app_id, role.value, label)
    if as_json:
        _out.print(
            json.dumps(
                {
                    "app_id": new.app_id,
                    "api_key": new.api_key,
                    "credential_id": new.credential_id,
                    "vault_token": new.vault_token,
                    "role": new.role,
                    "label": new.label,
                }
            )
        )
        return
    _out.print(f"APP ID: {new.app_id}")
    _out.print(f"API KEY: {new.api_key}")
    _out.print(f"VAULT TOKEN: {new.vault_token}")
    _out.print(f"CREDENTIAL ID: {new.credential_id} (role {new.role})")
    _out.print(
        "The API KEY is shown only once; revoke it with 'cipherspark kms credential revoke "
        f"--app {new.app_id} {new.credential_id}'."
    )


@credential_app.command(
    "list",
    epilog=_help.examples(
        'cipherspark kms credential list --app "$CIPHERSPARK_APP_ID" \\',
        "    --admin-token-file kms-admin.token",
    ),
)
def credential_list(
    app_id: _AppIdOpt,
    kms: KmsOpt = None,
    kms_ca: KmsCaOpt = None,
    admin_token: AdminTokenOpt = None,
    admin_token_file: AdminTokenFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List an application's credentials (revoked ones too), oldest first; never API keys."""
    with open_admin(kms, kms_ca, admin_token) as admin:
        found = admin.credentials(app_id)
    if as_json:
        _out.print(json.dumps([dataclasses.asdict(c) for c in found]))
        return
    for c in found:
        state = f"revoked {c.revoked}" if c.revoked else "active"
        _out.print(f"{c.credential_id}  {c.role:<8}  {c.created}  {state}  {c.label}".rstrip())


@credential_app.command(
    "revoke",
    epilog=_help.examples(
        'cipherspark kms credential revoke CREDENTIAL_ID --app "$CIPHERSPARK_APP_ID" \\',
        "    --admin-token-file kms-admin.token",
    ),
)
def credential_revoke(
    credential_id: Annotated[
        str, typer.Argument(metavar="CREDENTIAL_ID", help="What 'credential list' shows.")
    ],
    app_id: _AppIdOpt,
    kms: KmsOpt = None,
    kms_ca: KmsCaOpt = None,
    admin_token: AdminTokenOpt = None,
    admin_token_file: AdminTokenFileOpt = None,
) -> None:
    """Revoke a credential: it is refused from its next request on."""
    with open_admin(kms, kms_ca, admin_token) as admin:
        revoked = admin.revoke_credential(app_id, credential_id)
    _out.print(
        f"revoked the {revoked.role} credential {revoked.credential_id} of {revoked.app_id} "
        f"(since {revoked.revoked})"
    )


@admin_token_app.command(
    "rotate",
    epilog=_help.examples(
        "cipherspark kms admin-token rotate --admin-token-file kms-admin.token",
        "cipherspark kms admin-token rotate --json",
    ),
)
def admin_token_rotate(
    kms: KmsOpt = None,
    kms_ca: KmsCaOpt = None,
    admin_token: AdminTokenOpt = None,
    admin_token_file: AdminTokenFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Replace the admin token: prints the new one (shown once); the old one stops working."""
    with open_admin(kms, kms_ca, admin_token) as admin:
        token = admin.rotate_admin_token()
    if as_json:
        _out.print(json.dumps({"admin_token": token}))
        return
    _out.print(f"ADMIN TOKEN: {token}")
    _out.print(
        "Store the new admin token now: it is shown only once, and the old one is refused "
        "from now on."
    )


_PlatformKeyArg = Annotated[
    str,
    typer.Argument(
        metavar="KEY",
        help="The simulated platform's public key: 64 hex digits, the 'platform_key' that "
        "'cipherspark attest platform-key' prints on the installation whose workers attest.",
    ),
]


@platform_app.command(
    "add",
    epilog=_help.examples(
        "cipherspark kms simulated-platform add PLATFORM_KEY --label laptop \\",
        "    --admin-token-file kms-admin.token",
    ),
)
def platform_add(
    key: _PlatformKeyArg,
    label: Annotated[
        str,
        typer.Option("--label", help="Whose platform this is (free text, up to 128 characters)."),
    ] = "",
    kms: KmsOpt = None,
    kms_ca: KmsCaOpt = None,
    admin_token: AdminTokenOpt = None,
    admin_token_file: AdminTokenFileOpt = None,
) -> None:
    """Trust a simulated platform: keys whose policy names 'simulated' and lists KEY release
    data keys to evidence it signs. Get KEY with 'cipherspark attest platform-key' on the
    worker's installation. Adding a registered KEY again only replaces its label."""
    with open_admin(kms, kms_ca, admin_token) as admin:
        platform = admin.register_simulated_platform(key, label)
    named = f" ({platform.label})" if platform.label else ""
    _out.print(
        f"simulated platform {platform.public_key}{named} is registered at {kms} "
        f"since {platform.created}"
    )
    _out.print(
        "Development only: anyone who can read that platform's key file can release "
        "the data keys of policies that list it."
    )


@platform_app.command(
    "list",
    epilog=_help.examples(
        "cipherspark kms simulated-platform list --admin-token-file kms-admin.token",
        "cipherspark kms simulated-platform list --json",
    ),
)
def platform_list(
    kms: KmsOpt = None,
    kms_ca: KmsCaOpt = None,
    admin_token: AdminTokenOpt = None,
    admin_token_file: AdminTokenFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the simulated platforms the KMS server trusts, oldest first."""
    with open_admin(kms, kms_ca, admin_token) as admin:
        platforms = admin.simulated_platforms()
    if as_json:
        _out.print(
            json.dumps(
                [
                    {"public_key": p.public_key, "label": p.label, "created": p.created}
                    for p in platforms
                ]
            )
        )
        return
    if not platforms:
        _out.print(f"no simulated platform is registered at {kms}")
        return
    for platform in platforms:
        _out.print(f"{platform.public_key}  {platform.created}  {platform.label}".rstrip())


@platform_app.command(
    "remove",
    epilog=_help.examples(
        "cipherspark kms simulated-platform remove PLATFORM_KEY --admin-token-file kms-admin.token"
    ),
)
def platform_remove(
    key: _PlatformKeyArg,
    kms: KmsOpt = None,
    kms_ca: KmsCaOpt = None,
    admin_token: AdminTokenOpt = None,
    admin_token_file: AdminTokenFileOpt = None,
) -> None:
    """Stop trusting a simulated platform: evidence it signs is denied from the next request."""
    with open_admin(kms, kms_ca, admin_token) as admin:
        platform = admin.remove_simulated_platform(key)
    named = f" ({platform.label})" if platform.label else ""
    _out.print(f"removed the simulated platform {platform.public_key}{named} from {kms}")


@audit_app.command("verify", epilog=_help.examples("cipherspark kms audit verify --data kms-data"))
def audit_verify(data: DataDirOpt) -> None:
    """Verify the audit log's HMAC chain (exit 1 naming the first bad line)."""
    from cipherspark.kms.server import verify_audit

    report = verify_audit(data)
    _out.print(f"audit log verified: {report.entries} entries")
    _out.print(
        f"last seq {report.last_seq}, mac {report.last_mac} "
        "(keep these elsewhere to detect truncation)"
    )


@app.command(
    "backup", epilog=_help.examples("cipherspark kms backup --data kms-data kms-backup.db")
)
def backup(
    data: DataDirOpt,
    out: Annotated[Path, typer.Argument(help="File to write the database copy to.")],
) -> None:
    """Write a consistent copy of the database (safe while serving; the root key is separate).

    The file is new (refused if it exists) and mode 0600 from the start; the backup is audited.
    """
    from cipherspark.kms.server import backup_data_dir

    report = backup_data_dir(data, out)
    _out.print(f"backed up the KMS database to {out}; back up {data}/root.key separately")
    _out.print(
        f"{report.digest}, store sealed at audit seq {report.audit_seq}, mac {report.audit_mac} "
        "(keep these off this machine: a whole-state rollback is only detected against them)"
    )


@app.command(
    "restore",
    epilog=_help.examples("cipherspark kms restore --data kms-data --from kms-backup.db"),
)
def restore(
    data: DataDirOpt,
    backup_file: Annotated[
        Path, typer.Option("--from", help="A database copy written by 'kms backup'.")
    ],
) -> None:
    """Replace the database with a backup (server stopped; the root key must match)."""
    from cipherspark.kms.server import restore_data_dir

    kept = restore_data_dir(data, backup_file)
    _out.print(f"restored the KMS database in {data} from {backup_file}")
    if kept is not None:
        _out.print(f"the database it replaced is kept as {kept}")
