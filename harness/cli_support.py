"""What every `harness` command shares, the engine's and the plug-ins' alike: turning user errors
into a message and exit code 2, Ctrl-C into exit code 130, and comma-separated lists into tuples.
Importing it is cheap (typer only)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import typer

from harness.errors import HarnessError


@contextmanager
def user_errors(interrupted: str = "the scores computed so far are stored; rerun the same command to resume."
                ) -> Iterator[None]:
    """Input problems end with their message and exit code 2, no traceback; Ctrl-C with exit code
    130 and ``interrupted`` (what was kept and how to go on)."""
    try:
        yield
    except HarnessError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        from harness import interrupts

        interrupts.clear()
        typer.echo(f"\ninterrupted: {interrupted}", err=True)
        raise typer.Exit(130) from None


def csv_list(text: str, cast: Callable[[str], Any] = str) -> tuple:
    """"0,1, 2" -> (0, 1, 2) with ``cast``; a bad element raises HarnessError naming it."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            out.append(cast(part))
        except ValueError:
            raise HarnessError(f"{part!r} in {text!r} is not a valid value") from None
    return tuple(out)
