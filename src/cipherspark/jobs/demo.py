"""The end-to-end demo: generate -> key -> encrypt -> Simple Query -> decrypt -> verify.

Everything runs on embedded defaults: local Spark and a local keystore whose credentials are
generated once and kept in the work folder (``credentials.json``, mode 0600). With
``kms_server=True`` the keys come from a real KMS server on 127.0.0.1 instead, started and
stopped by the demo.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from cipherspark.errors import KeyExistsError, KmsError, VerificationError
from cipherspark.files import decrypt_path, encrypt_path
from cipherspark.jobs._simple_query import simple_query
from cipherspark.jobs.datagen import QUERY_MAX_AGE, QUERY_MIN_AGE, generate_people
from cipherspark.kms import Credentials, KeyManagementService, open_kms
from cipherspark.settings import ExecutorConfig
from cipherspark.spark import secure_session

__all__ = ["DEMO_KEY", "DemoReport", "DemoStep", "demo_credentials", "run_demo"]

DEMO_KEY = "simple"


@dataclass(frozen=True)
class DemoStep:
    """One timed step of the demo."""

    name: str
    seconds: float
    detail: str


@dataclass
class DemoReport:
    """The demo's steps and its verdict."""

    rows: int
    expected: int = 0
    found: int = 0
    steps: list[DemoStep] = field(default_factory=list)
    checks: list[tuple[str, bool]] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        """True if every check passed."""
        return bool(self.checks) and all(ok for _, ok in self.checks)


def demo_credentials(workdir: Path) -> Credentials:
    """The demo's APP ID / API KEY, generated on first use into ``credentials.json`` (0600)."""
    path = workdir / "credentials.json"
    if path.exists():
        doc = json.loads(path.read_text())
        return Credentials(doc["app_id"], doc["api_key"])
    credentials = Credentials(f"demo-{secrets.token_hex(4)}", secrets.token_urlsafe(32))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"app_id": credentials.app_id, "api_key": credentials.api_key}, f)
    return credentials


def _demo_kms(workdir: Path, credentials: Credentials) -> KeyManagementService:
    kms = open_kms((workdir / "kms").as_uri(), credentials, create=True)
    try:
        kms.create_key(DEMO_KEY)
    except KeyExistsError:
        pass
    return kms


def _private_json(path: Path, doc: dict[str, str]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f)


def _server_kms(workdir: Path, stack: ExitStack) -> tuple[Credentials, KeyManagementService, Path]:
    """Start the demo's KMS server (stopped when ``stack`` closes); its app and key.

    The admin token (from the first start) and the app's credentials are kept in the work folder
    (0600 files), so a second run reuses the same server data. Executors find the server's
    self-signed certificate (returned third) in the session's executor configuration.
    """
    from cipherspark.kms.remote import KmsAdmin, RemoteKms
    from cipherspark.kms.server.launch import local_server

    server = stack.enter_context(local_server(workdir / "kms-server"))
    admin_file = workdir / "kms-server-admin.json"
    creds_file = workdir / "kms-server-credentials.json"
    if server.admin_token is not None:
        admin_file.unlink(missing_ok=True)
        creds_file.unlink(missing_ok=True)
        _private_json(admin_file, {"admin_token": server.admin_token})
    if not creds_file.exists():
        if not admin_file.exists():
            raise KmsError(
                f"{admin_file} is missing, so the demo cannot register its app at the "
                f"KMS server in {server.data_dir}; delete that folder to start over"
            )
        token = json.loads(admin_file.read_text())["admin_token"]
        admin = KmsAdmin(server.url, token, ca_file=server.ca_file)
        try:
            new = admin.create_app("cipherspark demo")
        finally:
            admin.close()
        _private_json(creds_file, {"app_id": new.app_id, "api_key": new.api_key})
    doc = json.loads(creds_file.read_text())
    credentials = Credentials(doc["app_id"], doc["api_key"])
    kms = RemoteKms(server.url, credentials, ca_file=server.ca_file)
    stack.callback(kms.close)
    try:
        kms.create_key(DEMO_KEY)
    except KeyExistsError:
        pass
    return credentials, kms, Path(server.ca_file)


def _long_names(path: Path, limit: int) -> list[bytes]:
    """Up to ``limit`` 7-letter names: long enough never to occur in ciphertext by chance."""
    names: list[bytes] = []
    with open(path, "rb") as f:
        next(f)
        for line in f:
            name = line.split(b",", 1)[0]
            if len(name) == 7:
                names.append(name)
                if len(names) >= limit:
                    break
    return names


def _contains_any(path: Path, needles: list[bytes]) -> bool:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        data = file.read_bytes()
        if any(n in data for n in needles):
            return True
    return False


def _selection(path: Path) -> pa.Table:
    types = {"name": pa.string(), "age": pa.int32(), "job": pa.string()}
    table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=types))
    return table.sort_by([("name", "ascending"), ("age", "ascending")])


def run_demo(
    workdir: Path,
    *,
    rows: int = 1_000_000,
    seed: int | None = None,
    master: str = "local[*]",
    on_step: Callable[[DemoStep], None] | None = None,
    kms_server: bool = False,
    properties_file: Path | None = None,
    spark_log: Path | None = None,
) -> DemoReport:
    """Run the whole flow in ``workdir`` (created if absent) and verify the decrypted result.

    ``kms_server``: instead of the embedded keystore, start a real KMS server on 127.0.0.1
    (TLS, self-signed, data in ``workdir/kms-server``), register the demo app there, run every
    step through it and stop it at the end (see :func:`_server_kms`).
    ``properties_file`` is a standalone cluster's (for ``master="spark://..."``); ``spark_log``
    receives the Spark driver's console output.
    """
    workdir = workdir.absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    report = DemoReport(rows=rows)

    @contextmanager
    def step(name: str) -> Iterator[list[str]]:
        detail: list[str] = []
        start = time.perf_counter()
        yield detail
        done = DemoStep(name, time.perf_counter() - start, "; ".join(detail))
        report.steps.append(done)
        if on_step is not None:
            on_step(done)

    plain = workdir / "people.csv"
    encrypted = workdir / "people.csv.cspk"
    result = workdir / "developers.cspk"
    decrypted = workdir / "developers.csv"

    with ExitStack() as stack:
        with step("generate people.csv") as detail:
            generated = generate_people(plain, rows, seed=seed, overwrite=True)
            report.expected = generated.developers_20_40
            detail.append(f"{rows:,} rows, {generated.size / 1e6:.1f} MB")
            detail.append(f"Developers aged 20-40: {generated.developers_20_40:,}")
        with step("start KMS server" if kms_server else "create primary key") as detail:
            if kms_server:
                credentials, kms, ca_file = _server_kms(workdir, stack)
                executor = ExecutorConfig(kms_ca=ca_file.absolute())
                detail.append(f"TLS on {kms.url}; key {DEMO_KEY!r}")
            else:
                credentials = demo_credentials(workdir)
                kms = _demo_kms(workdir, credentials)
                executor = ExecutorConfig()
                detail.append(f"key {DEMO_KEY!r} in {kms.url}")
        with step("encrypt") as detail:
            enc = encrypt_path(plain, encrypted, kms, DEMO_KEY, overwrite=True)
            detail.append(f"{enc.ciphertext_bytes / 1e6:.1f} MB -> {encrypted.name}")
        with step("start Spark (secure session)") as detail:
            spark = secure_session(
                master=master,
                app_name="cipherspark-demo",
                credentials=credentials,
                properties_file=properties_file,
                log_file=spark_log,
                executor=executor,
            )
            detail.append(master)
        with step("Simple Query on encrypted data") as detail:
            answer = simple_query(
                spark, str(encrypted), str(result), kms_url=kms.url, key=DEMO_KEY, overwrite=True
            )
            report.found = answer.developers_20_40
            detail.append(f"names: {answer.names:,}")
            detail.append(f"Developers aged 20-40: {answer.developers_20_40:,}")
        with step("decrypt result") as detail:
            dec = decrypt_path(result, decrypted, kms, overwrite=True)
            detail.append(f"{dec.files} part(s) -> {decrypted.name}")
        with step("verify") as detail:
            got = _selection(decrypted)
            everyone = pacsv.read_csv(
                plain,
                convert_options=pacsv.ConvertOptions(
                    column_types={"name": pa.string(), "age": pa.int32(), "job": pa.string()}
                ),
            )
            mask = pc.and_(
                pc.equal(everyone["job"], "Developer"),
                pc.and_(
                    pc.greater_equal(everyone["age"], QUERY_MIN_AGE),
                    pc.less_equal(everyone["age"], QUERY_MAX_AGE),
                ),
            )
            want = everyone.filter(mask).sort_by([("name", "ascending"), ("age", "ascending")])
            names = _long_names(plain, 200)
            report.checks = [
                (
                    "count printed by the query equals the generator's",
                    answer.names == rows and report.found == report.expected,
                ),
                ("decrypted result holds exactly the matching rows", got.equals(want)),
                (
                    "no plaintext name in the encrypted input or output",
                    bool(names)
                    and not _contains_any(encrypted, names)
                    and not _contains_any(result, names),
                ),
            ]
            passed = sum(ok for _, ok in report.checks)
            detail.append(f"{passed}/{len(report.checks)} checks passed")
    if not report.verified:
        failed = [name for name, ok in report.checks if not ok]
        raise VerificationError("demo verification failed: " + "; ".join(failed))
    return report
