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
from models.clip import ClipScorer


class SdsClipScorer(ClipScorer):
    family = "sds-clip"

    def __init__(self, config: ScorerConfig) -> None:
        folder = Path(config.model.removeprefix("local-dir:")).expanduser().resolve()
        if config.pretrained:
            raise HarnessError("--pretrained is not used by sds-clip: --model is the folder `harness finetune` wrote")
        manifest = folder / "finetune_config.json"
        if not manifest.is_file():
            raise MissingWeightsError(
                f"{folder} is not a `harness finetune` output folder (no finetune_config.json); for any other "
                "open_clip folder use --scorer clip --model local-dir:PATH")
        self.finetune = json.loads(manifest.read_text(encoding="utf-8"))
        super().__init__(ScorerConfig(model=f"local-dir:{folder}", device=config.device, batch_size=config.batch_size,
                                      seed=config.seed, options=config.options))
        self.folder = folder

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "family": self.family}

    def describe(self) -> dict[str, str]:
        extra = self.finetune.get("extra", {})
        base = extra.get("base_clip", "?") + (f"/{extra['base_pretrained']}" if extra.get("base_pretrained") else "")
        return {
            "model": str(self.folder),
            "pretrained": (f"base={base} lambda={self.finetune.get('lam')} sds_grad={self.finetune.get('sds_grad')} "
                           f"head={self.finetune.get('head', 'linear')} train={self.finetune.get('train')} step={extra.get('step')}/{extra.get('total_steps')} "
                           f"data={extra.get('data_hash')}"),
        }
