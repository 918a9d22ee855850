"""``PPMLContext`` on cipherspark: BigDL PPML's Python API over a secure session.

What a crypto mode means here (docs/ppml.md has the whole mapping):

* Reading accepts cipherspark's own format in every mode (every write produces it, so a script
  that writes and reads back in one mode keeps working), plus what the mode names: plaintext
  files (``plain_text``), BigDL's CBC files (``AES/CBC/PKCS5Padding``), nothing else for the
  AES-GCM modes (they are BigDL's Parquet modes; cipherspark's encrypted Parquet is read in
  any mode).
* BigDL's CBC input is never decrypted by Spark: on the driver, every file's HMAC is verified
  first (BigDL never checks it), then the files are re-encrypted into a private staging
  dataset (a 0700 temporary folder, under the session's cipherspark key) by
  :func:`cipherspark.jobs.migrate.migrate_bigdl`, streaming, no plaintext on disk; Spark reads
  that with cipherspark's readers. BigDL's files are not splittable anyway (one CBC stream per
  file), and this way no BigDL key goes to a worker, into Spark's conf or into a plan. Staging
  folders are removed by :meth:`PPMLContext.close` / :meth:`PPMLContext.stop`, or at exit.
* Every write, whatever the mode, is cipherspark's authenticated format under the session's
  cipherspark key (CSV, JSON Lines and text as encrypted datasets, Parquet through Parquet
  Modular Encryption, AES_GCM_V1): never CBC, never plaintext. ``plain_text`` writes say so
  with a :class:`PPMLWarning`.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from pyspark import RDD, SparkConf
from pyspark.sql import DataFrame, DataFrameReader, Row, SparkSession
from pyspark.sql.types import StructType

from cipherspark import settings as _settings
from cipherspark.crypto.container import is_container
from cipherspark.crypto.manifest import MANIFEST_NAME
from cipherspark.errors import (
    CipherSparkError,
    InputError,
    IntegrityError,
    OutputExistsError,
    UsageError,
)
from cipherspark.kms import DEFAULT_KMS_DIR, Credentials, kms_url_for_directory, open_kms
from cipherspark.ppml._keys import (
    DEFAULT_KEY_NAME,
    BigDLKeyConfig,
    is_bigdl_setting,
    keys_from_conf,
    keys_from_ppml_args,
)
from cipherspark.settings import ExecutorConfig

if TYPE_CHECKING:
    from cipherspark.crypto._bigdl import BigDLKeys
    from cipherspark.kms import KeyManagementService

__all__ = [
    "CryptoMode",
    "EncryptedDataFrameReader",
    "EncryptedDataFrameWriter",
    "PPMLContext",
    "PPMLSettings",
    "PPMLWarning",
]

logger = logging.getLogger("cipherspark.ppml")


class PPMLWarning(UserWarning):
    """A BigDL PPML call that does something other than BigDL would (a ``plain_text`` write is
    encrypted)."""


class CryptoMode(StrEnum):
    """BigDL's crypto modes, by BigDL's names and values (what each means here: module doc)."""

    PLAIN_TEXT = "plain_text"
    AES_CBC_PKCS5PADDING = "AES/CBC/PKCS5Padding"
    AES_GCM_V1 = "AES_GCM_V1"
    AES_GCM_CTR_V1 = "AES_GCM_CTR_V1"

    @classmethod
    def of(cls, mode: object) -> CryptoMode:
        """``mode`` as a :class:`CryptoMode`: a member, BigDL's own enum member (its
        ``value``), or a value or name in any case (BigDL's scripts pass the string)."""
        if isinstance(mode, CryptoMode):
            return mode
        text = str(getattr(mode, "value", mode)).strip().lower()
        for member in cls:
            if text in (member.value.lower(), member.name.lower()):
                return member
        raise UsageError(
            f"unknown crypto mode {str(mode)!r} (use {', '.join(m.value for m in cls)})"
        )


@dataclass(frozen=True)
class PPMLSettings:
    """cipherspark's side of a :class:`PPMLContext`: the KMS, its key, the credentials.

    ``kms_url`` ``None`` is the embedded keystore ``.cipherspark/kms``; ``key`` is the primary
    key every write is encrypted under (and BigDL input is staged under); ``master`` and
    ``spark_properties`` are the Spark master and a standalone cluster's properties file,
    unless ``spark_conf`` names ``spark.master``.
    """

    kms_url: str | None = None
    key: str | None = None
    credentials: Credentials | None = None
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    master: str | None = None
    spark_properties: Path | None = None

    @classmethod
    def from_environment(cls) -> PPMLSettings:
        """The settings of this process, as :func:`cipherspark.settings.session_settings`
        reads them: ``CIPHERSPARK_KMS``, ``CIPHERSPARK_KEY``, ``CIPHERSPARK_APP_ID`` /
        ``_API_KEY`` (or their ``_FILE`` forms), ``CIPHERSPARK_KMS_CA`` and the other worker
        settings, ``CIPHERSPARK_MASTER``, ``CIPHERSPARK_SPARK_PROPERTIES``.

        A ``PPMLContext`` is a top-level entry point (BigDL's scripts pass it no cipherspark
        arguments), so, like the CLI, it takes these from the environment.
        """
        found = _settings.session_settings()
        return cls(
            kms_url=found.kms,
            key=found.key,
            credentials=Credentials(*found.credentials) if found.credentials else None,
            executor=found.executor,
            master=found.master,
            spark_properties=found.spark_properties,
        )

    @property
    def resolved_kms_url(self) -> str:
        """The KMS URL readers and writers are given (a keystore folder made a ``file://``
        URL, absolute: executors run in their own folders)."""
        if self.kms_url is None:
            return kms_url_for_directory(DEFAULT_KMS_DIR)
        if urlparse(self.kms_url).scheme == "":
            return kms_url_for_directory(self.kms_url)
        return self.kms_url


def _flag(name: str, value: str | None) -> bool | None:
    if value is None:
        return None
    lowered = value.strip().lower()
    if lowered not in ("true", "false"):
        raise UsageError(f"option {name} must be true or false, not {value!r}")
    return lowered == "true"


def _option_text(value: Any) -> str:
    """An option value as Spark takes it (``True`` -> ``"true"``, as BigDL's Scala side does)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _lowered(options: Mapping[str, str]) -> dict[str, str]:
    """Spark's options are case-insensitive: by lower-cased name."""
    return {name.lower(): value for name, value in options.items()}


def _refuse_options(options: Mapping[str, str], allowed: set[str], what: str) -> None:
    unsupported = sorted(name for name in options if name.lower() not in allowed)
    if unsupported:
        supported = ", ".join(sorted(allowed)) or "none"
        raise UsageError(
            f"{what}: option {unsupported[0]!r} is not supported (supported: {supported})"
        )


def _is_cipherspark(path: Path) -> bool:
    """Whether ``path`` holds cipherspark's encrypted CSV / JSON / text: a container, or a
    folder with a dataset manifest or container parts."""
    try:
        if path.is_file():
            return is_container(path)
        if path.is_dir():
            if (path / MANIFEST_NAME).exists():
                return True
            return any(
                is_container(p)
                for p in sorted(path.iterdir())
                if p.is_file() and not p.name.startswith(("_", "."))
            )
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc
    return False


def _is_bigdl_parquet(table: Path) -> bool:
    """Whether ``table`` is Parquet BigDL encrypted (its footer under BigDL's ``footerKey``)."""
    from cipherspark.jobs._bigdl_parquet import FOOTER_KEY
    from cipherspark.spark.pme import check_encrypted_parquet

    try:
        return check_encrypted_parquet(table) == FOOTER_KEY
    except CipherSparkError:
        return False  # not encrypted Parquet: the reader below says what it is


@dataclass(frozen=True)
class _Input:
    """Where an encrypted read reads from: cipherspark data, or BigDL input staged as such.

    Staged input is not in the KMS's dataset registry (it is private and removed at
    :meth:`PPMLContext.close`; a record would outlive it): its reads skip the registry and pin
    instead what staging wrote, the key and (a folder) the fresh dataset id, so that nothing
    but that commit is read there.
    """

    path: Path
    staged: bool
    key: str | None = None
    dataset_id: str | None = None

    def pins(self) -> dict[str, Any]:
        """The readers' pin arguments for this input (none for the user's own data, which the
        registry checks)."""
        if not self.staged:
            return {}
        return {"key": self.key, "dataset_id": self.dataset_id, "unsafe_skip_registry": True}


# Spark settings a BigDL user's spark_conf may not change: they would switch cipherspark's
# protections off (spark.ui.enabled=true is honoured, as secure_session's ui=True).
_PARQUET_CRYPTO = ("spark.hadoop.parquet.crypto.", "spark.hadoop.parquet.encryption.")
# BigDL's codec, named by its PPMLContext in spark.hadoop.io.compression.codecs: not on this
# class path (Hadoop would fail to load it), and CBC is what this package exists to replace.
_BIGDL_CLASSES = "com.intel.analytics.bigdl"


def _spark_settings(conf: dict[str, str]) -> bool:
    """Check (and trim) a ``spark_conf``'s Spark settings; whether it asks for the UI."""
    from cipherspark.spark.session import SECURE_CONF, UNSAFE_PLAINTEXT_WRITES

    ui = _flag("spark.ui.enabled", conf.pop("spark.ui.enabled", None)) or False
    conf.pop("spark.ui.showConsoleProgress", None)
    for name, secure in SECURE_CONF.items():
        if name in conf and conf[name].strip().lower() != secure.lower():
            raise UsageError(
                f"spark_conf sets {name}={conf[name]!r}: a cipherspark session keeps it {secure} "
                "(docs/ppml.md)"
            )
    for name in list(conf):
        if name == UNSAFE_PLAINTEXT_WRITES or name.startswith(_PARQUET_CRYPTO):
            raise UsageError(
                f"spark_conf sets {name}: cipherspark's plaintext-write guard and Parquet "
                "encryption are not configurable through PPMLContext (docs/ppml.md)"
            )
    codecs = conf.get("spark.hadoop.io.compression.codecs", "")
    if _BIGDL_CLASSES in codecs:
        kept = [c for c in codecs.split(",") if c.strip() and _BIGDL_CLASSES not in c]
        if kept:
            conf["spark.hadoop.io.compression.codecs"] = ",".join(kept)
        else:
            del conf["spark.hadoop.io.compression.codecs"]
        logger.info("BigDL's CryptoCodec is not used: removed from io.compression.codecs")
    return ui


def _conf_entries(spark_conf: SparkConf | Mapping[str, str] | None) -> dict[str, str]:
    if spark_conf is None:
        return {}
    if isinstance(spark_conf, SparkConf):
        return {str(k): str(v) for k, v in spark_conf.getAll()}
    return {str(k): str(v) for k, v in spark_conf.items()}


def _line(row: Row) -> str:
    """A text row's line (module level: Spark pickles it to the workers)."""
    return str(row[0])


class PPMLContext:
    """BigDL PPML's ``PPMLContext`` over a cipherspark secure session.

    ``PPMLContext(app_name, ppml_args=None, spark_conf=None)`` as in BigDL: ``ppml_args`` name
    the BigDL key that BigDL-encrypted input is read with (BigDL's names, docs/ppml.md);
    ``spark_conf`` (a ``SparkConf`` or a mapping) adds Spark settings, and its
    ``spark.bigdl.primaryKey.NAME.*`` groups name more BigDL keys (kept out of Spark's conf).
    Spark's security settings cannot be weakened through it.

    cipherspark's own settings come from ``settings`` or, by default, from the environment
    (:meth:`PPMLSettings.from_environment`: ``CIPHERSPARK_KMS``, ``CIPHERSPARK_KEY``, the
    credentials). ``staging_dir`` is where BigDL input is staged (default: the system's
    temporary folder; on a cluster, a folder every executor can read). The session is
    :attr:`spark`; :meth:`stop` stops it and removes the staging folders.
    """

    def __init__(
        self,
        app_name: str,
        ppml_args: Mapping[str, Any] | None = None,
        spark_conf: SparkConf | Mapping[str, str] | None = None,
        *,
        settings: PPMLSettings | None = None,
        staging_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        from cipherspark.spark import secure_session
        from cipherspark.spark.pme import ParquetEncryption

        self._settings = settings if settings is not None else PPMLSettings.from_environment()
        conf = _conf_entries(spark_conf)
        # BigDL applies spark_conf first and ppml_args over it: its defaultKey wins.
        self._bigdl: dict[str, BigDLKeyConfig] = {
            **keys_from_conf(conf),
            **keys_from_ppml_args(ppml_args),
        }
        spark_conf_entries = {k: v for k, v in conf.items() if not is_bigdl_setting(k)}
        master = spark_conf_entries.pop("spark.master", None) or self._settings.master or "local[*]"
        spark_conf_entries.pop("spark.app.name", None)  # app_name is the name, as in BigDL
        ui = _spark_settings(spark_conf_entries)
        #: The KMS URL the session's readers and writers use.
        self.kms_url = self._settings.resolved_kms_url
        key = self._settings.key
        self._kms: KeyManagementService | None = None
        self._loaded: dict[str, BigDLKeys] = {}
        self._staging_parent = None if staging_dir is None else Path(staging_dir).absolute()
        self._staging: Path | None = None
        self._staged = 0
        self._lock = threading.Lock()
        #: The secure SparkSession (BigDL's ``sc.spark``).
        self.spark: SparkSession = secure_session(
            master=master,
            app_name=app_name,
            credentials=self._settings.credentials,
            ui=ui,
            extra_conf=spark_conf_entries,
            properties_file=self._settings.spark_properties,
            executor=self._settings.executor,
            parquet=None if key is None else ParquetEncryption(self.kms_url, key),
        )

    def __repr__(self) -> str:
        return f"PPMLContext(kms={self.kms_url!r}, key={self._settings.key!r})"

    # -- BigDL's API --------------------------------------------------------------------------

    def read(self, crypto_mode: object, primary_key_name: str = "") -> EncryptedDataFrameReader:
        """A reader of input in ``crypto_mode`` (BigDL input with the BigDL key
        ``primary_key_name``, default: the one configured)."""
        return EncryptedDataFrameReader(self, CryptoMode.of(crypto_mode), primary_key_name)

    def write(
        self, dataframe: DataFrame, crypto_mode: object, primary_key_name: str = ""
    ) -> EncryptedDataFrameWriter:
        """A writer of ``dataframe``: cipherspark's encrypted format whatever ``crypto_mode``
        (``primary_key_name`` must name a configured BigDL key if given; the output is under
        the session's cipherspark key)."""
        self._check_key_name(primary_key_name)
        return EncryptedDataFrameWriter(self, dataframe, CryptoMode.of(crypto_mode))

    def textfile(
        self,
        path: str,
        min_partitions: int | None = None,
        crypto_mode: object = "plain_text",
        primary_key_name: str = "",
    ) -> RDD[str]:
        """The lines of ``path`` as an RDD of strings, as BigDL's ``textfile`` (at least
        ``min_partitions`` partitions, default Spark's ``defaultMinPartitions``)."""
        from cipherspark.spark import read_encrypted_text

        mode = CryptoMode.of(crypto_mode)
        context = self.spark.sparkContext
        if min_partitions is None:
            min_partitions = context.defaultMinPartitions
        source = self._locate(path, mode, primary_key_name)
        if source is None:
            return context.textFile(path, min_partitions)
        lines = read_encrypted_text(
            self.spark, str(source.path), kms_url=self.kms_url, **source.pins()
        )
        rdd: RDD[str] = lines.rdd.map(_line)
        if rdd.getNumPartitions() < min_partitions:
            rdd = rdd.repartition(min_partitions)
        return rdd

    def sql(self, sqlText: str) -> DataFrame:  # BigDL's parameter name
        """``spark.sql(sqlText)`` (plaintext writes through SQL are refused by the session)."""
        from cipherspark.spark import cipherspark_errors

        with cipherspark_errors():
            return self.spark.sql(sqlText)

    # -- life cycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Remove this context's staging folders and close its KMS client; the session stays
        (DataFrames over staged BigDL input cannot be used after this)."""
        with self._lock:
            staging, self._staging = self._staging, None
            kms, self._kms = self._kms, None
        if staging is not None:
            atexit.unregister(self._remove_staging)
            shutil.rmtree(staging, ignore_errors=True)
        if kms is not None:
            kms.close()

    def stop(self) -> None:
        """Stop the session, then :meth:`close`."""
        try:
            self.spark.stop()
        finally:
            self.close()

    def __enter__(self) -> PPMLContext:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _remove_staging(self) -> None:
        # At interpreter exit: a script that never stops its context leaves nothing behind.
        staging = self._staging
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)

    # -- what readers and writers share -------------------------------------------------------

    def _write_key(self, doing: str) -> str:
        """The session's cipherspark key; :class:`UsageError` if none is set."""
        key = self._settings.key
        if key is None:
            raise UsageError(
                f"{doing} needs the cipherspark key the data is encrypted under: set "
                f"{_settings.ENV_KEY} (or PPMLSettings.key)"
            )
        return key

    def _service(self) -> KeyManagementService:
        with self._lock:
            if self._kms is None:
                executor = self._settings.executor
                self._kms = open_kms(
                    self.kms_url,
                    self._settings.credentials,
                    ca_file=executor.kms_ca,
                    unsafe_plaintext=executor.unsafe_plaintext_kms,
                )
            return self._kms

    def _check_key_name(self, name: str) -> None:
        if name and name not in self._bigdl:
            configured = ", ".join(sorted(self._bigdl)) or "none"
            raise UsageError(
                f"no BigDL primary key named {name!r} is configured (configured: {configured})"
            )

    def _bigdl_keys(self, name: str) -> BigDLKeys:
        self._check_key_name(name)
        if not self._bigdl:
            raise UsageError(
                "reading BigDL-encrypted input needs its BigDL key: give ppml_args (kms_type "
                "SimpleKeyManagementService with app_id, api_key and primary_key_material, or "
                "primary_key_plaintext)"
            )
        if not name:
            if len(self._bigdl) == 1:
                name = next(iter(self._bigdl))
            elif DEFAULT_KEY_NAME in self._bigdl:
                name = DEFAULT_KEY_NAME
            else:
                raise UsageError(
                    "several BigDL primary keys are configured: name one (primary_key_name)"
                )
        with self._lock:
            if name not in self._loaded:
                self._loaded[name] = self._bigdl[name].load()
            return self._loaded[name]

    def _staging_root(self) -> Path:
        with self._lock:
            if self._staging is None:
                if self._staging_parent is not None:
                    self._staging_parent.mkdir(parents=True, exist_ok=True)
                # mkdtemp: mode 0700, a name nobody else can have taken.
                self._staging = Path(
                    tempfile.mkdtemp(prefix="cipherspark-ppml-", dir=self._staging_parent)
                ).absolute()
                atexit.register(self._remove_staging)
            self._staged += 1
            return self._staging / f"bigdl-{self._staged:05d}"

    def _stage(self, path: Path, primary_key_name: str) -> _Input:
        """Verify BigDL input ``path`` and re-encrypt it into a new staging dataset."""
        from cipherspark.jobs.migrate import BigDLSource, migrate_bigdl

        key = self._write_key("reading BigDL input (it is re-encrypted before Spark reads it)")
        source = BigDLSource(self._bigdl_keys(primary_key_name))
        service = self._service()
        target = self._staging_root()
        # Raises (naming the file) if any file does not verify; then nothing was staged. Not
        # registered: the staging is private and short-lived, and a record would outlive the
        # folder (stale records, one per read, in the user's registry); its reads pin what was
        # written here instead (_Input.pins).
        result = migrate_bigdl(path, target, service, key, source, register=False)
        logger.info("verified BigDL input %s and staged it under key %s", path, key)
        dataset_id = None if result.dataset is None else result.dataset.dataset_id
        return _Input(target, staged=True, key=key, dataset_id=dataset_id)

    def _locate(self, path: str, mode: CryptoMode, primary_key_name: str) -> _Input | None:
        """Where an encrypted read of ``path`` reads from; ``None``: Spark reads plaintext."""
        where = Path(path)
        if _is_cipherspark(where):
            return _Input(where.absolute(), staged=False)
        if mode is CryptoMode.PLAIN_TEXT:
            return None
        if not where.exists():
            raise InputError(f"{path} does not exist")
        if mode is CryptoMode.AES_CBC_PKCS5PADDING:
            return self._stage(where, primary_key_name)
        raise InputError(
            f"{path} is not cipherspark-encrypted data: in {mode.value} mode only cipherspark's "
            "format is read (BigDL's CBC files in AES/CBC/PKCS5Padding mode, plaintext in "
            "plain_text mode)"
        )

    def _announce_write(self, mode: CryptoMode, what: str, path: str) -> None:
        key = self._settings.key
        if mode is CryptoMode.PLAIN_TEXT:
            warnings.warn(
                f"crypto mode plain_text: {what} output {path} is written encrypted, in "
                f"cipherspark's format under key {key!r} (decrypt it with cipherspark decrypt)",
                PPMLWarning,
                stacklevel=4,
            )
        elif mode is not CryptoMode.AES_GCM_V1:
            logger.info(
                "crypto mode %s: %s output %s is written in cipherspark's authenticated "
                "format under key %s",
                mode.value,
                what,
                path,
                key,
            )


class EncryptedDataFrameReader:
    """BigDL's ``EncryptedDataFrameReader``: ``option`` / ``options`` / ``schema``, then
    ``csv`` / ``json`` / ``text`` / ``parquet``."""

    def __init__(self, context: PPMLContext, mode: CryptoMode, primary_key_name: str) -> None:
        self._context = context
        self._mode = mode
        self._key_name = primary_key_name
        self._options: dict[str, str] = {}
        self._schema: StructType | str | None = None
        context._check_key_name(primary_key_name)

    def option(self, key: str, value: Any) -> EncryptedDataFrameReader:
        """Add a reader option (Spark's names)."""
        self._options[key] = _option_text(value)
        return self

    def options(self, **options: Any) -> EncryptedDataFrameReader:
        """Add reader options."""
        for key, value in options.items():
            self.option(key, value)
        return self

    def schema(self, schema: StructType | str) -> EncryptedDataFrameReader:
        """The schema to read with (a ``StructType`` or DDL text)."""
        self._schema = schema
        return self

    def _plain(self) -> DataFrameReader:
        reader = self._context.spark.read.options(**self._options)
        return reader if self._schema is None else reader.schema(self._schema)

    def _read(self, path: str, plain: Callable[[DataFrameReader], DataFrame]) -> _Input | DataFrame:
        source = self._context._locate(path, self._mode, self._key_name)
        if source is not None:
            return source
        from cipherspark.spark import cipherspark_errors

        with cipherspark_errors():
            return plain(self._plain())

    def csv(self, path: str) -> DataFrame:
        """The CSV at ``path``: encrypted (options ``header``, ``inferSchema``, ``mode``), or
        plaintext in ``plain_text`` mode (any of Spark's CSV options)."""
        from cipherspark.spark import read_encrypted_csv

        source = self._read(path, lambda reader: reader.csv(path))
        if isinstance(source, DataFrame):
            return source
        _refuse_options(self._options, {"header", "inferschema", "mode"}, "encrypted CSV")
        options = _lowered(self._options)
        header = _flag("header", options.get("header"))
        if header is None and source.staged:
            header = False  # Spark's default, as BigDL's reader had it
        return read_encrypted_csv(
            self._context.spark,
            str(source.path),
            kms_url=self._context.kms_url,
            schema=self._schema,
            header=header,
            infer_schema=bool(_flag("inferSchema", options.get("inferschema"))),
            mode=options.get("mode", "PERMISSIVE"),
            **source.pins(),
        )

    def json(self, path: str) -> DataFrame:
        """The JSON Lines at ``path``, with Spark's JSON options, encrypted or (``plain_text``
        mode) plaintext."""
        from cipherspark.spark import read_encrypted_json

        source = self._read(path, lambda reader: reader.json(path))
        if isinstance(source, DataFrame):
            return source
        return read_encrypted_json(
            self._context.spark,
            str(source.path),
            kms_url=self._context.kms_url,
            schema=self._schema,
            options=self._options,
            **source.pins(),
        )

    def text(self, path: str) -> DataFrame:
        """The lines of ``path`` as a ``value`` column (option ``wholetext``), encrypted or
        (``plain_text`` mode) plaintext."""
        from cipherspark.spark import read_encrypted_text

        source = self._read(path, lambda reader: reader.text(path))
        if isinstance(source, DataFrame):
            return source
        _refuse_options(self._options, {"wholetext"}, "encrypted text")
        wholetext = _flag("wholetext", _lowered(self._options).get("wholetext"))
        return read_encrypted_text(
            self._context.spark,
            str(source.path),
            kms_url=self._context.kms_url,
            wholetext=bool(wholetext),
            **source.pins(),
        )

    def parquet(self, path: str) -> DataFrame:
        """The Parquet table at ``path``: encrypted Parquet (Parquet Modular Encryption, every
        file checked) in any mode; in ``plain_text`` mode, a plaintext table too."""
        from cipherspark.spark import cipherspark_errors, read_encrypted_parquet
        from cipherspark.spark.pme import (
            check_encrypted_parquet,
            unsafe_plaintext_parquet_read_options,
        )

        table = Path(path)
        if self._mode is CryptoMode.PLAIN_TEXT:
            try:
                check_encrypted_parquet(table)
            except (InputError, IntegrityError):
                # Not encrypted Parquet: the plaintext read this mode names. Spark reports a
                # missing table; the session's readers allow plaintext files for this read only.
                options = {**self._options, **unsafe_plaintext_parquet_read_options()}
                reader = self._context.spark.read.options(**options)
                if self._schema is not None:
                    reader = reader.schema(self._schema)
                with cipherspark_errors():
                    return reader.parquet(path)
        if self._options or self._schema is not None:
            raise UsageError("encrypted Parquet is read with its own schema and no options")
        if self._mode is not CryptoMode.PLAIN_TEXT and _is_bigdl_parquet(table):
            # BigDL's PME Parquet (InMemoryKMS, master keys from its data-key string): verified
            # and re-encrypted on the driver, as CBC input is, so that no BigDL key reaches
            # Spark's configuration or a worker; then read as cipherspark's, pinned to the key.
            staged = self._context._stage(table, self._key_name)
            return read_encrypted_parquet(self._context.spark, str(staged.path), key=staged.key)
        return read_encrypted_parquet(self._context.spark, path)


class EncryptedDataFrameWriter:
    """BigDL's ``EncryptedDataFrameWriter``: ``mode`` / ``option`` / ``options``, then ``csv``
    / ``json`` / ``text`` / ``parquet``; the output is always cipherspark's encrypted format."""

    #: BigDL's save modes.
    support_mode = frozenset({"overwrite", "append", "ignore", "error", "errorifexists"})

    def __init__(self, context: PPMLContext, df: DataFrame, mode: CryptoMode) -> None:
        self._context = context
        self._df = df
        self._mode = mode
        self._save_mode = "errorifexists"
        self._options: dict[str, str] = {}

    def option(self, key: str, value: Any) -> EncryptedDataFrameWriter:
        """Add a writer option (Spark's names)."""
        self._options[key] = _option_text(value)
        return self

    def options(self, **options: Any) -> EncryptedDataFrameWriter:
        """Add writer options."""
        for key, value in options.items():
            self.option(key, value)
        return self

    def mode(self, mode: str) -> EncryptedDataFrameWriter:
        """The save mode: overwrite, append, ignore, error or errorifexists (the default)."""
        lowered = str(mode).lower()
        if lowered == "default":
            lowered = "errorifexists"
        if lowered not in self.support_mode:
            raise UsageError(
                f"Unknown save mode: {mode}. Accepted save modes are 'overwrite', 'append', "
                "'ignore', 'error', 'errorifexists'."
            )
        self._save_mode = lowered
        return self

    def _start(self, what: str, path: str) -> tuple[str, bool] | None:
        """The key and whether to overwrite; ``None`` to write nothing (mode ignore)."""
        key = self._context._write_key(f"writing {what}")
        exists = Path(path).exists()
        if self._save_mode == "ignore" and exists:
            return None
        if self._save_mode == "append" and exists:
            raise UsageError(
                f"{path} exists: mode 'append' cannot add to cipherspark's encrypted {what} (a "
                "dataset is one authenticated commit); write a new folder or use 'overwrite'"
            )
        if self._save_mode in ("error", "errorifexists") and exists:
            raise OutputExistsError(f"{path} exists already (use mode 'overwrite')")
        self._context._announce_write(self._mode, what, path)
        return key, self._save_mode == "overwrite"

    def csv(self, path: str) -> None:
        """Write encrypted CSV parts into folder ``path`` (option ``header``, default false as
        in Spark)."""
        from cipherspark.spark import write_encrypted_csv

        _refuse_options(self._options, {"header"}, "encrypted CSV")
        header = _flag("header", _lowered(self._options).get("header"))
        started = self._start("CSV", path)
        if started is not None:
            key, overwrite = started
            write_encrypted_csv(
                self._df,
                path,
                kms_url=self._context.kms_url,
                key=key,
                header=bool(header),
                overwrite=overwrite,
            )

    def json(self, path: str) -> None:
        """Write encrypted JSON Lines into folder ``path`` (Spark's JSON generator options)."""
        from cipherspark.spark import write_encrypted_json

        for name in ("compression", "lineSep", "encoding", "charset"):
            if name.lower() in _lowered(self._options):
                raise UsageError(f"encrypted JSON: option {name!r} is not supported")
        started = self._start("JSON", path)
        if started is not None:
            key, overwrite = started
            write_encrypted_json(
                self._df,
                path,
                kms_url=self._context.kms_url,
                key=key,
                overwrite=overwrite,
                options=self._options,
            )

    def text(self, path: str) -> None:
        """Write a one-string-column DataFrame as encrypted lines into folder ``path``."""
        from cipherspark.spark import write_encrypted_text

        _refuse_options(self._options, set(), "encrypted text")
        started = self._start("text", path)
        if started is not None:
            key, overwrite = started
            write_encrypted_text(
                self._df, path, kms_url=self._context.kms_url, key=key, overwrite=overwrite
            )

    def parquet(self, path: str) -> None:
        """Write Parquet encrypted by Parquet Modular Encryption (AES_GCM_V1, encrypted footer,
        every column under the session's key) into ``path``; Spark's save modes, append too."""
        from cipherspark.spark import cipherspark_errors

        self._context._write_key("writing Parquet")
        for name in self._options:
            if name.lower().startswith(("parquet.encryption.", "parquet.crypto.")):
                raise UsageError(
                    f"option {name!r}: Parquet encryption is the session's, not per write"
                )
        if self._save_mode == "ignore" and Path(path).exists():
            return
        self._context._announce_write(self._mode, "Parquet", path)
        writer = self._df.write.mode(self._save_mode).options(**self._options)
        with cipherspark_errors():
            writer.parquet(str(Path(path).absolute()))
