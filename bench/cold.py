"""Cold start: each query as a user runs it, a fresh process per run, cipherspark vs plain Spark.

Issue 18 ("Measure first"). Every timed run is a new process that starts its own interpreter and
its own Spark driver JVM, as a user's command does; the two sides alternate (cipherspark, plain,
cipherspark, plain, ...) so the machine's drift hits both alike, and the medians are compared.

* cipherspark: the CLI on encrypted data in a throwaway ``file://`` keystore (fresh strong
  credentials, the keystore's default scrypt cost): ``cipherspark query simple`` (BigDL's
  reference Simple Query on ``people.csv``) and ``cipherspark sql --table NAME=PATH`` for TPC-H
  Q1, Q6 and Q3 (any of the 22 can be picked), over datasets encrypted with
  ``cipherspark encrypt --schema DDL`` (the column types are recorded in the dataset: nothing is
  inferred). ``fixed`` is ``cipherspark sql "SELECT 1 AS one FROM tiny"`` over a one-row table:
  the fixed cost of a job command (process start to session ready, a trivial job, the encrypted
  write, shutdown).
* plain: a small generated PySpark script per case, ``python script.py``, on the plaintext CSV
  with explicit schemas, writing its result as plaintext CSV, with the same master and Spark
  conf except cipherspark's security settings (``secure_conf(unsafe_without_security=True)``:
  the same log4j configuration, driver address and Python; the UI off on both sides; no
  cipherspark daemon module, jar, session extension or Parquet encryption).
* startup (cipherspark only): ``python -c pass`` (the interpreter alone), ``python -c 'import
  cipherspark.cli'``, ``cipherspark --help`` and ``cipherspark key list`` (issue 18's targets:
  under 0.5 s for the last two).

Where the cipherspark process spends its time: the CLI has no timing facility
(``CIPHERSPARK_DEBUG`` only shows tracebacks), so it is measured from the outside, without
changing cipherspark: the timed cipherspark runs go through a generated launcher that does what
the ``cipherspark`` console script does (``cipherspark.cli.run()``) after installing an import
hook that times the import of the heavy packages and wraps a few of cipherspark's functions
(the pre-Spark KMS and input checks, the scrypt of the keystore, the session, the JVM launch,
the job's steps, Spark's shutdown) with a clock. The plain scripts time the same steps. The
time from process creation to the launcher's first line ("python start") and from its last
line to the process's exit ("exit") are taken by this script. Each step's time is exclusive
(what it contains is its own line), so a run's lines sum to its wall time. Python workers and
the JVM's own threads are not instrumented: their time shows in the step that waits for them.
``--no-breakdown`` times the ``cipherspark`` console script itself instead (no breakdown).
The startup commands, under a second each, run ``--startup-repeats`` times (10).

Data generation, encryption, and one checking run per case are not timed: the checking run
(the ``cipherspark`` console script itself) decrypts cipherspark's result with ``cipherspark
decrypt`` and compares it with the plain script's, value by value; a mismatch aborts.

Prints per case the medians of each side, the ratio cipherspark/plain and the difference, the
per-step medians of both sides; last, ``cold cipherspark/plain geomean: X.XX``.

    .venv/bin/python bench/cold.py
    .venv/bin/python bench/cold.py --repeats 5 --cases fixed simple q1 --json cold.json
"""

from __future__ import annotations

import argparse
import ast
import csv
import datetime
import json
import math
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from cipherspark.spark.session import secure_conf
from tpch import QUERIES, SCHEMAS, generate

KEY = "bench"
PEOPLE_DDL = "name string, age int, job string"
TINY_DDL = "x int"
FIXED_QUERY = "SELECT 1 AS one FROM tiny"
SIMPLE_SQL = "job = 'Developer' AND age BETWEEN 20 AND 40"
#: Issue 18's targets for the commands that start no Spark.
TARGETS = {"help": 0.5, "keylist": 0.5}
STARTUP = ["python", "import", "help", "keylist"]
TPCH = [f"q{n}" for n in range(1, 23)]
DEFAULT_CASES = [*STARTUP, "fixed", "simple", "q1", "q6", "q3"]
TIMES_ENV = "COLD_BENCH_TIMES"

#: The steps of a run, in the order they are printed (a label not listed is printed last).
PHASES = [
    "python start",
    "import cipherspark.cli",
    "import typer/click/rich",
    "import cryptography",
    "KMS + input checks",
    "scrypt (keystore unlock)",
    "import pyspark",
    "import pyarrow/pandas/numpy",
    "JVM start",
    "SparkContext start",
    "write guard check",
    "register data sources",
    "Spark session setup",
    "open tables",
    "plan",
    "count names",
    "query + write",
    "result count",
    "job (other)",
    "stop Spark",
    "other (Python)",
    "exit",
]

# What the launcher times, by module: (function, step). The functions are wrapped right after
# their module is executed, so modules importing them by name get the wrapped ones. A function
# that is not there (renamed) is skipped, and reported.
HOOKS: dict[str, list[tuple[str, str]]] = {
    "cipherspark.cli._spark": [
        ("check_before_spark", "KMS + input checks"),
        ("session", "Spark session setup"),
        ("stop_spark", "stop Spark"),
    ],
    "cipherspark.spark.session": [
        ("_launch_jvm_logging_to", "JVM start"),
        ("_check_guard", "write guard check"),
        ("refuse_rdd_writes", "write guard check"),
    ],
    # PySpark's own, as cipherspark's session calls them.
    "pyspark.sql.session": [("SparkSession.Builder.getOrCreate", "SparkContext start")],
    "pyspark.sql.datasource": [("DataSourceRegistration.register", "register data sources")],
    "cipherspark.kms.local": [("_derive", "scrypt (keystore unlock)")],
    "cipherspark.jobs.sql": [
        ("run_sql", "job (other)"),
        ("read_table", "open tables"),
        ("encrypted_sql", "plan"),
        ("write_encrypted_csv", "query + write"),
        ("written_rows", "result count"),
    ],
    "cipherspark.jobs._simple_query": [
        ("simple_query", "job (other)"),
        ("read_encrypted_csv", "open tables"),
        ("read_encrypted_parquet", "open tables"),
        ("encrypted_sql", "plan"),
        ("count_encrypted_csv", "count names"),
        ("write_encrypted_csv", "query + write"),
        ("written_rows", "result count"),
    ],
}
#: Packages whose import is timed (the outermost import of each group).
IMPORT_GROUPS = {
    "pyspark": "import pyspark",
    "py4j": "import pyspark",
    "pyarrow": "import pyarrow/pandas/numpy",
    "pandas": "import pyarrow/pandas/numpy",
    "numpy": "import pyarrow/pandas/numpy",
    "cryptography": "import cryptography",
    "typer": "import typer/click/rich",
    "click": "import typer/click/rich",
    "rich": "import typer/click/rich",
}
#: Hooks a Spark case's breakdown needs; missing ones are reported (the CLI changed).
NEEDED_HOOKS = {
    "cipherspark.cli._spark.check_before_spark",
    "cipherspark.cli._spark.session",
    "cipherspark.cli._spark.stop_spark",
    "cipherspark.spark.session._launch_jvm_logging_to",
}

# The times file both the launcher and the plain scripts write: a Python literal (no import
# needed to write it), read back with ast.literal_eval.
_PRELUDE = f"""\
import time
_now = time.monotonic
_READY = _now()
import os
import sys
_INTERVALS = []
_HOOKED = []


def _rec(label, start):
    _INTERVALS.append((label, start, _now()))


def _write_times():
    path = os.environ.get({TIMES_ENV!r})
    if path:
        with open(path, "w") as f:
            f.write(repr({{"ready": _READY, "end": _now(), "intervals": _INTERVALS,
                          "hooks": _HOOKED}}))


def _timed(label, fn):
    def timed(*args, **kwargs):
        start = _now()
        try:
            return fn(*args, **kwargs)
        finally:
            _rec(label, start)

    timed.__wrapped__ = fn
    timed.__name__ = getattr(fn, "__name__", label)
    timed.__doc__ = getattr(fn, "__doc__", None)
    return timed
"""

_LAUNCHER = (
    _PRELUDE
    + f'''
_HOOKS = {HOOKS!r}
_GROUPS = {IMPORT_GROUPS!r}
_DEPTH = {{}}


class _Finder:
    """Times the outermost import of each group, and wraps the hooked functions."""

    def find_spec(self, name, path=None, target=None):
        group = _GROUPS.get(name.partition(".")[0])
        hooks = _HOOKS.get(name)
        if hooks is None and (group is None or _DEPTH.get(group)):
            return None
        spec = None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        loader = getattr(spec, "loader", None)
        # Only per-module loaders (files): their instance attribute is this module's alone.
        if loader is None or not hasattr(loader, "path") or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def timed_exec(module):
            outer = group is not None and not _DEPTH.get(group)
            start = _now()
            if outer:
                _DEPTH[group] = 1
            try:
                exec_module(module)
            finally:
                if outer:
                    _DEPTH[group] = 0
                    _rec(group, start)
            for attr, label in hooks or ():
                owner = module
                *path, leaf = attr.split(".")
                for part in path:
                    owner = getattr(owner, part, None)
                fn = getattr(owner, leaf, None)
                if callable(fn):
                    setattr(owner, leaf, _timed(label, fn))
                    _HOOKED.append(name + "." + attr)

        loader.exec_module = timed_exec
        return spec


sys.meta_path.insert(0, _Finder())
sys.argv[0] = "cipherspark"
try:
    _start = _now()
    from cipherspark.cli import run

    _rec("import cipherspark.cli", _start)
    run()  # what the console script runs: main(), Spark's orderly shutdown, sys.exit
finally:
    _write_times()
'''
)

_PLAIN_HEAD = """
_start = _now()
from pyspark.sql import SparkSession
from pyspark.sql.functions import col

_rec("import pyspark", _start)
try:
    import pyspark.core.context as _context

    _context.launch_gateway = _timed("JVM start", _context.launch_gateway)
except (ImportError, AttributeError):
    pass
OUT = sys.argv[1]
_start = _now()
_builder = SparkSession.builder.master({master!r}).appName({app!r})
for _key, _value in {conf!r}.items():
    _builder = _builder.config(_key, _value)
spark = _builder.getOrCreate()
_rec("SparkContext start", _start)
_start = _now()
spark.sparkContext.setLogLevel("ERROR")
_rec("Spark session setup", _start)
"""

_PLAIN_TAIL = """
_start = _now()
spark.stop()
_rec("stop Spark", _start)
_write_times()
"""

_PLAIN_SQL = """
_start = _now()
for _name, (_path, _ddl) in {tables!r}.items():
    spark.read.option("header", "true").schema(_ddl).csv(_path).createOrReplaceTempView(_name)
_rec("open tables", _start)
_start = _now()
result = spark.sql({query!r})
_rec("plan", _start)
_start = _now()
result.write.option("header", "true").csv(OUT)
_rec("query + write", _start)
"""

_PLAIN_SIMPLE = """
_start = _now()
people = spark.read.option("header", "true").schema({ddl!r}).csv({path!r})
_rec("open tables", _start)
_start = _now()
names = people.select("name").count()
_rec("count names", _start)
_start = _now()
selected = people.filter((col("job") == "Developer") & col("age").between(20, 40))
_rec("plan", _start)
_start = _now()
selected.write.option("header", "true").csv(OUT)
_rec("query + write", _start)
_start = _now()
developers = spark.read.option("header", "true").schema({ddl!r}).csv(OUT).count()
_rec("result count", _start)
print(f"names: {{names}}")
print(f"Developers aged 20-40: {{developers}}")
"""


@dataclass
class Run:
    """One process: its wall time (creation to exit), its steps, what it printed."""

    seconds: float
    phases: dict[str, float]
    stdout: str


@dataclass
class Case:
    """A case: the command of each side (plain: none for the startup commands)."""

    name: str
    label: str
    cipherspark: list[str]
    plain: list[str] | None = None
    spark: bool = True
    runs: dict[str, list[Run]] = field(default_factory=dict)
    rows: int | None = None


class Bench:
    """The workdir, the environment of the child processes, and running them."""

    def __init__(self, workdir: Path, master: str, breakdown: bool) -> None:
        self.workdir = workdir
        self.master = master
        self.breakdown = breakdown
        self.python = sys.executable
        exe = Path(sys.executable).parent / "cipherspark"
        found = str(exe) if exe.exists() else shutil.which("cipherspark")
        if found is None:
            raise SystemExit("the cipherspark command is not installed (pip install -e .)")
        self.cli = found
        self.cwd = workdir / "run"  # the CLI's .cipherspark/logs go here
        self.scripts = workdir / "scripts"
        self.logs = workdir / "logs"
        self.out = workdir / "out"
        for folder in (self.cwd, self.scripts, self.logs, self.out):
            folder.mkdir(parents=True)
        self.launcher = self.scripts / "cipherspark_timed.py"
        self.launcher.write_text(_LAUNCHER)
        # Both sides: this environment minus any CIPHERSPARK_* setting of the caller's, the
        # Python and the loopback address secure_session sets for itself.
        base = {k: v for k, v in os.environ.items() if not k.startswith("CIPHERSPARK_")}
        base.pop(TIMES_ENV, None)
        base.setdefault("PYSPARK_PYTHON", sys.executable)
        if master.startswith("local"):
            base.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        self.plain_env = dict(base)
        self.env = {
            **base,
            "CIPHERSPARK_KMS": (workdir / "kms").as_uri(),
            "CIPHERSPARK_APP_ID": "bench-cold",
            # Strong, random, thrown away with the keystore (the keystore refuses weak ones).
            "CIPHERSPARK_API_KEY": secrets.token_urlsafe(32),
            "CIPHERSPARK_KEY": KEY,
            "CIPHERSPARK_MASTER": master,
        }
        self.count = 0

    def cs(self, *args: str) -> list[str]:
        """The CLI's command line: the console script, or the timing launcher."""
        if self.breakdown:
            return [self.python, str(self.launcher), *args]
        return [self.cli, *args]

    def setup(self, *args: str) -> str:
        """Run the ``cipherspark`` console script (not timed); its stdout."""
        return self.run([self.cli, *args], self.env, "setup", timed=False).stdout

    def run(self, command: list[str], env: dict[str, str], tag: str, *, timed: bool) -> Run:
        """Run ``command`` in the workdir; its wall time and steps. Exits on failure."""
        self.count += 1
        log = self.logs / f"{self.count:04d}-{tag}.log"
        times = self.logs / f"{self.count:04d}-{tag}.times" if timed else None
        run_env = dict(env)
        if times is not None:
            run_env[TIMES_ENV] = str(times)
        with log.open("w") as err:
            start = time.monotonic()
            done = subprocess.run(
                command, cwd=self.cwd, env=run_env, stdout=subprocess.PIPE, stderr=err, text=True
            )
            end = time.monotonic()
        if done.returncode != 0:
            self._fail(command, done.returncode, log)
        phases = _phases(times, start, end) if times is not None and times.exists() else {}
        return Run(end - start, phases, done.stdout)

    def _fail(self, command: list[str], code: int, log: Path) -> None:
        shown = " ".join(c if len(c) < 60 else c[:57].replace("\n", " ") + "..." for c in command)
        detail = log.read_text(errors="replace")[-2500:]
        spark_logs = sorted((self.cwd / ".cipherspark" / "logs").glob("*.log"))
        if spark_logs:
            tail = spark_logs[-1].read_text(errors="replace")[-1500:]
            detail += f"\n--- {spark_logs[-1].name} (last Spark log) ---\n{tail}"
        raise SystemExit(f"command failed with exit code {code}: {shown}\n{detail}")


def _phases(times: Path, start: float, end: float) -> dict[str, float]:
    """Each step's exclusive seconds: time inside a step minus the steps it contains.

    The launcher's clock (``time.monotonic``: CLOCK_MONOTONIC, one clock for every process of
    the machine) is this script's, so "python start" and "exit" come from the difference.
    """
    data: dict[str, Any] = ast.literal_eval(times.read_text())
    ready, last = float(data["ready"]), float(data["end"])
    phases = {"python start": ready - start, "exit": end - last}
    intervals = [("other (Python)", ready, last)] + [
        (str(label), float(s), float(e)) for label, s, e in data["intervals"]
    ]
    # Outermost first; an interval is inside the latest one still open at its start.
    intervals.sort(key=lambda iv: (iv[1], -iv[2]))
    own = [iv[2] - iv[1] for iv in intervals]
    stack: list[int] = []
    for i, (_, s, e) in enumerate(intervals):
        while stack and intervals[stack[-1]][2] <= s:
            stack.pop()
        if stack:
            own[stack[-1]] -= e - s
        stack.append(i)
    for (label, _, _), seconds in zip(intervals, own, strict=True):
        phases[label] = phases.get(label, 0.0) + seconds
    phases["_hooks"] = float(len(set(data.get("hooks", [])) & NEEDED_HOOKS))
    return phases


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


# -- data, scripts and cases ----------------------------------------------------------------------


def _plain_script(bench: Bench, name: str, body: str) -> list[str]:
    conf = secure_conf(master=bench.master, unsafe_without_security=True)
    conf.pop("spark.python.daemon.module", None)  # cipherspark's; no Python worker runs anyway
    conf.update({"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false"})
    head = _PLAIN_HEAD.format(master=bench.master, app=f"plain-{name}", conf=conf)
    script = bench.scripts / f"plain_{name}.py"
    script.write_text(_PRELUDE + head + body + _PLAIN_TAIL)
    return [bench.python, str(script)]


def _tables_of(query: str) -> list[str]:
    return [t for t in SCHEMAS if re.search(rf"\b{t}\b", query)]


def _prepare(bench: Bench, names: list[str], rows: int, scale: float) -> list[Case]:
    """Generate and encrypt what the cases need (not timed); the cases, startup ones first."""
    data = bench.workdir / "data"
    enc = bench.workdir / "encrypted"
    data.mkdir()
    enc.mkdir()
    bench.setup("key", "create", KEY)
    cases: list[Case] = []
    py = bench.python
    for name in [n for n in names if n in STARTUP]:
        command = {
            "python": [py, "-c", "pass"],
            "import": [py, "-c", "import cipherspark.cli"],
            "help": bench.cs("--help"),
            "keylist": bench.cs("key", "list"),
        }[name]
        label = {
            "python": "python -c pass",
            "import": "import cipherspark.cli",
            "help": "cipherspark --help",
            "keylist": "cipherspark key list",
        }[name]
        cases.append(Case(name, label, command, spark=False))
    if "fixed" in names:
        (data / "tiny.csv").write_text("x\n1\n")
        bench.setup("encrypt", str(data / "tiny.csv"), str(enc / "tiny.cspk"), "--schema", TINY_DDL)
        body = _PLAIN_SQL.format(
            tables={"tiny": (str(data / "tiny.csv"), TINY_DDL)}, query=FIXED_QUERY
        )
        cases.append(
            Case(
                "fixed",
                "SELECT 1 (fixed cost)",
                bench.cs("sql", FIXED_QUERY, "--table", f"tiny={enc / 'tiny.cspk'}"),
                _plain_script(bench, "fixed", body),
            )
        )
    expected_developers = None
    if "simple" in names:
        people, encrypted = data / "people.csv", enc / "people.cspk"
        started = time.perf_counter()
        said = bench.setup("generate", str(people), "--rows", str(rows), "--seed", "42")
        found = re.search(r"Developers aged 20-40: ([\d,]+)", said)
        expected_developers = int(found.group(1).replace(",", "")) if found else None
        bench.setup("encrypt", str(people), str(encrypted), "--schema", PEOPLE_DDL)
        print(
            f"simple: {rows:,} rows, {people.stat().st_size / 1e6:.1f} MB of CSV, generated and "
            f"encrypted in {time.perf_counter() - started:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        body = _PLAIN_SIMPLE.format(ddl=PEOPLE_DDL, path=str(people))
        cases.append(
            Case(
                "simple",
                f"Simple Query, {rows:,} rows",
                bench.cs("query", "simple", "--input", str(encrypted)),
                _plain_script(bench, "simple", body),
                rows=expected_developers,
            )
        )
    queries = [n for n in names if n in TPCH]
    if queries:
        started = time.perf_counter()
        needed = sorted({t for q in queries for t in _tables_of(QUERIES[q.upper()])})
        tpch = data / "tpch"
        generate(scale, tpch)
        for table in needed:
            bench.setup(
                "encrypt",
                str(tpch / f"{table}.csv"),
                str(enc / f"{table}.cspk"),
                "--schema",
                SCHEMAS[table],
            )
        size = sum((tpch / f"{t}.csv").stat().st_size for t in needed)
        print(
            f"tpch: scale factor {scale:g}, {size / 1e6:.0f} MB of CSV ({', '.join(needed)}) "
            f"generated and encrypted in {time.perf_counter() - started:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        for q in queries:
            query = QUERIES[q.upper()]
            tables = _tables_of(query)
            flags = [a for t in tables for a in ("--table", f"{t}={enc / f'{t}.cspk'}")]
            body = _PLAIN_SQL.format(
                tables={t: (str(tpch / f"{t}.csv"), SCHEMAS[t]) for t in tables}, query=query
            )
            cases.append(
                Case(
                    q,
                    f"TPC-H {q.upper()}, SF {scale:g}",
                    bench.cs("sql", query, *flags),
                    _plain_script(bench, q, body),
                )
            )
    return cases


# -- the answer check -----------------------------------------------------------------------------

_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _value(text: str) -> tuple[str, object]:
    """A CSV field as compared: numbers by value (the two writers may format them apart)."""
    if _NUMBER.fullmatch(text):
        try:
            return ("n", Decimal(text).normalize())
        except InvalidOperation:
            pass
    return ("s", text)


Row = tuple[tuple[str, object], ...]


def _csv_rows(files: list[Path]) -> tuple[list[str], list[Row]]:
    """The header and the rows of CSV files with a header each, in order."""
    header: list[str] = []
    rows: list[Row] = []
    for path in files:
        with path.open(newline="") as f:
            reader = csv.reader(f)
            first = next(reader, None)
            if first is not None:
                header = first
            rows.extend(tuple(_value(v) for v in row) for row in reader)
    return header, rows


def _check(bench: Bench, case: Case) -> None:
    """One untimed run of each side (the console script itself); equal results or exit."""
    assert case.plain is not None
    cs_out = bench.out / f"check-{case.name}-cipherspark"
    plain_out = bench.out / f"check-{case.name}-plain"
    console = [bench.cli, *case.cipherspark[2:]] if bench.breakdown else case.cipherspark
    said = bench.run(
        [*console, "--output", str(cs_out)], bench.env, f"check-{case.name}", timed=False
    )
    plain = bench.run(
        [*case.plain, str(plain_out)], bench.plain_env, f"check-{case.name}-plain", timed=False
    )
    decrypted = bench.out / f"check-{case.name}.csv"
    bench.setup("decrypt", str(cs_out), str(decrypted), "--key", KEY)
    cs_header, cs_rows = _csv_rows([decrypted])
    plain_header, plain_rows = _csv_rows(sorted(plain_out.glob("part-*")))
    problem = None
    if cs_header != plain_header:
        problem = f"columns {cs_header} vs {plain_header}"
    elif cs_rows != plain_rows and sorted(map(repr, cs_rows)) != sorted(map(repr, plain_rows)):
        # Equal as ordered lists or, where the order is Spark's choice (ties), as multisets.
        if len(cs_rows) != len(plain_rows):
            problem = f"{len(cs_rows)} rows vs {len(plain_rows)}"
        else:
            first = next(
                i for i, (a, b) in enumerate(zip(cs_rows, plain_rows, strict=True)) if a != b
            )
            problem = f"{len(cs_rows)} rows each, not the same ones (row {first + 1} first differs)"
    if case.name == "simple" and problem is None:
        counts = [
            re.findall(r"^(names|Developers aged 20-40): (\d+)$", s, re.M)
            for s in (said.stdout, plain.stdout)
        ]
        expected = [("Developers aged 20-40", str(case.rows))] if case.rows is not None else []
        if not counts[0] or counts[0] != counts[1] or not set(expected) <= set(counts[0]):
            problem = f"counts {counts[0]} vs {counts[1]} (generator: {case.rows})"
    if problem is not None:
        raise SystemExit(
            f"{case.name}: cipherspark's result differs from plain PySpark's: {problem}. "
            f"Both results: {decrypted} and {plain_out} (kept only if --workdir was given)"
        )
    case.rows = len(cs_rows)
    print(f"{case.name}: results match ({len(cs_rows)} rows)", flush=True)
    for path in (cs_out, plain_out):
        shutil.rmtree(path)
    decrypted.unlink()


# -- timing and the report ------------------------------------------------------------------------


def _time(bench: Bench, case: Case, repeats: int) -> None:
    """``repeats`` runs of each side, alternating; outputs removed between runs (not timed)."""
    case.runs = {"cipherspark": [], "plain": []}
    for i in range(repeats):
        out = bench.out / f"{case.name}-{i}"
        out.mkdir()
        cs_command = case.cipherspark + (["--output", str(out / "cs")] if case.spark else [])
        case.runs["cipherspark"].append(bench.run(cs_command, bench.env, case.name, timed=True))
        if case.plain is not None:
            command = [*case.plain, str(out / "plain")]
            case.runs["plain"].append(
                bench.run(command, bench.plain_env, f"{case.name}-plain", timed=True)
            )
        shutil.rmtree(out, ignore_errors=True)
    print(f"{case.name}: {repeats} run(s) per side done", file=sys.stderr, flush=True)


def _medians(runs: list[Run]) -> dict[str, float]:
    labels = {label for run in runs for label in run.phases if not label.startswith("_")}
    return {label: statistics.median(r.phases.get(label, 0.0) for r in runs) for label in labels}


def _ordered(labels: set[str]) -> list[str]:
    return [p for p in PHASES if p in labels] + sorted(labels - set(PHASES))


def _report(args: argparse.Namespace, cases: list[Case], load_start: str) -> None:
    print(
        f"cores: {os.cpu_count()}  master: {args.master}  repeats: {args.repeats} per side "
        f"({args.startup_repeats} for the startup commands), each a fresh process (medians)  "
        f"load average: {load_start} at the start, "
        f"{_load()} at the end"
    )
    if os.environ.get("SPARK_SUBMIT_OPTS"):
        print(f"SPARK_SUBMIT_OPTS={os.environ['SPARK_SUBMIT_OPTS']} (both sides' JVMs)")
    figures: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "cores": os.cpu_count(),
        "load_start": load_start,
        "load_end": _load(),
        "repeats": args.repeats,
        "startup_repeats": args.startup_repeats,
        "rows": args.rows,
        "scale": args.scale,
        "master": args.master,
        "cases": {},
    }
    ratios: list[float] = []
    for case in cases:
        cs_runs, plain_runs = case.runs["cipherspark"], case.runs.get("plain", [])
        cs = statistics.median(r.seconds for r in cs_runs)
        result: dict[str, Any] = {
            "label": case.label,
            "cipherspark": cs,
            "cipherspark_runs": [r.seconds for r in cs_runs],
            "breakdown": {"cipherspark": _medians(cs_runs)},
        }
        if plain_runs:
            plain = statistics.median(r.seconds for r in plain_runs)
            ratio = cs / plain
            ratios.append(ratio)
            result.update(
                plain=plain,
                plain_runs=[r.seconds for r in plain_runs],
                ratio=ratio,
                rows=case.rows,
            )
            result["breakdown"]["plain"] = _medians(plain_runs)
            print(
                f"{case.name:<7} cipherspark {cs:6.2f} s  plain {plain:6.2f} s  "
                f"ratio {ratio:.2f}  difference {cs - plain:+.2f} s  ({case.label}; "
                f"results match, {case.rows} rows)"
            )
        elif case.name in TARGETS:
            target = TARGETS[case.name]
            verdict = "met" if cs < target else "NOT met"
            result["target"] = target
            print(
                f"{case.name:<7} cipherspark {cs:6.2f} s  target < {target:.2f} s: {verdict}  "
                f"({case.label})"
            )
        else:
            print(f"{case.name:<7} {cs:6.2f} s  ({case.label})")
        if args.no_breakdown:
            figures["cases"][case.name] = result
            continue
        if case.spark and any(r.phases.get("_hooks", 0) < len(NEEDED_HOOKS) for r in cs_runs):
            print(
                "        (some of the launcher's hooks were not found: the CLI changed; "
                "the missing steps' time is in 'other (Python)')"
            )
        sides = result["breakdown"]
        if sides["cipherspark"]:
            labels = _ordered(set().union(*(set(s) for s in sides.values())))
            names = list(sides)
            print("        step (medians, s)           " + "".join(f"{n:>12}" for n in names))
            for label in labels:
                if all(round(side.get(label, 0.0), 2) == 0 for side in sides.values()):
                    continue  # a step of no measurable time (e.g. stopping no Spark)
                cells = "".join(
                    f"{sides[n][label]:12.2f}" if label in sides[n] else f"{'-':>12}" for n in names
                )
                print(f"        {label:<28}{cells}")
        figures["cases"][case.name] = result
    if ratios:
        geomean = math.exp(statistics.mean(math.log(r) for r in ratios))
        figures["geomean"] = geomean
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=1))
    if ratios:
        print(f"cold cipherspark/plain geomean: {figures['geomean']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side and case")
    parser.add_argument(
        "--startup-repeats",
        type=int,
        default=10,
        help="timed runs of each startup command (python, import, help, keylist: under a "
        "second each, so more of them for a stable median)",
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="Simple Query rows")
    parser.add_argument("--scale", type=float, default=0.1, help="TPC-H scale factor")
    parser.add_argument(
        "--cases",
        nargs="+",
        default=DEFAULT_CASES,
        choices=[*STARTUP, "fixed", "simple", *TPCH],
        metavar="CASE",
        help=f"any of {', '.join(STARTUP)}, fixed, simple, q1 ... q22 "
        f"(default: {' '.join(DEFAULT_CASES)})",
    )
    parser.add_argument("--master", default="local[*]", help="both sides' Spark master")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="a new or empty folder for the data, kept at the end (default: a temporary folder, "
        "removed at the end)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument(
        "--no-breakdown",
        action="store_true",
        help="time the cipherspark console script itself, without the timing launcher",
    )
    args = parser.parse_args()
    if args.repeats < 1 or args.startup_repeats < 1:
        parser.error("--repeats and --startup-repeats must be 1 or more")
    if args.rows < 1 or args.scale <= 0:
        parser.error("--rows and --scale must be positive")
    names = list(dict.fromkeys(args.cases))
    if args.workdir is not None:
        if args.workdir.exists() and any(args.workdir.iterdir()):
            parser.error(f"--workdir {args.workdir} is not empty")
        workdir = args.workdir.absolute()
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="cipherspark-cold-"))
    load_start = _load()
    try:
        bench = Bench(workdir, args.master, breakdown=not args.no_breakdown)
        cases = _prepare(bench, names, args.rows, args.scale)
        for case in cases:
            if case.plain is not None:
                _check(bench, case)
        for case in cases:
            _time(bench, case, args.repeats if case.spark else args.startup_repeats)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    _report(args, cases, load_start)


if __name__ == "__main__":
    main()
