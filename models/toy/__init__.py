"""The toy models of the shapes world, trained by the project itself (``harness toy train``).

They are what ``harness run`` uses when no ``--model`` is given: a tiny open_clip CLIP
(``clip/``, a ``local-dir:`` folder), a tiny Stable Diffusion pipeline (``sd/``, a
``save_pretrained`` folder with its own small VAE) and an SDS-CLIP fine-tuned from the two
(``sds-clip/``, a ``harness finetune`` folder). ``training_log.csv`` beside them is the loss and
learning-curve log of the run that made them.
"""

from __future__ import annotations

import os
from pathlib import Path

from harness.errors import HarnessError, MissingWeightsError

TOY_DIR = Path(__file__).resolve().parent
TOY_FOLDERS = {"clip": "clip", "diffusion": "sd", "sds-clip": "sds-clip"}


def toy_root() -> Path:
    """Where the toy models are: $HARNESS_TOY_DIR (e.g. a `harness toy train --out` folder), else
    the ones shipped in the package."""
    return Path(os.environ.get("HARNESS_TOY_DIR") or TOY_DIR)


def toy_folder(scorer: str, root: Path | None = None) -> Path:
    """The folder of the toy model for a scorer family (clip, diffusion, sds-clip)."""
    root = Path(root) if root is not None else toy_root()
    if scorer not in TOY_FOLDERS:
        raise HarnessError(f"no toy model for scorer {scorer!r} (toy models exist for {', '.join(TOY_FOLDERS)}); "
                           "pass --model")
    return root / TOY_FOLDERS[scorer]


def default_model(scorer: str, root: Path | None = None) -> str:
    """The --model value that selects a scorer's toy model; says how to make it when it is missing."""
    folder = toy_folder(scorer, root)
    marker = {"clip": "open_clip_config.json", "diffusion": "model_index.json", "sds-clip": "finetune_config.json"}
    if not (folder / marker[scorer]).is_file():
        raise MissingWeightsError(
            f"no --model given and the toy {scorer} model is missing: {folder / marker[scorer]} not found. "
            "Run `harness toy train` (about 30 minutes on 2 CPU cores) to make the toy models, or pass --model. "
            "(Toy models are looked for in $HARNESS_TOY_DIR if set, else in the package's models/toy.)")
    return f"local-dir:{folder}" if scorer == "clip" else str(folder)
