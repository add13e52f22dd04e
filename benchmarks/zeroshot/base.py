"""What every zero-shot dataset reader shares: the dataset contract (class candidates, one label
per image, lazy decoding), and small helpers for names and folders."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from harness.api import Prompts
from harness.errors import BadRecordError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"})


class Dataset:
    """One classification dataset: class candidates, one label per image, lazy image decoding.

    Picklable for data-loader workers; attributes named in ``_transient`` (decoded arrays, open
    datasets) are left out of the pickle and rebuilt on first use in the worker.
    """

    _transient: ClassVar[tuple[str, ...]] = ()

    def __init__(self, name: str, description: str, classnames: Sequence[str], labels: Any,
                 templates_name: str, templates: Sequence[str]) -> None:
        self.name = name
        self.description = description
        self.labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if not classnames:
            raise BadRecordError(f"{name}: no class names ({description})")
        if not len(self.labels):
            raise BadRecordError(f"{name}: no images ({description})")
        bad = self.labels[(self.labels < 0) | (self.labels >= len(classnames))]
        if len(bad):
            hint = " (-1 marks an unlabelled image: is this a split without labels?)" if bad[0] < 0 else ""
            raise BadRecordError(f"{name}: label {int(bad[0])} is outside 0..{len(classnames) - 1} "
                                 f"({len(classnames)} class names; {description}){hint}")
        self.classnames = tuple(classnames)
        self.default_templates_name = templates_name  # the reader's own choice, before any --bench-opt
        self.use_templates(templates_name, templates)

    def use_templates(self, templates_name: str, templates: Sequence[str]) -> None:
        """Describe every class with ``templates`` (``{c}`` standing for the class name)."""
        for t in templates:
            if "{c}" not in t:
                raise BadRecordError(f"{self.name}: template {t!r} ({templates_name}) has no {{c}} for the class name")
        self.templates_name = templates_name
        # ONE tuple shared by every item of the dataset: the CLIP scorer builds the classifier once
        self.classes: tuple[Prompts, ...] = tuple(
            Prompts(label=c, texts=tuple(t.replace("{c}", c) for t in templates)) for c in self.classnames
        )

    def load(self, index: int) -> Image.Image:
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, **{k: None for k in self._transient}}


def readable(name: str) -> str:
    return name.replace("_", " ").strip()



def subfolders(folder: Path) -> list[str]:
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
