"""How the `lossbench` command presents itself: help without types after flags, `SUITE` in usage lines, choices and
completion of enumerated options, standard streams every command can write to, the consoles, and errors turned
into a red message and exit code 2."""

from __future__ import annotations

import os
import sys
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperArgument, TyperCommand, TyperGroup

from lossbench.errors import LossbenchError


class _FlagsShownAsFlags:
    """A flag such as --force takes no value, so help shows no type after it (typer would print `<bool>`)."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
        return params


class Group(_FlagsShownAsFlags, TyperGroup):
    """The `lossbench` command group."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            end_on_closed_pipe()


#: Exit code when the reader of the output went away (`lossbench run S | head -1`): 128 + SIGPIPE, as a command
#: that the signal ends reports itself.
EXIT_CLOSED_PIPE = 141


def end_on_closed_pipe() -> None:
    """End quietly because whoever read stdout stopped reading. Finished cells are already saved (each is written
    before it is shown), so the same command resumes. Python's own flush of stdout at exit would fail again and
    print a complaint: stdout is pointed at /dev/null first."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError, AttributeError):  # stdout without a descriptor (a test's capture): nothing to flush
        pass
    raise SystemExit(EXIT_CLOSED_PIPE)


def usable_std_streams() -> None:
    """Standard streams every command can write to, whatever the shell gave it.

    A closed descriptor (`lossbench run S >&-`) gets /dev/null: left closed, the next file opened (the results
    lock, a cell file) would take its number and receive what was meant for the terminal. A stream whose encoding
    cannot hold a character (PYTHONIOENCODING=ascii) prints '?' for it instead of stopping the command.
    """
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)  # the lowest free descriptor: this one, when those below are open
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            setattr(sys, name, open(fd, mode, encoding="utf-8", closefd=False))
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="replace")  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):  # not a text file of the io module (a test's capture)
            pass


class Command(_FlagsShownAsFlags, TyperCommand):
    """A subcommand; usage reads `run [OPTIONS] SUITE` instead of typer's `{suite}`."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument) and param.required:
                pieces.append(param.display_name_raw)
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces

def choices(values: list[str]) -> str:
    """The help's placeholder for an enumerated option, e.g. `[auto|cpu|cuda|mps]`."""
    return "[" + "|".join(values) + "]"


def completer(values: list[str]) -> Any:
    """Shell completion of an enumerated option: the values starting with what was typed."""
    def complete(incomplete: str) -> list[str]:
        return [v for v in values if v.startswith(incomplete)]
    return complete


# Logs and pipes get a wide console so that tables keep one line per cell.
usable_std_streams()
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def fail(exc: LossbenchError, debug: bool) -> None:
    """End the command with `exc` as a red message and exit code 2 (with `debug`, raise it: its traceback)."""
    if debug:
        raise exc
    # The message is text, not markup: `lossbench[ray]` or `[hflip, crop]` must print as written.
    err_console.print(f"[bold red]error:[/] {escape(exc.render())}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(2)
