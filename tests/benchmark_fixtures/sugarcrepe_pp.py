"""SugarCrepe++ in its repository layout: sugarcrepe_pp/data/{replace_att,...}.json lists of
{id, filename, caption, caption2, negative_caption}, images in coco/val2017/."""
from __future__ import annotations

import json
from pathlib import Path

from factories import photo

WRITTEN = ("replace_att", "swap_obj")  # two of the five files: the other three are reported as skipped


def write(root: Path, n: int, files: tuple[str, ...] = WRITTEN) -> None:
    (root / "coco" / "val2017").mkdir(parents=True, exist_ok=True)
    (root / "sugarcrepe_pp" / "data").mkdir(parents=True, exist_ok=True)
    for f, stem in enumerate(files):
        records = []
        for k in range(n):
            filename = f"{397133 + 100 * f + k:012d}.jpg"
            photo(60 + 10 * f + k, 64).save(root / "coco" / "val2017" / filename, quality=90)
            records.append({"id": k, "filename": filename, "caption": f"a red cup beside a blue plate, take {k}",
                            "caption2": f"beside a blue plate there is a red cup, take {k}",
                            "negative_caption": f"a blue cup beside a red plate, take {k}"})
        (root / "sugarcrepe_pp" / "data" / f"{stem}.json").write_text(json.dumps(records, indent=1))
