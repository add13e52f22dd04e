from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from harness import registry as registry_module
from harness.api import Scorer
from harness.errors import DuplicateNameError, HarnessError, UnknownNameError
from harness.registry import BENCHMARKS, SCORERS, Registry


def make_registry() -> Registry:
    r = Registry("scorer", "harness.api:Scorer", "harness.test-nothing-registered-here")
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


def test_entry_points_add_plugins_and_duplicates_are_ignored_with_a_warning(monkeypatch):
    plugins = [
        EntryPoint("myscorer", "models.clip:ClipScorer", "harness.scorers"),
        EntryPoint("clip", "somewhere.else:Clip", "harness.scorers"),
    ]
    monkeypatch.setattr(registry_module, "entry_points", lambda group: plugins)
    r = Registry("scorer", "harness.api:Scorer", "harness.scorers")
    r.add("clip", "models.clip:ClipScorer", "CLIP")
    with pytest.warns(UserWarning, match="ignoring plug-in.*'clip' is already registered"):
        names = r.names()
    assert names == ["clip", "myscorer"]
    assert r.entry("clip").origin == "built-in"
    assert r.get("myscorer").family == "clip"


def test_builtin_registries_hold_the_spine():
    assert "clip" in SCORERS.names()
    assert "winoground" in BENCHMARKS.names()
