"""Prompt template sets for zero-shot classification, ``{c}`` standing for the class name."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from harness.errors import HarnessError

TEMPLATES_FILE = Path(__file__).parent.parent / "data" / "zeroshot_templates.json"


@lru_cache(maxsize=None)
def template_set(name: str) -> tuple[str, ...]:
    """A named set of prompt templates, ``{c}`` standing for the class name."""
    if name in ("openai-imagenet", "simple-imagenet"):
        import open_clip

        fns = open_clip.OPENAI_IMAGENET_TEMPLATES if name == "openai-imagenet" else open_clip.SIMPLE_IMAGENET_TEMPLATES
        return tuple(fn("{c}") for fn in fns)  # open_clip keeps them as lambdas; ours must pickle
    sets = json.loads(TEMPLATES_FILE.read_text(encoding="utf-8"))["sets"]
    if name not in sets:
        raise HarnessError(f"no template set {name!r} in {TEMPLATES_FILE} (it has {', '.join(sets)})")
    return tuple(sets[name]["templates"])

