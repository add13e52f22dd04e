"""Name -> plug-in class registries, filled explicitly and imported lazily.

Entries are ``"module:Class"`` strings, so listing them (``harness ls``) imports nothing heavy.
Other packages add plug-ins through the entry-point groups ``harness.scorers`` and
``harness.benchmarks``; a plug-in whose name is already taken is refused with a warning.
"""

from __future__ import annotations

import difflib
import importlib
import warnings
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from harness.errors import DuplicateNameError, HarnessError, UnknownNameError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    name: str
    target: str  # "module:Class"
    summary: str
    origin: str  # "built-in" or the distribution that provides the plug-in


class Registry(Generic[T]):
    """A typed registry of plug-in classes that all derive from ``base``."""

    def __init__(self, kind: str, base: str, entry_point_group: str) -> None:
        self.kind = kind  # "scorer" or "benchmark", used in messages
        self._base = base  # "module:Class" of the contract every entry must implement
        self._group = entry_point_group
        self._entries: dict[str, Entry] = {}
        self._plugins_read = False

    def add(self, name: str, target: str, summary: str, origin: str = "built-in") -> None:
        if ":" not in target:
            raise ValueError(f"{self.kind} {name!r}: target {target!r} must look like 'module:Class'")
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
        for ep in entry_points(group=self._group):
            dist = ep.dist.name if ep.dist is not None else "an installed package"
            try:
                self.add(ep.name, ep.value, f"plug-in from {dist}", origin=dist)
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

    def get(self, name: str) -> type[T]:
        """Import and return the class registered under ``name``."""
        entry = self.entry(name)
        cls = _import(entry.target)
        base = _import(self._base)
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise HarnessError(
                f"{self.kind} {name!r} points at {entry.target} ({entry.origin}), "
                f"which is not a subclass of {self._base}."
            )
        return cls


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


SCORERS: Registry = Registry("scorer", "harness.api:Scorer", "harness.scorers")
BENCHMARKS: Registry = Registry("benchmark", "harness.api:Benchmark", "harness.benchmarks")

# Built-in plug-ins: one line each. A new scorer or benchmark is one file plus one line here.
SCORERS.add("clip", "models.clip:ClipScorer", "cosine similarity of open_clip image and text embeddings")
SCORERS.add("sds-clip", "models.sds_clip:SdsClipScorer",
            "CLIP fine-tuned by `harness finetune` (SDS-CLIP or its lambda=0 control), from its output folder")
SCORERS.add("diffusion", "models.diffusion:DiffusionScorer",
            "minus Stable Diffusion's denoising error of the image given the text (any diffusers SD pipeline)")

BENCHMARKS.add(
    "winoground", "benchmarks.winoground:Winoground",
    "Winoground 2x2 swaps (Thrush et al. 2022): text, image and group score",
)
BENCHMARKS.add(
    "aro", "benchmarks.aro:ARO",
    "ARO (Yuksekgonul et al. 2023): vg-relation, vg-attribution, coco-order, flickr30k-order",
)
BENCHMARKS.add(
    "zeroshot", "benchmarks.zeroshot:ZeroShot",
    "CLIP zero-shot classification with prompt ensembles: cifar10, cifar100, imagenet1k, folder:/torchvision:/hf:",
)
BENCHMARKS.add(
    "shapes", "benchmarks.shapes:Shapes",
    "generated two-object scenes (no download): winoground, relation, attribute and zeroshot subsets",
)
BENCHMARKS.add(
    "sugarcrepe", "benchmarks.sugarcrepe:SugarCrepe",
    "SugarCrepe (Hsieh et al. 2023): seven replace/swap/add hard-negative subsets",
)
