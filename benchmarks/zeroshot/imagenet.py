"""ImageNet-1k validation as ``<data-root>/imagenet/val/<wnid>/*.JPEG`` (one folder per synset id;
their sorted order is the standard class index, the order of ``open_clip.IMAGENET_CLASSNAMES``)."""

from __future__ import annotations

import re
from pathlib import Path

from benchmarks.zeroshot.base import IMAGE_SUFFIXES, subfolders
from benchmarks.zeroshot.folders import Files, image_files
from benchmarks.zeroshot.templates import template_set
from harness.errors import BadRecordError, MissingDataError

WNID = re.compile(r"n\d{8}")
N_IMAGENET_CLASSES = 1000
IMAGENET_HOW = (
    "ImageNet-1k cannot be downloaded without an account: register at https://image-net.org, get "
    "ILSVRC2012_img_val.tar and ILSVRC2012_devkit_t12.tar.gz into <data-root>/imagenet/, then run "
    "`python -c \"import torchvision; torchvision.datasets.ImageNet('<data-root>/imagenet', split='val')\"` "
    "once: it sorts the 50,000 validation JPEGs into val/<wnid>/ folders (any tool that gives that "
    "layout will do)."
)


def imagenet(data_root: Path) -> Files:
    import open_clip

    val = data_root / "imagenet" / "val"
    if not val.is_dir():
        raise MissingDataError(f"imagenet1k: {val} not found. {IMAGENET_HOW}")
    wnids = subfolders(val)
    if len(wnids) != N_IMAGENET_CLASSES:
        loose = sum(1 for p in val.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        hint = (f" It holds {loose} images directly: the validation tar extracts flat, and the images must "
                "be sorted into their synset folders." if loose else "")
        raise BadRecordError(f"imagenet1k: {val} holds {len(wnids)} class folders, expected 1000, one per "
                             f"synset id (n01440764 ...): the class index is their sorted order.{hint} {IMAGENET_HOW}")
    odd = [w for w in wnids if not WNID.fullmatch(w)]
    if odd:
        raise BadRecordError(f"imagenet1k: folders in {val} must be named by synset id (like n01440764), so "
                             f"that their sorted order is the standard class index; found {odd[:3]}")
    # The official order of validation images is by file name (ILSVRC2012_val_00000001.JPEG, ...),
    # which also mixes classes, so --limit takes a sample across classes.
    entries = sorted((Path(f).name, label, f"{wnid}/{f}")
                     for label, wnid in enumerate(wnids) for f in image_files(val / wnid))
    if not entries:
        raise MissingDataError(f"imagenet1k: the 1000 class folders in {val} hold no images. {IMAGENET_HOW}")
    return Files("imagenet1k", val, [e[2] for e in entries], [e[1] for e in entries],
                  list(open_clip.IMAGENET_CLASSNAMES), "openai-imagenet", template_set("openai-imagenet"),
                  f"{val} (synset folders)")


