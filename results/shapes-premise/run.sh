#!/bin/bash
# Three designs tried because the premise failed on relation swaps (run from the repo root).
set -e
H=harness
R=results/shapes-premise
$H run --scorer diffusion --bench shapes:relation --timesteps 600,700,800,900,950 --results-dir $R --no-progress
$H run --scorer diffusion --bench shapes:relation --timesteps 20 --opt noise_samples=4 --results-dir $R --no-progress
$H toy extend-sd --out $R/sd-longer --steps 2800 --no-progress
for b in shapes:relation shapes:attribute shapes:winoground; do
  $H run --scorer diffusion --model $R/sd-longer --bench $b --results-dir $R --no-progress
done
