"""Name -> plug-in registries, filled from plug-in tables and imported lazily.

Every plug-in, built-in or third-party, is declared the same way: a package owns a table

    PLUGINS = {
        "scorers":    {"clip": ("models.clip:ClipScorer", "one line for `harness ls`")},
        "benchmarks": {...},
        "commands":   {"finetune": ("models.commands:finetune", "one line")},
    }

and names it in its ``pyproject.toml`` under the entry-point group ``harness.plugins``
(``models = "models:PLUGINS"``). Entries are ``"module:object"`` strings, so listing them
(``harness ls``) imports only the small modules that hold the tables, never torch. The single-class
entry-point groups ``harness.scorers`` and ``harness.benchmarks`` (``name = "pkg.mod:Class"``) are
read too. This harness's own tables are read first; a later plug-in whose name is taken is refused
with a warning.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from harness.errors import DuplicateNameError, HarnessError, UnknownNameError

T = TypeVar("T")

PLUGIN_GROUP = "harness.plugins"
OWN_DISTRIBUTION = "compo-harness"


@dataclass(frozen=True)
class Entry:
    name: str
    target: str  # "module:object"
    summary: str
    origin: str  # the distribution that declares the plug-in, or "added in code"


class Registry(Generic[T]):
    """A registry of one kind of plug-in (``table_key`` in the plug-in tables).

    ``base`` is the "module:Class" every entry must subclass (scorers, benchmarks); commands
    pass ``check`` instead, a test of the imported object.
    """

    def __init__(self, kind: str, table_key: str, base: str | None = None,
                 check: Callable[[Any], bool] | None = None, single_group: str | None = None,
                 expected: str = "") -> None:
        self.kind = kind  # "scorer", "benchmark" or "command", used in messages
        self._table_key = table_key
        self._base = base
        self._check = check
        self._single_group = single_group
        self._expected = expected or (f"a subclass of {base}" if base else "a plug-in object")
        self._entries: dict[str, Entry] = {}
        self._plugins_read = False

    def add(self, name: str, target: str, summary: str, origin: str = "added in code") -> None:
        if ":" not in target:
            raise ValueError(f"{self.kind} {name!r}: target {target!r} must look like 'module:object'")
        if name in self._entries:
            other = self._entries[name]
            raise DuplicateNameError(
                f"{self.kind} name {name!r} is already registered ({other.target}, {other.origin}); "
                f"refusing {target} ({origin}). Pick another name."
            )
        self._entries[name] = Entry(name, target, summary, origin)

    def _read_plugins(self) -> None:
        if self._plugins_read:
            return
        self._plugins_read = True
        declared: list[tuple[str, str, str, str]] = []  # (name, target, summary, origin)
        for origin, table in plugin_tables():
            section = table.get(self._table_key, {})
            if not isinstance(section, dict):
                warnings.warn(f"ignoring plug-in table of {origin}: {self._table_key!r} is not a dict", stacklevel=2)
                continue
            for name, value in section.items():
                if not (isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, str) for v in value)):
                    warnings.warn(f"ignoring {self.kind} {name!r} of {origin}: expected (\"module:object\", "
                                  f"\"summary\"), got {value!r}", stacklevel=2)
                    continue
                declared.append((name, value[0], value[1], origin))
        if self._single_group:
            for ep in sorted(entry_points(group=self._single_group), key=lambda e: e.name):
                dist = ep.dist.name if ep.dist is not None else "an installed package"
                declared.append((ep.name, ep.value, f"plug-in from {dist}", dist))
        for name, target, summary, origin in declared:
            try:
                self.add(name, target, summary, origin=origin)
            except (DuplicateNameError, ValueError) as err:
                warnings.warn(f"ignoring plug-in: {err}", stacklevel=2)

    def entries(self) -> list[Entry]:
        self._read_plugins()
        return sorted(self._entries.values(), key=lambda e: e.name)

    def names(self) -> list[str]:
        return [e.name for e in self.entries()]

    def entry(self, name: str) -> Entry:
        self._read_plugins()
        if name not in self._entries:
            raise UnknownNameError(unknown_name_message(self.kind, name, self.names()))
        return self._entries[name]

    def get(self, name: str) -> T:
        """Import and return the object registered under ``name``."""
        entry = self.entry(name)
        obj = _import(entry.target)
        if self._base is not None:
            base = _import(self._base)
            ok = isinstance(obj, type) and issubclass(obj, base)
        else:
            ok = self._check(obj) if self._check else True
        if not ok:
            raise HarnessError(f"{self.kind} {name!r} points at {entry.target} ({entry.origin}), "
                               f"which is not {self._expected}.")
        return obj  # type: ignore[return-value]


@functools.cache
def plugin_tables() -> tuple[tuple[str, dict[str, Any]], ...]:
    """(distribution, table) of every ``harness.plugins`` entry point, this harness's own first."""
    found = []
    for ep in entry_points(group=PLUGIN_GROUP):
        dist = ep.dist.name if ep.dist is not None else "an installed package"
        found.append((dist != OWN_DISTRIBUTION, dist, ep.name, ep))
    tables = []
    for _, dist, name, ep in sorted(found, key=lambda f: f[:3]):
        try:
            table = ep.load()
        except Exception as err:  # a broken third-party package must not take the harness down
            warnings.warn(f"ignoring plug-in table {name} = {ep.value} of {dist}: {type(err).__name__}: {err}",
                          stacklevel=2)
            continue
        if not isinstance(table, dict):
            warnings.warn(f"ignoring plug-in table {name} = {ep.value} of {dist}: not a dict", stacklevel=2)
            continue
        tables.append((dist, table))
    return tuple(tables)


def unknown_name_message(kind: str, name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"unknown {kind} {name!r}.{hint} Valid {kind}s: {', '.join(valid) or '(none)'}."


def _import(target: str) -> object:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise HarnessError(f"cannot import {module_name!r} for {target}: {err}") from err
    try:
        return getattr(module, attr)
    except AttributeError as err:
        raise HarnessError(f"{module_name} has no attribute {attr!r} (registered as {target})") from err


def _is_command(obj: Any) -> bool:
    """A plug-in command is a function (one command) or a typer app (a group of commands)."""
    return callable(obj)


SCORERS: Registry = Registry("scorer", "scorers", base="harness.api:Scorer", single_group="harness.scorers")
BENCHMARKS: Registry = Registry("benchmark", "benchmarks", base="harness.api:Benchmark",
                                single_group="harness.benchmarks")
COMMANDS: Registry = Registry("command", "commands", check=_is_command,
                              expected="a function or a typer app")
