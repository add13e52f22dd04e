from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from harness import registry as registry_module
from harness.api import Scorer
from harness.errors import DuplicateNameError, HarnessError, UnknownNameError
from harness.registry import BENCHMARKS, SCORERS, Registry


def make_registry() -> Registry:
    r = Registry("scorer", "no-plugin-table-has-this-section", base="harness.api:Scorer")
    r.add("clip", "models.clip:ClipScorer", "CLIP")
    return r


def test_lazy_entry_resolves_to_scorer_subclass():
    cls = make_registry().get("clip")
    assert issubclass(cls, Scorer)
    assert cls.family == "clip"


def test_unknown_name_lists_valid_names_and_suggests_the_closest():
    with pytest.raises(UnknownNameError) as err:
        make_registry().get("clpi")
    message = str(err.value)
    assert "'clpi'" in message and "Did you mean 'clip'?" in message and "Valid scorers: clip" in message


def test_unknown_name_without_close_match_still_lists_names():
    with pytest.raises(UnknownNameError, match="Valid scorers: clip") as err:
        make_registry().get("zzzzzz")
    assert "Did you mean" not in str(err.value)


def test_duplicate_names_are_refused():
    r = make_registry()
    with pytest.raises(DuplicateNameError, match="already registered"):
        r.add("clip", "models.clip:Other", "again")


def test_entry_that_is_not_a_subclass_is_refused():
    r = make_registry()
    r.add("bad", "harness.api:Item", "not a scorer")
    with pytest.raises(HarnessError, match="not a subclass of harness.api:Scorer"):
        r.get("bad")


class _Dist:
    def __init__(self, name):
        self.name = name


def test_plugin_tables_are_read_own_first_and_a_taken_name_is_refused_with_a_warning(monkeypatch):
    """Built-ins and third-party plug-ins are declared the same way: a table named by an entry point."""
    import types

    tables = {
        "own_table": {"scorers": {"clip": ("models.clip:ClipScorer", "CLIP")}},
        "their_table": {"scorers": {"clip": ("somewhere.else:Clip", "theirs"),
                                    "myscorer": ("models.clip:ClipScorer", "mine")}},
    }
    module = types.ModuleType("fake_plugins")
    module.__dict__.update(tables)
    monkeypatch.setitem(__import__("sys").modules, "fake_plugins", module)
    points = [  # a third-party package listed before this harness: its table is still read second
        EntryPoint("theirs", "fake_plugins:their_table", "harness.plugins")._for(_Dist("another-package")),
        EntryPoint("ours", "fake_plugins:own_table", "harness.plugins")._for(_Dist(registry_module.OWN_DISTRIBUTION)),
    ]
    singles = [EntryPoint("single", "models.clip:ClipScorer", "harness.scorers")._for(_Dist("single-package"))]
    monkeypatch.setattr(registry_module, "entry_points",
                        lambda group: {"harness.plugins": points, "harness.scorers": singles}.get(group, []))
    registry_module.plugin_tables.cache_clear()
    try:
        r = Registry("scorer", "scorers", base="harness.api:Scorer", single_group="harness.scorers")
        with pytest.warns(UserWarning, match="ignoring plug-in.*'clip' is already registered"):
            names = r.names()
        assert names == ["clip", "myscorer", "single"]
        assert r.entry("clip").origin == registry_module.OWN_DISTRIBUTION and r.entry("clip").summary == "CLIP"
        assert r.entry("myscorer").origin == "another-package"
        assert r.get("myscorer").family == "clip" and r.get("single").family == "clip"
    finally:
        registry_module.plugin_tables.cache_clear()


def test_commands_are_functions_or_typer_apps():
    from harness.registry import COMMANDS

    assert {"finetune", "toy"} <= set(COMMANDS.names())
    r = Registry("command", "no-such-section", check=callable, expected="a function or a typer app")
    r.add("bad", "harness.registry:PLUGIN_GROUP", "a string, not a command")
    with pytest.raises(HarnessError, match="not a function or a typer app"):
        r.get("bad")


def test_builtin_registries_hold_the_spine():
    assert "clip" in SCORERS.names()
    assert "winoground" in BENCHMARKS.names()
