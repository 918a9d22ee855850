"""``cipherspark dataset ...``: verify, register and move encrypted datasets.

Readers accept an encrypted CSV dataset only as the commit the KMS's dataset registry names at
its location; these commands are for datasets copied, restored or moved by other tools
(:mod:`cipherspark.datasets`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cipherspark.cli import _help
from cipherspark.cli._io import out as _out
from cipherspark.cli._options import ApiKeyFileOpt, ApiKeyOpt, AppIdOpt, KmsCaOpt, KmsOpt
from cipherspark.cli._services import credentials, open_service

if TYPE_CHECKING:
    from cipherspark.kms.registry import DatasetRecord

__all__ = ["app", "dataset_cp", "dataset_mv", "dataset_register", "dataset_verify"]

app = _help.Typer(
    help="Verify, register, copy and move encrypted datasets (the KMS's dataset registry).",
    epilog=_help.examples(
        "cipherspark dataset verify people.csv.cspk",
        "cipherspark dataset register restored/people.csv.cspk",
        "cipherspark dataset cp people.csv.cspk backup/people.csv.cspk",
        "cipherspark dataset mv people.csv.cspk archive/people.csv.cspk",
    ),
    no_args_is_help=True,
)

PathArg = Annotated[Path, typer.Argument(help="Encrypted file, or dataset folder.")]


def _describe(record: DatasetRecord) -> str:
    return f"dataset {record.dataset_id} generation {record.generation} under key {record.key_id}"


@app.command(
    "verify",
    epilog=_help.examples(
        "cipherspark dataset verify people.csv.cspk",
        "cipherspark dataset verify developers.cspk --kms https://kms.example:8443",
    ),
)
def dataset_verify(
    path: PathArg,
    kms: KmsOpt = None,
    kms_ca: KmsCaOpt = None,
    app_id: AppIdOpt = None,
    api_key: ApiKeyOpt = None,
    api_key_file: ApiKeyFileOpt = None,
) -> None:
    """Check a dataset as every reader will: its manifest and parts, and that it is the
    dataset registered at its location. Exit 0 only if readers will accept it."""
    from cipherspark.datasets import verify_dataset

    with open_service(kms, kms_ca, credentials(app_id, api_key)) as service:
        record = verify_dataset(path, service)
    _out.print(f"{path}: {_describe(record)}, the one registered at {record.location}")


@app.command(
    "register", epilog=_help.examples("cipherspark dataset register restored/people.csv.cspk")
)
def dataset_register(
    path: PathArg,
    kms: KmsOpt = None,
    kms_ca: KmsCaOpt = None,
    app_id: AppIdOpt = None,
    api_key: ApiKeyOpt = None,
    api_key_file: ApiKeyFileOpt = None,
) -> None:
    """Make the dataset now at PATH the one readers accept there (after copying or restoring
    it with other tools). It is checked first; an older generation of the dataset registered
    there is refused (a rollback)."""
    from cipherspark.datasets import register_dataset

    with open_service(kms, kms_ca, credentials(app_id, api_key)) as service:
        result = register_dataset(path, service)
    if not result.changed:
        _out.print(f"{path}: {_describe(result.record)}, registered already")
        return
    replaced = "" if result.replaced is None else f" (replacing {_describe(result.replaced)})"
    _out.print(f"registered {_describe(result.record)} at {result.record.location}{replaced}")


@app.command(
    "mv",
    epilog=_help.examples(
        "cipherspark dataset mv people.csv.cspk archive/people.csv.cspk",
        "cipherspark dataset mv people.csv.cspk archive/people.csv.cspk --registry-only",
    ),
)
def dataset_mv(
    src: Annotated[Path, typer.Argument(help="The registered dataset (file or folder).")],
    dst: Annotated[Path, typer.Argument(help="Where it goes (must not exist).")],
    registry_only: Annotated[
        bool,
        typer.Option(
            "--registry-only",
            help="The dataset is at DST already (moved by other tools): move only its record.",
        ),
    ] = False,
    kms: KmsOpt = None,
    kms_ca: KmsCaOpt = None,
    app_id: AppIdOpt = None,
    api_key: ApiKeyOpt = None,
    api_key_file: ApiKeyFileOpt = None,
) -> None:
    """Rename a dataset and move its registry record with it (readers accept it only where it
    is registered)."""
    from cipherspark.datasets import move_dataset

    with open_service(kms, kms_ca, credentials(app_id, api_key)) as service:
        record = move_dataset(src, dst, service, registry_only=registry_only)
    _out.print(f"moved {_describe(record)} to {record.location}")


@app.command(
    "cp", epilog=_help.examples("cipherspark dataset cp people.csv.cspk backup/people.csv.cspk")
)
def dataset_cp(
    src: Annotated[Path, typer.Argument(help="The registered dataset (file or folder).")],
    dst: Annotated[Path, typer.Argument(help="Where the copy goes (must not exist).")],
    kms: KmsOpt = None,
    kms_ca: KmsCaOpt = None,
    app_id: AppIdOpt = None,
    api_key: ApiKeyOpt = None,
    api_key_file: ApiKeyFileOpt = None,
) -> None:
    """Copy a dataset and register the copy where it lands (a copy made with cp or a storage
    tool is refused by readers until it is registered)."""
    from cipherspark.datasets import copy_dataset

    with open_service(kms, kms_ca, credentials(app_id, api_key)) as service:
        record = copy_dataset(src, dst, service)
    _out.print(f"copied {_describe(record)} to {record.location}")
