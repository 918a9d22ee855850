"""BigDL's key configuration, as its users give it: ``ppml_args`` and ``spark.bigdl.*``.

BigDL's Python ``PPMLContext`` turns ``ppml_args`` into the Spark settings
``spark.bigdl.primaryKey.defaultKey.*``; its Scala side reads every
``spark.bigdl.primaryKey.NAME.*`` group of the conf into a named key. Here both end up as
:class:`BigDLKeyConfig` values, one per name, and never in Spark's conf (they are secrets, and
no worker needs them: BigDL input is verified and re-encrypted on the driver). The key material
file is read only when a BigDL file is first read, so a script that passes BigDL's default
arguments but reads only cipherspark data does not need one.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cipherspark.crypto._bigdl import BigDLKeys, ExportedDataKeys, PlaintextPrimaryKey, SimpleKms
from cipherspark.errors import InputError, UsageError

__all__ = [
    "DEFAULT_KEY_NAME",
    "BigDLKeyConfig",
    "KmsArgumentParser",
    "keys_from_conf",
    "keys_from_ppml_args",
]

#: The name BigDL's Python ``PPMLContext`` gives the key of its ``ppml_args``.
DEFAULT_KEY_NAME = "defaultKey"

SIMPLE_KMS = "SimpleKeyManagementService"
#: BigDL's services this package cannot call (no client here); their data keys can be exported.
_REMOTE_KMS = ("EHSMKeyManagementService", "AzureKeyManagementService", "BigDLKeyManagementService")
#: ``kms_type`` "" means the plaintext primary key (``primary_key_plaintext``), as in BigDL.
PLAINTEXT_KMS = ""
#: cipherspark's addition to ``ppml_args``: for a remote service, a JSON file of its data keys.
EXPORTED_DATA_KEYS = "exported_data_keys"

_BIGDL_PREFIX = "spark.bigdl."
_KEY_PREFIX = "spark.bigdl.primaryKey."


@dataclass(frozen=True)
class BigDLKeyConfig:
    """One named BigDL primary key, as configured (secrets kept out of ``repr``)."""

    name: str
    kms_type: str
    app_id: str | None = None
    api_key: str | None = field(default=None, repr=False)
    material: Path | None = None
    plaintext: str | None = field(default=None, repr=False)
    exported_data_keys: Path | None = None

    def load(self) -> BigDLKeys:
        """The key service this configuration names (reads the material or export file)."""
        if self.plaintext is not None:
            return PlaintextPrimaryKey.from_base64(self.plaintext)
        if self.exported_data_keys is not None:
            return ExportedDataKeys.from_json(_read(self.exported_data_keys, "exported data keys"))
        assert self.material is not None and self.app_id is not None and self.api_key is not None
        material = _read(self.material, "primary key material")
        return SimpleKms.from_material(self.app_id, self.api_key, material)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the BigDL {what} file {path}: {exc.strerror}") from exc


def _unknown_kms(kms_type: str, where: str) -> UsageError:
    if kms_type in _REMOTE_KMS:
        return UsageError(
            f"{where}: kms_type {kms_type!r} is a service cipherspark does not call; export its "
            f"data keys and give the export as {EXPORTED_DATA_KEYS!r} (a JSON file "
            '{"wrapped key": "data key"}, docs/migrate-bigdl.md)'
        )
    return UsageError(
        f"{where}: unknown kms_type {kms_type!r} (use {SIMPLE_KMS}, '' with "
        f"primary_key_plaintext, or {', '.join(_REMOTE_KMS)} with {EXPORTED_DATA_KEYS})"
    )


def _text(value: Any) -> str | None:
    """A configured value as text; ``None`` for absent or empty (argparse's unset is None)."""
    if value is None:
        return None
    text = str(value)
    return text or None


def _key_config(name: str, kms_type: str, get: Mapping[str, Any], where: str) -> BigDLKeyConfig:
    """The key ``name`` from its settings ``get`` (BigDL's ``ppml_args`` names)."""

    def need(arg: str) -> str:
        value = _text(get.get(arg))
        if value is None:
            # Names only, never values: these are secrets.
            shown = kms_type or "''"
            raise UsageError(f"{where}: kms_type {shown} needs argument {arg!r}")
        return value

    exported = _text(get.get(EXPORTED_DATA_KEYS))
    if kms_type == SIMPLE_KMS:
        return BigDLKeyConfig(
            name,
            kms_type,
            app_id=need("app_id"),
            api_key=need("api_key"),
            material=Path(need("primary_key_material")),
        )
    if kms_type == PLAINTEXT_KMS:
        return BigDLKeyConfig(name, kms_type, plaintext=need("primary_key_plaintext"))
    if kms_type in _REMOTE_KMS and exported is not None:
        return BigDLKeyConfig(name, kms_type, exported_data_keys=Path(exported))
    raise _unknown_kms(kms_type, where)


def keys_from_ppml_args(ppml_args: Mapping[str, Any] | None) -> dict[str, BigDLKeyConfig]:
    """The key of BigDL's ``ppml_args`` (named ``defaultKey``, as BigDL names it), if given.

    The names are BigDL's: ``kms_type`` (default ``""``, the plaintext primary key), ``app_id``,
    ``api_key``, ``primary_key_material`` (the SimpleKMS primary key file),
    ``primary_key_plaintext`` (base64). Other entries (BigDL's argument parser adds the input
    and output paths and modes) are ignored, as BigDL ignores them.
    """
    if not ppml_args:
        return {}
    kms_type = str(ppml_args.get("kms_type") or "")
    return {DEFAULT_KEY_NAME: _key_config(DEFAULT_KEY_NAME, kms_type, ppml_args, "ppml_args")}


# spark.bigdl.primaryKey.NAME.<suffix> -> the ppml_args name it corresponds to.
_CONF_NAMES = {
    "kms.type": "kms_type",
    "kms.appId": "app_id",
    "kms.apiKey": "api_key",
    "material": "primary_key_material",
    "plainText": "primary_key_plaintext",
    "exportedDataKeys": EXPORTED_DATA_KEYS,
}


def keys_from_conf(conf: Mapping[str, str]) -> dict[str, BigDLKeyConfig]:
    """The keys of the ``spark.bigdl.primaryKey.NAME.*`` groups of ``conf`` (BigDL's Scala
    configuration; kms.type defaults to SimpleKeyManagementService there)."""
    groups: dict[str, dict[str, str]] = {}
    for name, value in conf.items():
        if not name.startswith(_KEY_PREFIX):
            continue
        key_name, _, suffix = name.removeprefix(_KEY_PREFIX).partition(".")
        if not key_name or suffix not in _CONF_NAMES:
            # kms.ip, kms.port, ... belong to services refused below; a typo is named.
            if suffix.startswith("kms."):
                groups.setdefault(key_name, {})
                continue
            raise UsageError(f"unknown BigDL setting {name!r}")
        groups.setdefault(key_name, {})[_CONF_NAMES[suffix]] = value
    keys = {}
    for key_name, settings in groups.items():
        if "primary_key_plaintext" in settings:
            kms_type = PLAINTEXT_KMS
        else:
            kms_type = settings.get("kms_type", SIMPLE_KMS)
        where = f"{_KEY_PREFIX}{key_name}"
        keys[key_name] = _key_config(key_name, kms_type, settings, where)
    return keys


def is_bigdl_setting(name: str) -> bool:
    """Whether ``name`` is one of BigDL's own Spark settings (kept out of Spark's conf)."""
    return name.startswith(_BIGDL_PREFIX)


class KmsArgumentParser:
    """BigDL's ``bigdl.ppml.kms.utils.kms_argument_parser.KmsArgumentParser``: the same
    arguments and defaults, so BigDL's example scripts parse their command lines unchanged."""

    def __init__(self) -> None:
        parser = argparse.ArgumentParser()
        add = parser.add_argument
        add("--app_id", type=str, default="simpleAPPID", help="app id")
        add("--api_key", type=str, default="simpleAPIKEY", help="app key")
        add("--kms_server_ip", type=str, help="ehsm or azure etc. kms server ip")
        add("--kms_server_port", type=str, help="ehsm or azure etc. kms server port")
        add("--kms_user_name", type=str, help="bigdl kms user name")
        add("--kms_user_token", type=str, help="bigdl kms user token")
        add("--vault", type=str, help="azure key vault name")
        add("--client_id", type=str, default="", help="azure client id")
        add(
            "--primary_key_material",
            type=str,
            default="./primaryKeyPath",
            help="primary key path or name",
        )
        add("--input_encrypt_mode", type=str, required=True, help="input encrypt mode")
        add("--output_encrypt_mode", type=str, required=True, help="output encrypt mode")
        add("--input_path", type=str, required=True, help="input path")
        add("--output_path", type=str, required=True, help="output path")
        add(
            "--kms_type",
            type=str,
            default=SIMPLE_KMS,
            help="SimpleKeyManagementService, EHSMKeyManagementService or "
            "AzureKeyManagementService",
        )
        # cipherspark's one addition: the data keys exported from a service it does not call.
        add(f"--{EXPORTED_DATA_KEYS}", type=str, help="JSON file of exported BigDL data keys")
        self.parser = parser

    def get_arg_dict(self) -> dict[str, Any]:
        """The parsed command line (``sys.argv``) as a dict, BigDL's ``ppml_args``."""
        return vars(self.parser.parse_args())
