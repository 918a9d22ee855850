"""How ``cipherspark ... --help`` reads: the Typer classes every app of the CLI is built with.

Typer (0.29, rendering through its own copy of Click) prints, left alone:

* ``Usage: cipherspark encrypt [OPTIONS] {src} {dst}``: a required argument in braces (its
  ``TyperArgument._usage_display_name``), where Click and every man page write ``SRC DST``;
* a type column of ``<bool>`` for flags, which take no value (``rich_utils`` asks every option
  for ``display_type_rich``, flag or not), and ``<str>`` / ``<path>`` / ``<int range>`` for the
  others, while an argument's column ignores its ``metavar``;
* a docstring's line breaks inside its paragraphs (Rich markup mode keeps them, so paragraphs
  come out ragged, and the first one breaks mid-sentence in the group's command list);
* text in ``[lowercase brackets]`` eaten as Rich markup (``[default: a free one]`` vanished).

:class:`Typer` builds groups as :class:`Group` and commands as :class:`Command`, which fix that
on their own parameters as they are made: arguments read ``SRC``, ``[DST]``, ``[ARGS]...``,
flags show no type, values show Click's words (``TEXT``, ``PATH``, ``INTEGER``, ``[a|b]``) unless
they name a ``metavar`` of their own, paragraphs are reflowed and help is escaped, never markup.
Nothing here changes what a command accepts: only the text of its help and usage lines.

:func:`examples` writes the ``Examples:`` epilog every command and group ends with.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from pathlib import PurePath
from typing import Any, get_args, get_origin

import typer
from rich.markup import escape
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption
from typer.models import CommandFunctionType

__all__ = ["Command", "Group", "Typer", "examples"]

# Click's words for a value's type, the ones its own help prints.
_TYPE_WORDS: dict[type, str] = {str: "TEXT", int: "INTEGER", float: "FLOAT"}


def examples(*lines: str) -> str:
    """An ``Examples:`` epilog: each line a command line to copy, shown as a line of its own."""
    # Rich markup mode prints an epilog's lines as they are, after inspect.cleandoc(), which
    # strips the indentation the lines after the first share: the leading newline makes the
    # unindented heading one of them, so the commands keep theirs.
    return "\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


def _type_word(param: TyperArgument | TyperOption) -> str | None:
    """``TEXT``, ``PATH``, ``INTEGER``, ``[a|b]``...; ``None`` to leave Typer's own label."""
    # Typer records the parameter's annotation (Optional taken off) in its type descriptor; a
    # Typer without one gets its own label, which tests/test_cli_help.py would then catch.
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    if get_origin(annotation) is list:
        (annotation,) = get_args(annotation)  # a repeatable option: the type of one value
    if not isinstance(annotation, type):
        return None
    if issubclass(annotation, enum.Enum):
        return "[" + "|".join(str(member.value) for member in annotation) + "]"
    if issubclass(annotation, PurePath):
        return "PATH"
    return _TYPE_WORDS.get(annotation)


class _Argument(TyperArgument):
    @property
    def display_name_raw(self) -> str:
        # The name in the usage line and the panel: SRC, as Click and the help's prose write it.
        return self.metavar or (self.name or "").upper()

    def get_error_hint(self, *ctx: Any) -> str:
        # Errors name the parameter as they always have ("Missing argument 'dst'"): only the
        # help changes. (*ctx: Click passes the context, Typer 0.29's copy of it does not.)
        return f"'{self.metavar or self.name}'"

    def display_type_rich(self, ctx: Any) -> str | None:
        return _type_word(self) or super().display_type_rich(ctx)

    def get_usage_pieces(self, ctx: Any) -> list[str]:
        # Click's way: SRC when required, [DST] when not, a trailing ... when repeatable.
        name = self.display_name_raw
        if not self.required:
            name = f"[{name}]"
        if self.nargs != 1 and not name.endswith("..."):
            name += "..."
        return [name]


class _Option(TyperOption):
    def display_type_rich(self, ctx: Any) -> str | None:
        if self.metavar is not None:
            return self.metavar
        if self.is_flag or self.count:
            return None  # nothing to type after a flag
        return _type_word(self) or super().display_type_rich(ctx)


def _adopt(param: object) -> None:
    """Make one of Typer's parameters one of the classes above (help and usage only)."""
    # Typer makes its parameters itself, with no hook for their class: the command takes them
    # over, once. The subclasses add no state and override only how the help shows them.
    if isinstance(param, TyperArgument) and not isinstance(param, _Argument):
        param.__class__ = _Argument
    elif isinstance(param, TyperOption) and not isinstance(param, _Option):
        param.__class__ = _Option


def _reflow(text: str | None) -> str | None:
    """``text`` with each paragraph on one line, for Rich to wrap to the terminal's width."""
    if text is None:
        return None
    paragraphs = text.split("\n\n")
    # A paragraph that starts with \b is Click's "keep these lines as they are".
    return "\n\n".join(
        p if p.startswith("\b") else " ".join(line.strip() for line in p.splitlines())
        for p in paragraphs
    )


def _plain(text: str | None) -> str | None:
    # Help is plain text: Typer renders it as Rich markup, where "[default: x]" is a tag.
    return None if text is None else escape(text)


def _tidy(command: TyperCommand | TyperGroup) -> None:
    command.help = _plain(_reflow(command.help))
    command.epilog = _plain(command.epilog)
    for param in command.params:
        _adopt(param)
        if isinstance(param, TyperArgument | TyperOption):
            param.help = _plain(param.help)


class Command(TyperCommand):
    """A Typer command whose help and usage line read like Click's (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _tidy(self)

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        _adopt(option)  # made on first use, not in params: a flag like the others
        return option


class Group(TyperGroup):
    """A Typer group whose help reads like :class:`Command`'s."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _tidy(self)

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        _adopt(option)
        return option


class Typer(typer.Typer):
    """``typer.Typer`` that builds its groups as :class:`Group` and commands as
    :class:`Command` unless given another ``cls``."""

    def __init__(self, *, cls: type[TyperGroup] | None = Group, **kwargs: Any) -> None:
        super().__init__(cls=cls, **kwargs)

    def command(
        self, name: str | None = None, *, cls: type[TyperCommand] | None = Command, **kwargs: Any
    ) -> Callable[[CommandFunctionType], CommandFunctionType]:
        return super().command(name, cls=cls, **kwargs)
