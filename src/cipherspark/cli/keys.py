"""``cipherspark key ...``: primary keys and their release policies, at a server or a keystore.

A thin layer over the :class:`~cipherspark.kms.KeyManagementService` that ``--kms`` names: a
KMS server (https://) or the embedded keystore (file://), whose policies allow only the
simulated TEE.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Annotated
from urllib.parse import unquote, urlparse

import typer

from cipherspark.cli import _help
from cipherspark.cli._io import out as _out
from cipherspark.cli._io import read_input
from cipherspark.cli._options import ApiKeyFileOpt, ApiKeyOpt, AppIdOpt, KmsCaOpt, KmsOpt
from cipherspark.cli._services import credentials, open_service
from cipherspark.errors import KmsUnavailableError

__all__ = ["app", "key_create", "key_list", "policy_app", "policy_set", "policy_show"]

app = _help.Typer(
    help="Create and list primary keys in the KMS.",
    epilog=_help.examples(
        "cipherspark key create simple",
        "cipherspark key list",
        "cipherspark key policy show simple",
    ),
    no_args_is_help=True,
)
policy_app = _help.Typer(
    help="Set and show a primary key's release policy (server or keystore).",
    epilog=_help.examples(
        "cipherspark key policy show simple",
        "cipherspark key policy set simple policy.json",
    ),
    no_args_is_help=True,
)
app.add_typer(policy_app, name="policy")


def _new_keystore(kms: str | None) -> Path | None:
    """The folder of the embedded keystore ``--kms`` names if none exists there yet.

    ``None`` for a KMS server, or a keystore that exists. (``open_kms`` reads the URL the same
    way; a URL it refuses is refused there, with its message.)
    """
    from cipherspark.kms import DEFAULT_KMS_DIR

    if kms is None:
        folder = DEFAULT_KMS_DIR
    else:
        parsed = urlparse(kms)
        if parsed.scheme not in ("", "file") or parsed.netloc not in ("", "localhost"):
            return None
        folder = Path(unquote(parsed.path) if parsed.scheme == "file" else kms)
    return None if (folder / "keystore.json").exists() else folder.absolute()


@app.command(
    "create",
    epilog=_help.examples(
        "cipherspark key create simple",
        "cipherspark key create simple --kms https://kms.example:8443 --kms-ca ca.pem",
    ),
)
def key_create(
    name: Annotated[str, typer.Argument(help="Key name (letters, digits, . _ -).")],
    kms: KmsOpt = None,
    kms_ca: KmsCaOpt = None,
    app_id: AppIdOpt = None,
    api_key: ApiKeyOpt = None,
    api_key_file: ApiKeyFileOpt = None,
) -> None:
    """Create a 256-bit primary key (and the local keystore, if it does not exist).

    A new keystore without an API KEY given gets generated credentials, printed once.
    """
    from cipherspark.kms import validate_key_name
    from cipherspark.kms.local import generate_api_key

    validate_key_name(name)
    generated = not api_key and _new_keystore(kms) is not None
    if generated:
        # Nothing to remember is better than a weak key: 256 random bits, shown only now.
        app_id = app_id or f"local-{secrets.token_hex(4)}"
        api_key = generate_api_key()
    with open_service(kms, kms_ca, credentials(app_id, api_key), create=True) as service:
        if generated:
            # Printed before the key is made: if that fails, the keystore still opens with them.
            _out.print(
                f"created a keystore at {service.url} with new credentials, shown only now "
                "(it opens with nothing else; keep them like a password):"
            )
            _out.print(f"  export CIPHERSPARK_APP_ID={app_id}")
            _out.print(f"  export CIPHERSPARK_API_KEY={api_key}")
        info = service.create_key(name)
        _out.print(f"created primary key {info.name!r} (version {info.version}) in {service.url}")
        try:
            policy = service.get_policy(info.name)
        except KmsUnavailableError:
            # A backend without release policies; the key exists, and the note is only a note.
            policy = None
    # The embedded keystore gives new keys a policy that allows the simulated TEE: say so.
    if policy is not None and "simulated" in policy.tee_types:
        _out.print(
            "its release policy allows the simulated TEE (development only: it "
            "protects nothing; see 'cipherspark key policy show')"
        )


@app.command(
    "list",
    epilog=_help.examples(
        "cipherspark key list",
        "cipherspark key list --kms file://$HOME/keystore",
    ),
)
def key_list(
    kms: KmsOpt = None,
    kms_ca: KmsCaOpt = None,
    app_id: AppIdOpt = None,
    api_key: ApiKeyOpt = None,
    api_key_file: ApiKeyFileOpt = None,
) -> None:
    """List the primary keys your credentials can use."""
    with open_service(kms, kms_ca, credentials(app_id, api_key)) as service:
        keys = service.list_keys()
        url = service.url
    if not keys:
        _out.print(f"no keys in {url}")
    for info in keys:
        _out.print(f"{info.name}\tversion {info.version}\tcreated {info.created}")


@policy_app.command(
    "set",
    epilog=_help.examples(
        "cipherspark key policy set simple policy.json",
        "cipherspark key policy set simple policy.json --kms https://kms.example:8443",
    ),
)
def policy_set(
    name: Annotated[str, typer.Argument(help="Primary key name.")],
    file: Annotated[Path, typer.Argument(help="Policy JSON (see docs/attestation.md).")],
    kms: KmsOpt = None,
    kms_ca: KmsCaOpt = None,
    app_id: AppIdOpt = None,
    api_key: ApiKeyOpt = None,
    api_key_file: ApiKeyFileOpt = None,
) -> None:
    """Set NAME's release policy from FILE; prints the stored (normalised) policy."""
    from cipherspark.attestation import AttestationPolicy

    rules = AttestationPolicy.from_json(read_input(file))
    with open_service(kms, kms_ca, credentials(app_id, api_key)) as service:
        stored = service.set_policy(name, rules)
    _out.print(json.dumps(stored.to_dict(), indent=2, sort_keys=True))
    if stored.empty:
        _out.print("note: this policy is empty and denies every attested unwrap")


@policy_app.command("show", epilog=_help.examples("cipherspark key policy show simple"))
def policy_show(
    name: Annotated[str, typer.Argument(help="Primary key name.")],
    kms: KmsOpt = None,
    kms_ca: KmsCaOpt = None,
    app_id: AppIdOpt = None,
    api_key: ApiKeyOpt = None,
    api_key_file: ApiKeyFileOpt = None,
) -> None:
    """Print NAME's release policy (null: none, every attested unwrap is denied)."""
    with open_service(kms, kms_ca, credentials(app_id, api_key)) as service:
        stored = service.get_policy(name)
    _out.print(json.dumps(None if stored is None else stored.to_dict(), indent=2, sort_keys=True))
