"""Datasets stored as image files: an ImageNet-style folder per class (``folder:<name>``), and the
shared reader of images listed by path (ImageNet-1k uses it too)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from benchmarks.zeroshot.base import IMAGE_SUFFIXES, Dataset, readable, subfolders
from benchmarks.zeroshot.templates import template_set
from harness.errors import BadRecordError, MissingDataError
from harness.images import decode_image

FOLDER_ROOT = "zeroshot"  # <data-root>/zeroshot/<name>/ holds the folder: datasets
FOLDER_HOW = (
    "Put each image-folder dataset in <data-root>/zeroshot/<name>/ with one sub-folder per class, "
    "a classnames.txt (one readable name per line in sorted folder order, or folder<TAB>name lines) "
    "and optionally templates.txt (one prompt template per line with {c} for the class name)."
)



class Files(Dataset):
    """Images as files under ``root``, ``files[i]`` relative to it."""

    def __init__(self, name: str, root: Path, files: list[str], labels: list[int], classnames: Sequence[str],
                 templates_name: str, templates: Sequence[str], description: str) -> None:
        self.root = root
        self.files = files
        super().__init__(name, description, classnames, labels, templates_name, templates)

    def load(self, index: int) -> Image.Image:
        return decode_image(self.root / self.files[index], str(self.root / self.files[index]))


def image_files(folder: Path) -> list[str]:
    """Image files below ``folder``, relative to it, sorted; hidden files and folders are skipped."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = Path(dirpath).relative_to(folder)
        out += [(rel / f).as_posix() for f in filenames
                if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES]
    return sorted(out)


def _read_classnames(path: Path, folders: list[str]) -> list[str]:
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    tabbed = ["\t" in line for line in lines]
    if any(tabbed):
        if not all(tabbed):
            raise BadRecordError(f"{path}: mixes folder<TAB>name lines with plain lines; use one form")
        mapping = dict(line.split("\t", 1) for line in lines)
        mapping = {k.strip(): v.strip() for k, v in mapping.items()}
        unnamed = [f for f in folders if f not in mapping]
        unknown = [k for k in mapping if k not in folders]
        if unnamed or unknown:
            raise BadRecordError(f"{path}: class folders without a name: {unnamed[:5]}; "
                                 f"names for folders that do not exist: {unknown[:5]}")
        return [mapping[f] for f in folders]
    if len(lines) != len(folders):
        raise BadRecordError(f"{path} has {len(lines)} names for {len(folders)} class folders "
                             f"({', '.join(folders[:5])}{', ...' if len(folders) > 5 else ''}); write one name per "
                             "folder in sorted folder order, or folder<TAB>name lines")
    return lines


def image_folder(subset: str, folder: Path) -> Files:
    if not folder.is_dir():
        raise MissingDataError(f"{subset}: {folder} not found. {FOLDER_HOW}")
    class_dirs = subfolders(folder)
    if not class_dirs:
        raise MissingDataError(f"{subset}: {folder} has no class sub-folders. {FOLDER_HOW}")
    names_file = folder / "classnames.txt"
    if names_file.is_file():
        classnames = _read_classnames(names_file, class_dirs)
    else:
        classnames = [readable(d) for d in class_dirs]
    templates_file = folder / "templates.txt"
    if templates_file.is_file():
        templates = [t.strip() for t in templates_file.read_text(encoding="utf-8").splitlines() if t.strip()]
        if not templates:
            raise BadRecordError(f"{templates_file} is empty; write one template per line with {{c}}, or delete it")
        templates_name = "templates.txt"
    else:
        templates_name, templates = "simple-imagenet", list(template_set("simple-imagenet"))
    files, labels = [], []
    for label, d in enumerate(class_dirs):
        found = image_files(folder / d)
        files += [f"{d}/{f}" for f in found]
        labels += [label] * len(found)
    if not files:
        raise MissingDataError(f"{subset}: the class folders in {folder} hold no images "
                               f"({', '.join(sorted(IMAGE_SUFFIXES))})")
    return Files(subset, folder, files, labels, classnames, templates_name, templates,
                  f"{folder} (image folders)")




def folder_datasets(data_root: Path) -> list[str]:
    root = data_root / FOLDER_ROOT
    return [f"folder:{name}" for name in subfolders(root)] if root.is_dir() else []
