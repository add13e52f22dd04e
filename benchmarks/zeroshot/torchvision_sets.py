"""Any torchvision classification dataset already on disk (``torchvision:<ClassName>``), built with
download=False. torchvision reads its own files, some of them pickles (CIFAR, for one), with its
own loaders: point this route only at files from a source you trust, or use the readers here
(``cifar10``, ``folder:``) that parse the files without running code from them."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmarks.zeroshot.base import Dataset, readable
from benchmarks.zeroshot.templates import template_set
from harness.errors import BadRecordError, HarnessError, MissingDataError, UnknownNameError


class Torchvision(Dataset):
    _transient = ("_dataset",)

    def __init__(self, name: str, class_name: str, data_root: Path) -> None:
        import torchvision.datasets as tvd

        cls = getattr(tvd, class_name, None)
        if not (isinstance(cls, type) and class_name in tvd.__all__):
            from harness.registry import unknown_name_message

            same = [n for n in tvd.__all__ if n.lower() == class_name.lower()]
            if same:  # difflib's did-you-mean does not see "Cifar10" as close to "CIFAR10"
                raise UnknownNameError(f"unknown torchvision dataset {class_name!r}. Did you mean {same[0]!r}? "
                                       "(torchvision class names are case-sensitive)")
            raise UnknownNameError(unknown_name_message("torchvision dataset", class_name, sorted(tvd.__all__)))
        self.name = name
        self.class_name = class_name
        self.root = data_root / class_name.lower()
        if not self.root.is_dir():
            raise MissingDataError(f"{name}: {self.root} not found. {self._how({'split': 'test'})}")
        self.kwargs, dataset = self._construct(cls)
        self._dataset: Any = dataset
        classnames = getattr(dataset, "classes", None)
        if not classnames or not all(isinstance(c, str) for c in classnames):
            raise BadRecordError(f"{name}: torchvision.datasets.{class_name} has no class names (.classes), which "
                                 "zero-shot prompts need. Use a folder: dataset with classnames.txt instead.")
        labels = _torchvision_labels(dataset, name)
        split = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items()) or "the whole dataset (no split argument)"
        super().__init__(name, f"torchvision.datasets.{class_name}({self.root}, {split})",
                         [readable(c) for c in classnames], labels, "simple-imagenet", template_set("simple-imagenet"))

    def _how(self, kwargs: dict[str, Any]) -> str:
        args = "".join(f", {k}={v!r}" for k, v in kwargs.items())
        return (f"On a machine with network run `python -c \"import torchvision; torchvision.datasets."
                f"{self.class_name}('{self.root}'{args}, download=True)\"` (if the class can download), "
                f"or put the files where torchvision.datasets.{self.class_name} expects them under {self.root}/.")

    def _construct(self, cls: type) -> tuple[dict[str, Any], Any]:
        params = inspect.signature(cls).parameters
        if "split" in params:
            choices: list[dict[str, Any]] = [{"split": "test"}, {"split": "val"}]
        elif "train" in params:
            choices = [{"train": False}]
        else:
            choices = [{}]
        extra = {"download": False} if "download" in params else {}
        refused = []
        for kwargs in choices:
            try:
                return kwargs, cls(str(self.root), **kwargs, **extra)
            except ValueError as err:  # torchvision's answer to a split the class does not have
                refused.append(f"{kwargs}: {err}")
            except ImportError as err:  # e.g. scipy, which some torchvision datasets read their files with
                raise HarnessError(f"{self.name}: torchvision.datasets.{self.class_name} needs the package "
                                   f"{err.name or err}: pip install it") from err
            except (RuntimeError, OSError) as err:
                raise MissingDataError(f"{self.name}: torchvision.datasets.{self.class_name}('{self.root}', "
                                       f"{kwargs}, download=False) found no data: {err}. {self._how(kwargs)}") from err
        raise HarnessError(f"{self.name}: torchvision.datasets.{self.class_name} has neither a test nor a val "
                           f"split: {'; '.join(refused)}")

    def load(self, index: int) -> Image.Image:
        if self._dataset is None:  # in a loader worker: open it again there
            import torchvision.datasets as tvd

            cls = getattr(tvd, self.class_name)
            extra = {"download": False} if "download" in inspect.signature(cls).parameters else {}
            self._dataset = cls(str(self.root), **self.kwargs, **extra)
        image = self._dataset[index][0]
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        if not isinstance(image, Image.Image):
            raise BadRecordError(f"{self.name}: item {index} gave a {type(image).__name__}, not a PIL image")
        return image


def _torchvision_labels(dataset: Any, name: str) -> np.ndarray:
    """Labels without decoding images: the attributes torchvision's classification datasets use."""
    for attr in ("targets", "_labels", "labels", "y"):
        value = getattr(dataset, attr, None)
        if value is not None and not callable(value):
            labels = np.asarray(value.tolist() if hasattr(value, "tolist") else list(value))
            if labels.ndim == 1 and len(labels) == len(dataset) and np.issubdtype(labels.dtype, np.integer):
                return labels
    for attr in ("_samples", "samples", "imgs"):
        value = getattr(dataset, attr, None)
        if value is not None and len(value) == len(dataset):
            return np.asarray([s[1] for s in value])
    raise BadRecordError(f"{name}: found no integer label per image in targets, _labels, labels, y, _samples, "
                         f"samples or imgs of {type(dataset).__name__}")


