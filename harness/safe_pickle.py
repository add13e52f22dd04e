"""Reading pickled data files without running code from them.

A pickle can name any importable function and call it while it loads, so a planted ``test_batch``
in a downloaded CIFAR folder could run anything. Benchmarks that must read pickles (CIFAR's
torchvision layout) use ``load_data_pickle``: an unpickler that resolves only the names such data
files really contain (numpy's array reconstruction and dtypes, and the codec Python 3 uses for
bytes in protocol-2 pickles) and refuses everything else, naming the file and the refused name.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from harness.errors import BadRecordError

# (module, name) pairs a numeric data pickle may reference; numpy 2 calls its core `numpy._core`
ALLOWED_GLOBALS = frozenset({
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),  # how Python 3 writes bytes into a protocol-2 pickle
})


class _DataUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, path: Path, encoding: str) -> None:
        super().__init__(file, encoding=encoding)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise BadRecordError(
            f"{self.path} is not a plain data pickle: it asks to load {module}.{name}, which a data file never "
            "needs and which could run code. It was refused and nothing of it was used. Replace the file with "
            "one from the dataset's official source.")


def load_data_pickle(path: Path, encoding: str = "latin1") -> Any:
    """The object in a pickled data file (dicts, lists, strings, numbers, numpy arrays), loaded
    without importing or calling anything else. ``encoding`` reads Python 2 strings (CIFAR's)."""
    path = Path(path)
    with open(path, "rb") as f:
        return _DataUnpickler(f, path, encoding).load()
