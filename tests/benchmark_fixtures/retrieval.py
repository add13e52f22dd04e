"""The Karpathy test splits as ARO and the retrieval benchmark read them: a JSON list of
``{"image": ..., "caption": [...]}`` beside the images (COCO ``val2014/``, Flickr30k
``flickr30k-images/``). Like the real files, COCO has an image with six captions, and two images
share a caption word for word (a tie for any scorer)."""
from __future__ import annotations

import json
from pathlib import Path

from factories import photo

SHARED_CAPTION = "A man riding a wave on top of a surfboard."
_SCENES = ("a cat on a sofa", "a rocket on a launch pad", "a cup of coffee on a table", "an astronaut in a suit",
           "a clock on a wall", "coins on a cloth", "a camera man on a field", "the moon at night",
           "a brick wall", "green grass", "grey gravel", "a page of text")
_TAKES = ("{} in scene {}.", "A photo of {} (scene {}).", "There is {} here, scene {}.", "Scene {1}: {0}.",
          "Look at {}, number {}!", "One more view of {}, scene {}.")


def captions(subset: str, i: int) -> list[str]:
    scene = _SCENES[i % len(_SCENES)]
    count = 6 if subset == "coco" and i == 2 else 5  # COCO's test split has 25,010 captions for 5,000 images
    out = [take.format(scene, f"{subset} {i}") for take in _TAKES[:count]]
    if i in (0, 1):
        out[-1] = SHARED_CAPTION
    return out


def write(root: Path, n: int) -> None:
    layouts = (("coco", "coco_karpathy_test.json", "val2014/COCO_val2014_{:012d}.jpg", 391895, 60),
               ("flickr30k", "flickr30k_test.json", "flickr30k-images/{}.jpg", 1007129816, 90))
    for subset, annotation, pattern, first_id, first_photo in layouts:
        records = []
        for i in range(n):
            image = pattern.format(first_id + i)
            (root / subset / image).parent.mkdir(parents=True, exist_ok=True)
            photo(first_photo + i, 64).save(root / subset / image, quality=90)
            records.append({"image": image, "caption": captions(subset, i)})
        (root / subset / annotation).write_text(json.dumps(records))
