"""Draws tries.png from the training logs in logs/ (run from the repository root:
python results/shapes-layout/figure.py)."""

from pathlib import Path

from experiments.shapes.figures import layout_tries_figure

HERE = Path(__file__).parent
# (label, log, UNet steps its pipeline had been trained before the log began)
CURVES = [
    ("v1 (shipped before)", "v1", 0),
    ("high-noise", "high-noise", 0),
    ("text-6x96", "text-6x96", 0),
    ("high-noise+text", "high-noise+text", 0),
    ("high-noise+latent16 (stopped)", "high-noise+latent16", 0),
    ("all-in-5600, 1st run (stopped)", "all-in-5600", 0),
    ("all-in-5600, 2nd run", "all-in-5600-2nd", 0),
    ("high-noise, then +2,800 steps", "high-noise-5600", 2800),
    ("v1, then +1,200 noise-weight", "v1+noise-weight", 2800),
    ("high-noise, then v-weight (stopped)", "high-noise+v-weight", 2800),
    ("high-noise, then v-weight, 2nd run", "high-noise+v-weight-2nd", 2800),
    ("high-noise+v-weight, one command (shipped)", "shipped", 0),
]

if __name__ == "__main__":
    curves = [(label, HERE / "logs" / f"{name}.csv", offset) for label, name, offset in CURVES
              if (HERE / "logs" / f"{name}.csv").is_file()]
    print(layout_tries_figure(curves, HERE / "tries.png"))
