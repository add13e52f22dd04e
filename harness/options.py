"""Declared plug-in options: every scorer and benchmark lists its options with a type, a default
and one line of help; the engine validates what a user gives (``--opt``, ``--bench-opt``, or a
Python dict) in one place, with one message format, and ``harness ls NAME`` prints the list.

An option type is a callable that turns a given value (a string from the command line, or an
already typed value from Python) into the typed value, raising ``ValueError`` with the reason when
it cannot; its ``label`` says what it accepts. Converting an already converted value returns it
unchanged, so resolving twice is harmless.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from harness.errors import HarnessError

TRUE_WORDS = ("true", "on", "yes", "1")
FALSE_WORDS = ("false", "off", "no", "0")


class OptionType(Protocol):
    label: str

    def __call__(self, value: Any) -> Any: ...


class Int:
    """A whole number, optionally bounded."""

    def __init__(self, minimum: int | None = None, maximum: int | None = None) -> None:
        self.minimum, self.maximum = minimum, maximum
        bounds = [f">= {minimum}" if minimum is not None else "", f"<= {maximum}" if maximum is not None else ""]
        self.label = "int" + "".join(f" {b}" for b in bounds if b)

    def __call__(self, value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError("expected a whole number, got a boolean")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        try:
            number = value if isinstance(value, int) else int(str(value).strip())
        except ValueError:
            raise ValueError(f"expected a whole number, got {value!r}") from None
        if self.minimum is not None and number < self.minimum:
            raise ValueError(f"must be at least {self.minimum}, got {number}")
        if self.maximum is not None and number > self.maximum:
            raise ValueError(f"must be at most {self.maximum}, got {number}")
        return number


class Float:
    """A finite real number, optionally bounded."""

    def __init__(self, minimum: float | None = None, maximum: float | None = None) -> None:
        self.minimum, self.maximum = minimum, maximum
        bounds = [f">= {minimum:g}" if minimum is not None else "", f"<= {maximum:g}" if maximum is not None else ""]
        self.label = "float" + "".join(f" {b}" for b in bounds if b)

    def __call__(self, value: Any) -> float:
        if isinstance(value, bool):
            raise ValueError("expected a number, got a boolean")
        try:
            number = float(value if isinstance(value, (int, float)) else str(value).strip())
        except ValueError:
            raise ValueError(f"expected a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ValueError(f"must be a finite number, got {value!r}")
        if self.minimum is not None and number < self.minimum:
            raise ValueError(f"must be at least {self.minimum:g}, got {number:g}")
        if self.maximum is not None and number > self.maximum:
            raise ValueError(f"must be at most {self.maximum:g}, got {number:g}")
        return number


class Bool:
    """true/false (also on/off, yes/no, 1/0)."""

    label = "true|false"

    def __call__(self, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in TRUE_WORDS:
            return True
        if text in FALSE_WORDS:
            return False
        raise ValueError(f"expected true or false (on/off, yes/no, 1/0), got {value!r}")


class Choice:
    """One of a fixed set of words."""

    def __init__(self, *choices: str) -> None:
        self.choices = choices
        self.label = "|".join(choices)

    def __call__(self, value: Any) -> str:
        text = str(value).strip()
        if text not in self.choices:
            raise ValueError(f"expected one of {', '.join(self.choices)}, got {value!r}")
        return text


class Text:
    """Any non-empty string."""

    label = "text"

    def __call__(self, value: Any) -> str:
        text = str(value).strip()
        if not text:
            raise ValueError("expected a non-empty value")
        return text


class FilePath:
    """A path on this machine (existence is checked where the file is used, with a message that
    says what it should hold)."""

    label = "path"

    def __call__(self, value: Any) -> Path:
        if isinstance(value, Path):
            return value
        text = str(value).strip()
        if not text:
            raise ValueError("expected a path")
        return Path(text).expanduser()


@dataclass(frozen=True)
class Option:
    """One declared option of a plug-in or a command. ``default`` None means "not set" (the
    plug-in then derives a value, as its help says). ``cli`` is the command-line flag of a
    command's option when it is not ``--name-with-dashes``."""

    name: str
    type: OptionType
    default: Any
    help: str
    cli: str | None = None

    @property
    def flag(self) -> str:
        return self.cli or "--" + self.name.replace("_", "-")


def resolve_options(declared: Sequence[Option], given: Mapping[str, Any] | None, what: str,
                    flag: str | None) -> dict[str, Any]:
    """Typed values of every declared option: the given ones converted, the rest their defaults.

    ``what`` names the plug-in ("scorer clip") or command ("harness finetune"); ``flag`` is how the
    user sets a plug-in's options ("--opt"), or None for a command whose options are its own flags.
    Unknown names and unconvertible values raise HarnessError naming the option, the value, what
    is valid, and the option's help.
    """
    by_name = {o.name: o for o in declared}
    given = dict(given or {})
    unknown = sorted(set(given) - set(by_name))
    if unknown:
        where = f" (see `harness ls {what.split()[-1]}`)" if flag else ""
        raise HarnessError(f"{flag + ' ' if flag else ''}{', '.join(unknown)}: not an option of {what}; "
                           f"valid: {', '.join(by_name) or '(none)'}{where}")
    out: dict[str, Any] = {}
    for option in declared:
        if option.name not in given or given[option.name] is None:
            out[option.name] = option.default
            continue
        try:
            out[option.name] = option.type(given[option.name])
        except ValueError as err:
            shown = f"{flag} {option.name}" if flag else option.flag
            raise HarnessError(f"{shown}={given[option.name]!r} for {what}: {err}. "
                               f"{option.name} ({option.type.label}): {option.help}") from None
    return out


def parse_pairs(pairs: Iterable[str], flag: str) -> dict[str, str]:
    """``["key=value", ...]`` from the command line as a dict (values stay strings)."""
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise HarnessError(f"{flag} {pair!r} must look like key=value")
        options[key.strip()] = value.strip()
    return options


def describe_options(declared: Sequence[Option]) -> list[tuple[str, str, str, str]]:
    """(name, type, default, help) rows for ``harness ls NAME``."""
    return [(o.name, o.type.label, "(derived)" if o.default is None else _show(o.default), o.help) for o in declared]


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
