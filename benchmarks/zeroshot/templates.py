"""Prompt template sets for zero-shot classification, ``{c}`` standing for the class name."""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from harness.errors import BadRecordError, HarnessError

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



# --bench-opt templates=...: a named set, or a file of one template per line
TEMPLATE_CHOICES = ("cifar", "openai_imagenet", "simple")


class TemplatesOption:
    """``cifar`` (the CLIP paper's 18 CIFAR templates), ``openai_imagenet`` (OpenAI's 80 ImageNet
    templates), ``simple`` (open_clip's 7 simple ImageNet templates), or the path of a text file
    with one template per line, ``{c}`` standing for the class name."""

    label = "|".join(TEMPLATE_CHOICES) + "|path"

    def __call__(self, value: Any) -> str | Path:
        if isinstance(value, Path):
            path = value
        else:
            text = str(value).strip()
            if text in TEMPLATE_CHOICES:
                return text
            path = Path(text).expanduser()
        if not path.is_file():  # a misspelt set name would otherwise read as a missing file
            raise ValueError(f"expected one of {', '.join(TEMPLATE_CHOICES)} or the path of a templates file; "
                             f"there is no file {str(path)!r}")
        return path


def chosen_templates(choice: str | Path, dataset: str) -> tuple[str, tuple[str, ...]]:
    """(name for result rows, templates) of a ``templates`` option value for ``dataset``.

    ``cifar`` is the CLIP paper's CIFAR-100 list on cifar100 and its CIFAR-10 list elsewhere (the
    paper's two lists are the same 18 templates). A file is named by its file name and the start of
    its SHA-256, so rows stay comparable across machines and say when the file changed."""
    if isinstance(choice, Path):
        return _template_file(choice)
    if choice == "cifar":
        name = "openai-cifar100" if dataset == "cifar100" else "openai-cifar10"
    else:
        name = {"openai_imagenet": "openai-imagenet", "simple": "simple-imagenet"}[choice]
    return name, template_set(name)


def _template_file(path: Path) -> tuple[str, tuple[str, ...]]:
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise HarnessError(f"templates file {path}: cannot read it ({err})") from err
    lines = [line.strip() for line in raw.decode("utf-8", errors="replace").splitlines()]
    templates = tuple(line for line in lines if line)
    if not templates:
        raise BadRecordError(f"templates file {path} is empty; write one template per line with {{c}} for the class")
    for number, line in enumerate(lines, 1):
        if line and "{c}" not in line:
            raise BadRecordError(f"templates file {path} line {number}: {line!r} has no {{c}} for the class name")
    return f"{path.name}@{hashlib.sha256(raw).hexdigest()[:12]}", templates
