"""Which toy model each scorer uses, and where the toy models are: the one place that knows.

The toy models of the shapes world (a tiny open_clip CLIP, a tiny Stable Diffusion pipeline and an
SDS-CLIP fine-tuned from the two) ship as data in ``models/toy/``; ``harness toy train --out DIR``
makes new ones and ``HARNESS_TOY_DIR=DIR`` selects them. A scorer names its toy model
``toy:<folder>`` (its ``default_model``), which is also how result rows record it: the name does
not depend on where the files are.
"""

from __future__ import annotations

import os
from pathlib import Path

from harness.errors import MissingWeightsError, UnknownNameError
from harness.registry import unknown_name_message

SHIPPED_TOY_DIR = Path(__file__).resolve().parent / "toy"
PREFIX = "toy:"
# toy model name -> the file that marks a complete folder of that kind
TOY_MODELS = {
    "clip": "open_clip_config.json",  # open_clip local-dir: model, for the clip scorer
    "sd": "model_index.json",  # diffusers save_pretrained pipeline, for the diffusion scorer
    "sds-clip": "finetune_config.json",  # `harness finetune` output, for the sds-clip scorer
}


def toy_root() -> Path:
    """$HARNESS_TOY_DIR (e.g. a `harness toy train --out` folder) if set, else the shipped models."""
    return Path(os.environ.get("HARNESS_TOY_DIR") or SHIPPED_TOY_DIR)


def is_toy(model: str) -> bool:
    return model.startswith(PREFIX)


def toy_folder(model: str, root: Path | None = None) -> Path:
    """The folder of ``toy:<name>``; says what is missing and how to make it when it is absent."""
    name = model.removeprefix(PREFIX)
    if name not in TOY_MODELS:
        raise UnknownNameError(unknown_name_message("toy model", name, list(TOY_MODELS)))
    root = Path(root) if root is not None else toy_root()
    folder = root / name
    if not (folder / TOY_MODELS[name]).is_file():
        raise MissingWeightsError(
            f"the toy model {model} is missing: {folder / TOY_MODELS[name]} not found. Make the toy models with "
            f"`harness toy train --out {root}` (about 30 minutes on 2 CPU cores), or pass --model. (Toy models "
            "are looked for in $HARNESS_TOY_DIR if set, else in the package's models/toy.)")
    return folder
