"""The README and docs/tutorial.md run as written: their shell and Python blocks, verbatim, in a
fresh project folder (one for each page).

A newcomer copies the blocks of README.md into a shell in the project folder, one after another.
This test does the same: every block of the flow, Parquet, cluster, KMS-server and Python sections
runs unchanged, in order, with the environment each leaves (exports, the activated venv) carried
to the next, in a folder that holds nothing but the project's ``.venv`` and ``examples/`` (links
to this checkout's). A ``#   text`` comment under a command is what the README says it prints; the
test checks each one appears in the block's output.

Not run here: the set-up block (``make demo`` / ``make test``): CI runs ``make test`` itself, and
``tests/jobs/test_jobs.py`` and ``test_demo_kms_server.py`` run the demo's job.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

# The blocks start Spark, clusters and a KMS server: not part of 'make test-fast'.
pytestmark = [pytest.mark.spark, pytest.mark.servers]

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TUTORIAL = ROOT / "docs" / "tutorial.md"

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
_HEADING = re.compile(r"^## (.+)$", re.M)


@dataclass(frozen=True)
class Block:
    section: str
    language: str
    text: str

    @property
    def says(self) -> list[str]:
        """What the README says the block prints: its ``#   text`` comment lines."""
        return [m.group(1).strip() for m in re.finditer(r"^#   (\S.*)$", self.text, re.M)]


def readme_blocks(text: str) -> list[Block]:
    """Every fenced block of ``text`` with the ``##`` section it is in."""
    headings = [(m.start(), m.group(1).strip()) for m in _HEADING.finditer(text)]
    found = []
    for m in _FENCE.finditer(text):
        section = next((h for pos, h in reversed(headings) if pos < m.start()), "")
        found.append(Block(section, m.group(1), m.group(2)))
    return found


_FLOW = "The flow, step by step"
_SERVERS = "A cluster, a key server, Kubernetes"
_PYTHON = "From Python"
# (section, index of the block within it), in the order a reader runs them.
RUN = [(_FLOW, 0), (_FLOW, 1), (_PYTHON, 0), (_SERVERS, 0), (_SERVERS, 1)]
SKIPPED_SECTIONS = {"Set up: two commands"}


def _by_section(page: Path = README) -> dict[str, list[Block]]:
    sections: dict[str, list[Block]] = {}
    for block in readme_blocks(page.read_text()):
        sections.setdefault(block.section, []).append(block)
    return sections


def _tutorial_run() -> list[tuple[str, int]]:
    """Every block of the tutorial, in page order: all of it is meant to be run."""
    return [
        (section, index)
        for section, blocks in _by_section(TUTORIAL).items()
        for index, block in enumerate(blocks)
        if block.language in ("sh", "python")
    ]


TUTORIAL_RUN = _tutorial_run()


def test_every_runnable_block_is_run() -> None:
    """A block added to the README is either in RUN or in a section named as not run."""
    sections = _by_section()
    listed = {(s, i) for s, i in RUN}
    for section, blocks in sections.items():
        for index, block in enumerate(blocks):
            if block.language in ("sh", "python") and section not in SKIPPED_SECTIONS:
                assert (section, index) in listed, f"README block {index} of {section!r} is not run"
    # The tutorial is run whole; a page of fewer blocks would mean the harness lost some.
    assert len(TUTORIAL_RUN) >= 4


def _project(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    folder = tmp_path_factory.mktemp(name)
    (folder / ".venv").symlink_to(Path(sys.prefix))
    (folder / "examples").symlink_to(ROOT / "examples")
    return folder


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _project(tmp_path_factory, "readme-project")


@pytest.fixture(scope="module")
def tutorial_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _project(tmp_path_factory, "tutorial-project")


def _environment() -> dict[str, str]:
    # A newcomer's shell: none of the test suite's CIPHERSPARK_* settings.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIPHERSPARK_")}
    env.pop("VIRTUAL_ENV", None)
    return env


_failed: dict[Path, str] = {}


# A block runs up to seven Spark commands (each a JVM start): on CI's 2 busy cores one took more
# than pytest's 600 s default (stop 24), so the limit is the block's own 900 s below, plus margin.
@pytest.mark.timeout(1000)
@pytest.mark.parametrize(("section", "index"), RUN, ids=[f"{s}-{i}" for s, i in RUN])
def test_readme_block_runs_as_written(project: Path, section: str, index: int) -> None:
    _run_block(README, project, section, index)


@pytest.mark.timeout(1000)
@pytest.mark.parametrize(
    ("section", "index"), TUTORIAL_RUN, ids=[f"{s}-{i}" for s, i in TUTORIAL_RUN]
)
def test_tutorial_block_runs_as_written(tutorial_project: Path, section: str, index: int) -> None:
    _run_block(TUTORIAL, tutorial_project, section, index)


def _run_block(page: Path, project: Path, section: str, index: int) -> None:
    """Run block ``index`` of ``section`` of ``page`` in ``project``, in the shell state the
    page's earlier blocks left, and check that it prints what the page says it prints."""
    if page in _failed:
        pytest.fail(f"an earlier block failed ({_failed[page]}): this one depends on it")
    block = _by_section(page)[section][index]
    state = project / ".readme-state.sh"
    body = block.text
    if block.language == "python":
        body = f"python - <<'README_PYTHON'\n{body}README_PYTHON\n"
    script = (
        "set -euo pipefail\n"
        f"[ -f {state} ] && source {state}\n"
        f"{body}\n"
        f"export -p > {state}\n"
    )
    proc = subprocess.Popen(
        ["bash", "-c", script],
        cwd=project,
        env=_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=900)
    finally:
        # Background jobs of a non-interactive shell (kms serve &) stay in its process group.
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    if proc.returncode != 0:
        _failed[page] = f"{section} #{index}"
    name = page.name
    assert proc.returncode == 0, f"{name} block {index} of {section!r} failed:\n{output[-4000:]}"
    for line in block.says:
        assert line in output, f"{name} says {line!r} is printed; the output:\n{output[-3000:]}"
