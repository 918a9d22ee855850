"""Every command's ``--help`` reads well (issue 19): no type noise, Click's usage line, examples.

The commands are found by walking the command tree, so a new command or group is checked without
being listed here. Help is rendered in-process, as ``tests/test_cli.py`` runs the CLI, at a fixed
width and without colour, so the text compared is the text a reader sees.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from importlib.metadata import version
from typing import Annotated, Any

import pytest
import typer
from typer.testing import CliRunner

from cipherspark.cli import _help, app, main

WIDTH = 120
ROOT = typer.main.get_command(app)


def _tree() -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command and group of the CLI with its path (the root's is ``()``)."""

    def walk(path: tuple[str, ...], command: Any) -> Iterator[tuple[tuple[str, ...], Any]]:
        yield path, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk((*path, name), sub)

    yield from walk((), ROOT)


TREE = dict(_tree())
VISIBLE = [path for path, command in TREE.items() if not command.hidden]
# The deploy commands' old top-level names (cli/deploy.py add_aliases): hidden, still working.
HIDDEN = [path for path, command in TREE.items() if command.hidden]


def _id(path: tuple[str, ...]) -> str:
    return "-".join(path) or "cipherspark"


@pytest.fixture(autouse=True)
def stable_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """One width and no colour: Rich reads these when Typer makes the help's console."""
    monkeypatch.setenv("COLUMNS", str(WIDTH))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("TERM", "dumb")


def _help_text(capsys: pytest.CaptureFixture[str], path: tuple[str, ...]) -> str:
    """What ``cipherspark PATH --help`` prints: what cli.main() runs, on the tree built once."""
    # Typer builds the whole tree on every call (~70 ms): once is enough for 60 commands' help.
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        ROOT.main([*path, "--help"], prog_name="cipherspark", standalone_mode=True)
    assert exit_.value.code in (0, None)
    out, err = capsys.readouterr()
    assert err == ""
    return re.sub(r"\x1b\[[0-9;]*m", "", out)  # in case a CI forces a terminal anyway


def _usage(text: str) -> str:
    [line] = [line.strip() for line in text.splitlines() if line.strip().startswith("Usage:")]
    return line


def _flat(text: str) -> str:
    """``text`` without the panels' borders and line breaks: what wraps inside a cell joins."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def _examples(text: str) -> list[str]:
    """The command lines of the ``Examples:`` section (continued lines joined, comments off)."""
    lines = [line.rstrip() for line in text.splitlines()]
    start = [i for i, line in enumerate(lines) if line.strip() == "Examples:"]
    assert start, "no Examples: section"
    commands: list[str] = []
    continued = False
    for line in lines[start[-1] + 1 :]:
        if not line.strip():
            break
        part = re.sub(r"\s+#\s.*$", "", line.strip())  # a shell comment: copy-paste safe
        if continued:
            commands[-1] = f"{commands[-1][:-1].rstrip()} {part}"
        else:
            commands.append(part)
        continued = part.endswith("\\")
    return commands


def _check_common(text: str, path: tuple[str, ...], command: Any) -> None:
    usage = _usage(text)
    assert usage.startswith(" ".join(("Usage: cipherspark", *path)))
    assert not re.search(r"[{}]", usage), usage  # Typer's {src}: Click and man pages say SRC
    for param in command.params:
        if param.param_type_name == "argument":
            assert (param.metavar or param.name.upper()) in usage, usage
    # Typer's own type labels: <bool> on flags, which take no value; <str>, <path>, <int range>.
    assert not re.search(r"<(bool|str|int|float|path|file|dir|list)\b", text), text
    # Docstrings are reStructuredText for the API docs; help is read in a terminal.
    assert "``" not in text
    assert not re.search(r":(func|class|mod|meth|attr|exc|data|obj|ref|doc):`", text)


@pytest.mark.parametrize("path", VISIBLE, ids=_id)
def test_help(capsys: pytest.CaptureFixture[str], path: tuple[str, ...]) -> None:
    command = TREE[path]
    text = _help_text(capsys, path)
    _check_common(text, path, command)
    examples = _examples(text)
    assert examples
    for line in examples:
        line = line.removeprefix('eval "$(')  # a command whose output is for the shell
        assert re.match(re.escape(" ".join(("cipherspark", *path))) + r"( |$)", line), line
    flat = _flat(text)
    for param in command.params:
        if getattr(param, "envvar", None) and not param.hidden:
            assert param.show_envvar, f"{param.opts[0]} reads {param.envvar} without saying so"
            assert f"[env var: {param.envvar}]" in flat


@pytest.mark.parametrize("path", HIDDEN, ids=_id)
def test_hidden_alias_help(capsys: pytest.CaptureFixture[str], path: tuple[str, ...]) -> None:
    text = _help_text(capsys, path)
    _check_common(text, path, TREE[path])
    # The examples show the command's new name, the one to move scripts to.
    new = [p for p in VISIBLE if p and p[-1] == path[-1] and p != path]
    assert new
    for line in _examples(text):
        assert any(line.startswith(" ".join(("cipherspark", *p))) for p in new), line


def test_every_default_is_shown() -> None:
    """An option with a default shows it, as [default: ...] or in its help's own words."""
    for path, command in TREE.items():
        for param in command.params:
            if param.param_type_name != "option" or param.is_flag or param.required:
                continue
            if param.default in (None, "", [], ()):
                continue  # nothing given means none: an optional input, not a default
            said = "default" in (param.help or "").lower()
            assert param.show_default or said, f"{_id(path)} {param.opts[0]} hides its default"


def test_defaults_and_flags_read_as_text(capsys: pytest.CaptureFixture[str]) -> None:
    text = _flat(_help_text(capsys, ("cluster", "start")))
    assert "Master port (default: a free one)." in text  # was "[default: ...]", eaten as markup
    assert "--workers INTEGER [1<=x<=16] Worker processes. [default: 2]" in text
    text = _flat(_help_text(capsys, ("encrypt",)))
    assert "Usage: cipherspark encrypt [OPTIONS] SRC DST" in text
    assert "--overwrite Replace the output if it exists." in text  # no type: a flag
    assert "--to [container|parquet]" in text


def test_help_through_main(capsys: pytest.CaptureFixture[str]) -> None:
    """The entry point renders the same help as the tree the other tests walk."""
    assert main(["encrypt", "--help"]) == 0
    assert capsys.readouterr().out == _help_text(capsys, ("encrypt",))


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"cipherspark {version('cipherspark')}\n"


# -- the classes themselves, on an app of their own -----------------------------------------------


def _toy_app() -> typer.Typer:
    toy = _help.Typer(help="Toy.", epilog=_help.examples("toy go IN"))

    @toy.command(epilog=_help.examples("toy go in.txt", "toy go in.txt out.txt --fast"))
    def go(
        src: Annotated[str, typer.Argument(help="Input.")],
        dst: Annotated[list[str] | None, typer.Argument(help="Outputs.")] = None,
        fast: Annotated[bool, typer.Option("--fast", help="Quick [default: off].")] = False,
    ) -> None:
        """Go from SRC, a docstring's paragraph
        wrapped in the source.

        A [bold]second[/bold] paragraph
        wrapped too."""

    @toy.command()
    def stay() -> None:
        """Stay."""

    return toy


def test_help_classes_render_plain_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(_toy_app(), ["go", "--help"])
    assert result.exit_code == 0, result.output
    text = "\n".join(line.rstrip() for line in result.output.splitlines())
    assert "Usage: root go [OPTIONS] SRC [DST]..." in text
    assert "Go from SRC, a docstring's paragraph wrapped in the source." in text
    assert "A [bold]second[/bold] paragraph wrapped too." in text  # help is never markup
    assert "Quick [default: off]." in text
    assert "<bool>" not in text and "<str>" not in text
    assert re.search(r"^ *Examples:\n {2,}toy go in\.txt\n {2,}toy go in\.txt out\.txt", text, re.M)
    group = CliRunner().invoke(_toy_app(), ["--help"]).output
    assert "Go from SRC, a docstring's paragraph wrapped in the source." in group
