"""Peak memory of a whole evaluation on Winoground fixtures of 100 and of 2,000 items.

Each size runs in a fresh process and reads its own high-water mark, VmHWM from /proc (not
`ru_maxrss`, which Linux carries over from the forking parent across exec, here pytest after it
wrote the fixture). Image decoding runs in one data-loader worker; its peak (RUSAGE_CHILDREN,
which counts pages shared with the parent at fork) is reported, not asserted.
Run: `pytest -m perf tests/perf -s`.
"""

from __future__ import annotations

import json
import subprocess
import sys

from factories import build_tiny_clip, write_winoground_parquet

SCRIPT = r"""
import json, resource, sys
from benchmarks.winoground import Winoground
from harness.api import ScorerConfig
from harness.runner import evaluate
from harness.store import ScoreStore
from models.clip import ClipScorer

def high_water_mib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024

data_root, model, store = sys.argv[1:4]
scorer = ClipScorer(ScorerConfig(model=model, options={"batch_size": 32}))
after_load = high_water_mib()
result = evaluate(scorer, Winoground(data_root), ScoreStore(store), workers=1, progress=False)
print(json.dumps({
    "items": len(result.items),
    "peak_main_mib": round(high_water_mib(), 1),
    "after_model_load_mib": round(after_load, 1),
    "peak_worker_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
}))
"""


def test_memory_stays_flat_as_the_benchmark_grows(tmp_path):
    model = f"local-dir:{build_tiny_clip(tmp_path / 'clip').local_dir}"
    figures = {}
    for n in (100, 2000):
        root = tmp_path / f"data{n}"
        path = write_winoground_parquet(root / "winoground", n, rows_per_group=100, image_size=128)
        out = subprocess.run([sys.executable, "-c", SCRIPT, str(root), model, str(tmp_path / f"s{n}.sqlite")],
                             capture_output=True, text=True, check=True).stdout
        figures[n] = json.loads(out.strip().splitlines()[-1])
        figures[n]["parquet_mib"] = path.stat().st_size / 2**20
        print(f"\n{n} items: {figures[n]}")
    assert figures[2000]["items"] == 2000
    growth = figures[2000]["peak_main_mib"] - figures[100]["peak_main_mib"]
    print(f"main-process peak grows by {growth:.1f} MiB from 100 to 2,000 items")
    # 20x the items may cost some MiB of metadata and scores, never the images: the 4,000 decoded
    # 128x128 RGB images of the large fixture would take 188 MiB
    assert growth < 40
