"""The ``sds-clip`` scorer: the CLIP scorer on a folder written by ``harness finetune``.

The folder is a plain open_clip ``local-dir:`` model; this scorer adds what the fine-tuning saved
beside it (base model, lambda, sds_grad, steps, data hash) to the result rows, so the leaderboard
shows CLIP, the lambda = 0 control and SDS-CLIP side by side.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.api import ScorerConfig
from harness.errors import HarnessError, MissingWeightsError
from harness.results import portable_model_name
from models import toy_models
from models.clip import ClipScorer


class SdsClipScorer(ClipScorer):
    """The CLIP scorer on a `harness finetune` output folder. Options: ``harness ls sds-clip``."""

    family = "sds-clip"
    default_model = "toy:sds-clip"

    def __init__(self, config: ScorerConfig) -> None:
        if toy_models.is_toy(config.model):
            folder = toy_models.toy_folder(config.model)
        else:
            folder = Path(config.model.removeprefix("local-dir:")).expanduser().resolve()
        if config.pretrained:
            raise HarnessError("--pretrained is not used by sds-clip: --model is the folder `harness finetune` wrote")
        manifest = folder / "finetune_config.json"
        if not manifest.is_file():
            raise MissingWeightsError(
                f"{folder} is not a `harness finetune` output folder (no finetune_config.json); for any other "
                "open_clip folder use --scorer clip --model local-dir:PATH")
        self.finetune = json.loads(manifest.read_text(encoding="utf-8"))
        super().__init__(ScorerConfig(model=f"local-dir:{folder}", device=config.device, seed=config.seed,
                                      options=config.options))
        self.given_model = config.model  # result rows name the model as the user did
        self.folder = folder

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "family": self.family}

    def describe(self) -> dict[str, str]:
        extra = self.finetune.get("extra", {})
        base = portable_model_name(str(extra.get("base_clip", "?")))
        if extra.get("base_pretrained"):
            base += f"/{portable_model_name(str(extra['base_pretrained']))}"
        return {
            "model": portable_model_name(self.given_model, self._weights),
            "pretrained": (f"base={base} lambda={self.finetune.get('lam')} sds_grad={self.finetune.get('sds_grad')} "
                           f"head={self.finetune.get('head', 'linear')} train={self.finetune.get('train')} "
                           f"step={extra.get('step')}/{extra.get('total_steps')} data={extra.get('data_hash')}"),
        }
