"""A Hugging Face image-classification dataset from the local ``datasets`` cache (``hf:<repo_id>``):
test split, else validation; images from its Image column, labels and names from its ClassLabel
column."""

from __future__ import annotations

import os
from typing import Any

from PIL import Image

from benchmarks.zeroshot.base import Dataset, readable
from benchmarks.zeroshot.templates import template_set
from harness.errors import BadRecordError, MissingDataError


class HuggingFace(Dataset):
    def __init__(self, name: str, repo_id: str, source: str) -> None:
        import datasets

        dataset, split = _load_hf(name, repo_id, source)
        features = dataset.features
        images = [c for c, f in features.items() if isinstance(f, datasets.Image)]
        labels = [c for c, f in features.items() if isinstance(f, datasets.ClassLabel)]
        if not images or not labels:
            raise BadRecordError(f"{name}: split {split!r} needs an Image column and a ClassLabel column; its "
                                 f"features are {', '.join(f'{c}: {type(f).__name__}' for c, f in features.items())}")
        self.image_column = images[0]
        label_column = "label" if "label" in labels else labels[0]
        self._images = dataset.select_columns([self.image_column])
        values = dataset.select_columns([label_column]).to_dict()[label_column]
        super().__init__(name, f"datasets.load_dataset({source!r}, split={split!r}): {self.image_column}, "
                         f"{label_column}", [readable(n) for n in features[label_column].names], values,
                         "simple-imagenet", template_set("simple-imagenet"))

    def load(self, index: int) -> Image.Image:
        image = self._images[index][self.image_column]
        if not isinstance(image, Image.Image):
            raise BadRecordError(f"{self.name}: row {index} column {self.image_column} is not an image")
        return image


def _load_hf(name: str, repo_id: str, source: str) -> tuple[Any, str]:
    import datasets

    cache = os.environ.get("HF_DATASETS_CACHE") or None
    unknown = ""
    for split in ("test", "validation"):
        try:
            return datasets.load_dataset(source, split=split, cache_dir=cache), split
        except ValueError as err:
            if "Unknown split" not in str(err):
                raise BadRecordError(f"{name}: datasets.load_dataset({source!r}, split={split!r}): {err}") from err
            unknown = str(err).strip().splitlines()[0]
        except Exception as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            where = cache or datasets.config.HF_DATASETS_CACHE
            raise MissingDataError(
                f"{name}: datasets.load_dataset({source!r}) found nothing usable in the datasets cache {where} "
                f"({first[:200]}). Where there is network, run `python -c \"import datasets; "
                f"datasets.load_dataset('{repo_id}')\"` with the same HF_DATASETS_CACHE, then copy the cache "
                "here (and set HF_DATASETS_OFFLINE=1)."
            ) from err
    raise BadRecordError(f"{name}: {source} has neither a test nor a validation split ({unknown})")
