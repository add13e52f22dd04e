"""CIFAR-10 and CIFAR-100 in torchvision's on-disk layout (``cifar-10-batches-py/``,
``cifar-100-python/``), read from the pickles directly: torchvision's own classes verify the md5
of every file even with download=False, so they refuse any copy that is not byte-identical."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmarks.zeroshot.base import Dataset, readable
from benchmarks.zeroshot.templates import template_set
from harness.errors import BadRecordError, MissingDataError
from harness.safe_pickle import load_data_pickle


@dataclass(frozen=True)
class _CifarSpec:
    folder: str
    test: str
    meta: str
    labels_key: str
    names_key: str
    torchvision_class: str
    templates: str


CIFAR = {
    "cifar10": _CifarSpec("cifar-10-batches-py", "test_batch", "batches.meta", "labels", "label_names",
                          "CIFAR10", "openai-cifar10"),
    "cifar100": _CifarSpec("cifar-100-python", "test", "meta", "fine_labels", "fine_label_names",
                           "CIFAR100", "openai-cifar100"),
}


def cifar_how(spec: _CifarSpec, data_root: Path) -> str:
    return (f"On a machine with network run `python -c \"import torchvision; torchvision.datasets."
            f"{spec.torchvision_class}('{data_root}', train=False, download=True)\"` (it writes "
            f"{spec.folder}/ there), or copy an existing {spec.folder}/ folder into {data_root}/.")


def _read_pickle(path: Path) -> dict[str, Any]:
    """A CIFAR pickle: written by Python 2, so its strings need latin1 (torchvision reads it so).
    Read with the restricted unpickler: a planted file cannot run code."""
    try:
        data = load_data_pickle(path, encoding="latin1")
    except BadRecordError:
        raise
    except Exception as err:
        raise BadRecordError(f"cannot read {path} as a CIFAR pickle: {type(err).__name__}: {err}") from err
    if not isinstance(data, dict):
        raise BadRecordError(f"{path} holds a {type(data).__name__}, not the dict of a CIFAR file")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in data.items()}


class Cifar(Dataset):
    _transient = ("_pixels",)

    def __init__(self, name: str, spec: _CifarSpec, data_root: Path) -> None:
        folder = data_root / spec.folder
        self.test_path = folder / spec.test
        meta_path = folder / spec.meta
        for path in (self.test_path, meta_path):
            if not path.is_file():
                raise MissingDataError(f"{name}: {path} not found. {cifar_how(spec, data_root)}")
        batch = _read_pickle(self.test_path)
        names = _read_pickle(meta_path).get(spec.names_key)
        if not names:
            raise BadRecordError(f"{meta_path} has no {spec.names_key!r}; is this the {name} meta file?")
        if spec.labels_key not in batch:
            raise BadRecordError(f"{self.test_path} has no {spec.labels_key!r}; is this the {name} test file?")
        self._pixels: np.ndarray | None = self._check_pixels(batch.get("data"), len(batch[spec.labels_key]))
        super().__init__(name, f"{folder} (torchvision layout, {spec.test})",
                         [readable(str(n)) for n in names], batch[spec.labels_key],
                         spec.templates, template_set(spec.templates))

    def _check_pixels(self, data: Any, n: int) -> np.ndarray:
        data = np.asarray(data) if data is not None else None
        if data is None or data.dtype != np.uint8 or data.shape != (n, 3 * 32 * 32):
            shape = None if data is None else (data.shape, str(data.dtype))
            raise BadRecordError(f"{self.test_path}: 'data' should be {n} x 3072 uint8 (channel-major 3x32x32 "
                                 f"images), found {shape}")
        return data

    def load(self, index: int) -> Image.Image:
        if self._pixels is None:  # in a loader worker: read the file once there
            batch = _read_pickle(self.test_path)
            self._pixels = self._check_pixels(batch.get("data"), len(self.labels))
        channels_first = self._pixels[index].reshape(3, 32, 32)
        return Image.fromarray(np.ascontiguousarray(channels_first.transpose(1, 2, 0)))

