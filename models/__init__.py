"""Scorers, one file per family (clip.py, diffusion.py, sds_clip.py), the SDS-CLIP fine-tuning
routine (finetune.py, with its command in commands.py), and what they share (stable_diffusion.py,
clip_tokenizer.py). toy_models.py says which shipped toy model each scorer uses; the weights
themselves are data in toy/.

``PLUGINS`` is this package's plug-in table, which the harness finds through the entry point
``harness.plugins`` in pyproject.toml: name -> ("module:object", one line for `harness ls`).
Importing this file imports nothing else, so `harness ls` stays fast.
"""

PLUGINS = {
    "scorers": {
        "clip": ("models.clip:ClipScorer", "cosine similarity of open_clip image and text embeddings"),
        "sds-clip": ("models.sds_clip:SdsClipScorer",
                     "CLIP fine-tuned by `harness finetune` (SDS-CLIP or its lambda=0 control), from its output folder"),
        "diffusion": ("models.diffusion:DiffusionScorer",
                      "minus Stable Diffusion's denoising error of the image given the text (any diffusers SD pipeline)"),
    },
    "commands": {
        "finetune": ("models.commands:finetune",
                     "Fine-tune CLIP's LayerNorms and a linear map with L_CLIP + lambda * L_SDS (SDS-CLIP)."),
    },
}
