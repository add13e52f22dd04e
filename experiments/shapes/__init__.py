"""The SDS-CLIP experiment in miniature on the shapes world (benchmarks/shapes.py).

- train_toy.py: the recipe that trains the toy CLIP, the toy Stable Diffusion pipeline and the toy
  SDS-CLIP from scratch on 2 CPU cores (``harness toy train --out DIR``); the shipped result is the
  data in models/toy/;
- experiment.py: toy CLIP vs the toy diffusion score vs SDS-CLIP arms vs the lambda = 0 control,
  over seeds (``harness toy experiment``);
- figures.py: the experiment's figure and table, and the toy models' learning curves;
- cli.py: the ``harness toy`` commands.
"""
