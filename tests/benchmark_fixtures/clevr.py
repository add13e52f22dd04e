"""GDBench's CLEVR layout (McGill-NLP/diffusion-itm): clevr/captions/{subtask}.json, each mapping
an image file name to two [true caption, false caption] pairs, one per object in the scene, in the
released files' wording; the scenes are RGBA PNGs in clevr/images/."""
from __future__ import annotations

import json
from pathlib import Path

from factories import photo

COLOURS = ("gray", "purple", "brown", "red", "green", "blue", "yellow", "cyan")
SHAPES = ("cylinder", "sphere", "cube")
SUBTASKS = ("pair_binding_size", "pair_binding_color", "recognition_color", "recognition_shape", "spatial",
            "binding_color_shape", "binding_shape_color")


def image_name(j: int) -> str:
    return f"CLEVR_val{j % 5}_{j:06d}.png"


def captions(j: int) -> dict[str, list[list[str]]]:
    """The seven subtasks' pairs for scene j: object a (left, small) and object b (right, large)."""
    ca, cb = COLOURS[j % len(COLOURS)], COLOURS[(j + 3) % len(COLOURS)]
    sa, sb = SHAPES[j % len(SHAPES)], SHAPES[(j + 1) % len(SHAPES)]
    absent_colour = COLOURS[(j + 5) % len(COLOURS)]
    absent_shape = next(s for s in SHAPES if s not in (sa, sb))
    return {
        "pair_binding_size": [[f"A small {sa} and a large {sb}.", f"A large {sa} and a small {sb}."],
                              [f"A large {sb} and a small {sa}.", f"A small {sb} and a large {sa}."]],
        "pair_binding_color": [[f"A {ca} {sa} and a {cb} {sb}.", f"A {cb} {sa} and a {ca} {sb}."],
                               [f"A {cb} {sb} and a {ca} {sa}.", f"A {ca} {sb} and a {cb} {sa}."]],
        "recognition_color": [[f"A {ca} object.", f"A {absent_colour} object."],
                              [f"A {cb} object.", f"A {absent_colour} object."]],
        "recognition_shape": [[f"A {sa}.", f"A {absent_shape}."], [f"A {sb}.", f"A {absent_shape}."]],
        "spatial": [[f"On the left is a {ca} {sa}.", f"On the right is a {ca} {sa}."],
                    [f"On the right is a {cb} {sb}.", f"On the left is a {cb} {sb}."]],
        "binding_color_shape": [[f"A {ca} {sa}.", f"A {cb} {sa}."], [f"A {cb} {sb}.", f"A {ca} {sb}."]],
        "binding_shape_color": [[f"A {ca} {sa}.", f"A {ca} {sb}."], [f"A {cb} {sb}.", f"A {cb} {sa}."]],
    }


def write(root: Path, n: int) -> None:
    """About ``n`` items in all: a scene gives each of the seven subtasks two items (14 items)."""
    write_scenes(root, max(1, n // 14))


def write_scenes(root: Path, n: int, subtasks: tuple[str, ...] = SUBTASKS) -> None:
    """``n`` scenes; every subtask then has 2n items."""
    (root / "clevr" / "images").mkdir(parents=True, exist_ok=True)
    (root / "clevr" / "captions").mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, list[list[str]]]] = {s: {} for s in subtasks}
    for j in range(n):
        photo(60 + j, 48).resize((48, 32)).convert("RGBA").save(root / "clevr" / "images" / image_name(j))
        for subtask, pairs in captions(j).items():
            if subtask in files:
                files[subtask][image_name(j)] = pairs
    for subtask, data in files.items():
        (root / "clevr" / "captions" / f"{subtask}.json").write_text(json.dumps(data))
