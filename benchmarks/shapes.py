"""Shapes world: a procedurally generated compositional testbed that needs no download.

Each scene is a small RGB image of two objects (colour, size, shape) in a spatial relation, with
plain English captions. Everything is deterministic from a seed. The world follows the cause of
CLIP's weakness on real data: a large vocabulary and paraphrased captions make captions too many
and too varied to memorise, so batch negatives almost never differ only in composition
(``in_batch_swap_rate`` measures how often they do).

Splits: a training set (``training_pairs``, ``write_training_set`` for ``harness finetune
--captions``) and test subsets registered as benchmarks. A fixed share of object-pair
combinations (unordered pairs of coloured shapes) is held out: tests draw only from held-out
combinations and training never sees them.

- ``shapes:winoground``: 2x2, a scene and the same scene with its objects' places exchanged, and
  the two captions (same words, other order); Winoground's strict text/image/group metrics.
- ``shapes:relation``: 1x2, the true caption against the one with the objects swapped.
- ``shapes:attribute``: 1x2, the true caption against the one with the colours swapped.
- ``shapes:zeroshot``: one object; its shape among all shapes, prompts from a few templates.
"""

from __future__ import annotations

import csv
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from harness.api import Benchmark, DataRequirement, Item, MetricRow, Prompts
from harness.errors import HarnessError
from harness.metrics import (accuracy_row, by_subset, grouped_accuracy_rows, strictly_first, winoground_correct,
                             winoground_outcome)
from harness.options import Int, Option

COLOURS = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (50, 80, 220), "yellow": (235, 210, 40),
    "purple": (140, 60, 170), "orange": (240, 140, 30), "pink": (240, 130, 190), "brown": (130, 80, 40),
    "gray": (128, 128, 128), "white": (245, 245, 245), "cyan": (40, 200, 210), "black": (15, 15, 15),
}
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "star", "hexagon", "ring")
SIZES = {"small": 0.28, "big": 0.42}  # object width as a share of the image's half
# relation -> (where object A goes relative to B); captions read "A <relation> B"
RELATIONS = {"left of": "horizontal", "right of": "horizontal", "above": "vertical", "below": "vertical"}
TEMPLATES = (  # paraphrases: each keeps A before B, so a swap exchanges the same words
    "a {a} {rel} a {b}",
    "there is a {a} {rel} a {b}",
    "the picture shows a {a} {rel} a {b}",
    "a {a} placed {rel} a {b}",
    "one {a} {rel} one {b}",
)
ZEROSHOT_TEMPLATES = ("a {c}.", "a picture of a {c}.", "a drawing of a {c}.")
HELD_OUT_SHARE = 10  # one object-pair combination in ten is held out for testing
SUBSETS = ("winoground", "relation", "attribute", "zeroshot")
BACKGROUND = (30, 30, 36)


@dataclass(frozen=True)
class Thing:
    colour: str
    size: str
    shape: str

    @property
    def words(self) -> str:
        return f"{self.size} {self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    a: Thing
    b: Thing
    relation: str
    template: int

    def caption(self) -> str:
        return TEMPLATES[self.template].format(a=self.a.words, rel=self.relation, b=self.b.words)

    def swapped_objects(self) -> Scene:
        """The same words in the other order: B <relation> A."""
        return Scene(self.b, self.a, self.relation, self.template)

    def swapped_colours(self) -> Scene:
        return Scene(Thing(self.b.colour, self.a.size, self.a.shape), Thing(self.a.colour, self.b.size, self.b.shape),
                     self.relation, self.template)

    def ref(self) -> str:
        return "|".join([*_thing_ref(self.a), *_thing_ref(self.b), self.relation, str(self.template)])


def _thing_ref(thing: Thing) -> list[str]:
    return [thing.colour, thing.size, thing.shape]


def scene_from_ref(ref: str) -> Scene:
    parts = ref.split("|")
    if len(parts) != 8:
        raise HarnessError(f"not a shapes scene ref: {ref!r}")
    return Scene(Thing(*parts[0:3]), Thing(*parts[3:6]), parts[6], int(parts[7]))


def held_out(a: Thing, b: Thing) -> bool:
    """Whether the unordered pair of coloured shapes belongs to the test combinations."""
    key = "+".join(sorted([f"{a.colour} {a.shape}", f"{b.colour} {b.shape}"]))
    return zlib.crc32(key.encode()) % HELD_OUT_SHARE == 0


def _random_scene(rng: np.random.Generator, test: bool) -> Scene:
    colours, sizes = list(COLOURS), list(SIZES)
    while True:
        a = Thing(colours[rng.integers(len(colours))], sizes[rng.integers(len(sizes))], SHAPES[rng.integers(len(SHAPES))])
        b = Thing(colours[rng.integers(len(colours))], sizes[rng.integers(len(sizes))], SHAPES[rng.integers(len(SHAPES))])
        # two distinguishable objects whose colour swap is a different scene
        if a.colour == b.colour or (a.shape == b.shape and a.size == b.size):
            continue
        if held_out(a, b) == test:
            return Scene(a, b, list(RELATIONS)[rng.integers(len(RELATIONS))], int(rng.integers(len(TEMPLATES))))


def scenes(n: int, seed: int, test: bool) -> list[Scene]:
    """``n`` scenes of the test (held-out) or training combinations, deterministic from the seed."""
    rng = np.random.default_rng([seed, int(test)])
    return [_random_scene(rng, test) for _ in range(n)]


def render(scene: Scene, size: int = 32, offsets: Sequence[float] = (0.0, 0.0, 0.0, 0.0)) -> Image.Image:
    """Draw A and B so that "A <relation> B" holds. Positions are fixed per relation; ``offsets``
    (dx_a, dy_a, dx_b, dy_b, as shares of the side) shift the objects for training scenes with
    positional variety. The benchmark's scenes never pass offsets: its test images stay as defined."""
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    half = size / 2
    first, second = (0.25 * size, 0.5 * size), (0.75 * size, 0.5 * size)  # left, right
    if RELATIONS[scene.relation] == "vertical":
        first, second = (0.5 * size, 0.25 * size), (0.5 * size, 0.75 * size)  # top, bottom
    where_a, where_b = (first, second) if scene.relation in ("left of", "above") else (second, first)
    dx_a, dy_a, dx_b, dy_b = (float(v) * size for v in offsets)
    for thing, (cx, cy) in ((scene.a, (where_a[0] + dx_a, where_a[1] + dy_a)),
                            (scene.b, (where_b[0] + dx_b, where_b[1] + dy_b))):
        _draw(draw, thing, cx, cy, SIZES[thing.size] * half)
    return image


def _draw(draw: ImageDraw.ImageDraw, thing: Thing, cx: float, cy: float, r: float) -> None:
    colour = COLOURS[thing.colour]
    box = (cx - r, cy - r, cx + r, cy + r)
    if thing.shape == "circle":
        draw.ellipse(box, fill=colour)
    elif thing.shape == "ring":
        draw.ellipse(box, outline=colour, width=max(1, int(r / 2.5)))
    elif thing.shape == "square":
        draw.rectangle(box, fill=colour)
    elif thing.shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    elif thing.shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=colour)
    elif thing.shape == "cross":
        w = r / 2.5
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=colour)
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=colour)
    elif thing.shape == "star":
        points = [(cx + (r if k % 2 == 0 else r / 2.3) * np.sin(k * np.pi / 5),
                   cy - (r if k % 2 == 0 else r / 2.3) * np.cos(k * np.pi / 5)) for k in range(10)]
        draw.polygon(points, fill=colour)
    elif thing.shape == "hexagon":
        draw.polygon([(cx + r * np.cos(k * np.pi / 3), cy + r * np.sin(k * np.pi / 3)) for k in range(6)], fill=colour)
    else:
        raise HarnessError(f"unknown shape {thing.shape!r}")


def training_pairs(n: int, seed: int = 0) -> list[tuple[Scene, str]]:
    """(scene, caption) pairs of the training combinations."""
    return [(scene, scene.caption()) for scene in scenes(n, seed, test=False)]


def write_training_set(folder: Path, n: int, seed: int = 0, size: int = 32) -> Path:
    """PNG images and a captions.csv (image,caption) that ``harness finetune --captions`` reads."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    path = folder / "captions.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "caption"])
        for i, (scene, caption) in enumerate(training_pairs(n, seed)):
            name = f"images/{i:06d}.png"
            render(scene, size).save(folder / name)
            writer.writerow([name, caption])
    return path


def is_swap(a: str, b: str) -> bool:
    """Two captions with the same words in a different order."""
    return a != b and sorted(a.split()) == sorted(b.split())


def in_batch_swap_rate(captions: Sequence[str], batch_size: int) -> float:
    """Share of consecutive batches that hold at least one pair of captions that are swaps of each
    other: the only negatives that teach composition rather than vocabulary."""
    batches = [captions[i:i + batch_size] for i in range(0, len(captions) - batch_size + 1, batch_size)]
    if not batches:
        return float("nan")
    hits = 0
    for batch in batches:
        bags: dict[tuple[str, ...], set[str]] = {}
        for caption in batch:
            bags.setdefault(tuple(sorted(caption.split())), set()).add(caption)
        hits += any(len(v) > 1 for v in bags.values())
    return hits / len(batches)


class Shapes(Benchmark):
    """Options: ``harness ls shapes``."""

    name = "shapes"
    version = "1"
    subsets = SUBSETS
    comparisons = "matrix"
    scope_details = ("n",)  # a run with fewer items per subset holds the first items of a longer one
    OPTIONS = (
        Option("n", Int(1), 400, "items per subset"),
        Option("seed", Int(0), 0, "which held-out scenes (each seed its own stream)"),
        Option("image_size", Int(16), 32, "scene size in pixels"),
    )

    def __init__(self, data_root: Path, subset: str | None = None, **options: Any) -> None:
        super().__init__(data_root, subset, **options)
        self.n, self.seed, self.image_size = self.options["n"], self.options["seed"], self.options["image_size"]
        self._zeroshot_classes = tuple(
            Prompts(shape, tuple(t.format(c=shape) for t in ZEROSHOT_TEMPLATES)) for shape in SHAPES)

    def items(self) -> list[Item]:
        items: list[Item] = []
        for subset in [self.subset] if self.subset else list(SUBSETS):
            # each subset its own stream of held-out scenes
            pool = scenes(self.n, self.seed * 1000 + SUBSETS.index(subset), test=True)
            for i, scene in enumerate(pool):
                items.append(self._item(subset, i, scene))
        return items

    def _item(self, subset: str, i: int, scene: Scene) -> Item:
        meta = {"subset": subset, "relation": scene.relation}
        if subset == "winoground":
            other = scene.swapped_objects()
            return Item(id=f"{subset}/{i}", images=(scene.ref(), other.ref()), texts=(scene.caption(), other.caption()),
                        truth=(0, 1), meta=meta)
        if subset in ("relation", "attribute"):
            wrong = scene.swapped_objects() if subset == "relation" else scene.swapped_colours()
            return Item(id=f"{subset}/{i}", images=(scene.ref(),), texts=(scene.caption(), wrong.caption()),
                        truth=(0,), meta=meta)
        lone = f"{scene.a.colour}|{scene.a.size}|{scene.a.shape}"
        return Item(id=f"{subset}/{i}", images=(f"single|{lone}",), texts=self._zeroshot_classes,
                    truth=(SHAPES.index(scene.a.shape),), meta=meta)

    def load_image(self, ref: str) -> Image.Image:
        if ref.startswith("single|"):
            colour, size, shape = ref.split("|")[1:]
            image = Image.new("RGB", (self.image_size, self.image_size), BACKGROUND)
            _draw(ImageDraw.Draw(image), Thing(colour, size, shape), self.image_size / 2, self.image_size / 2,
                  SIZES[size] * self.image_size / 2)
            return image
        return render(scene_from_ref(ref), self.image_size)

    def outcome(self, item: Item, scores: np.ndarray) -> dict[str, Any]:
        s = np.asarray(scores)
        if item.meta["subset"] == "winoground":
            return winoground_outcome(s)
        return {"correct": strictly_first(s, item.truth[0])}

    def metrics(self, items: Sequence[Item], scores: Sequence[np.ndarray], seed: int) -> list[MetricRow]:
        rows: list[MetricRow] = []
        for subset, chosen, matrices in by_subset(items, scores, SUBSETS):
            ids = [item.id for item in chosen]
            if subset == "winoground":
                rows += [replace(row, subset=subset)
                         for row in grouped_accuracy_rows(winoground_correct(matrices), {}, seed, ids=ids)]
            else:
                correct = [self.outcome(item, s)["correct"] for item, s in zip(chosen, matrices)]
                rows.append(accuracy_row(subset, "accuracy", np.array(correct), seed, ids=ids))
        return rows

    def details(self) -> dict[str, Any]:
        return {"n": self.n, "seed": self.seed, "image_size": self.image_size}

    @classmethod
    def describe_data(cls, data_root: Path) -> list[DataRequirement]:
        return [DataRequirement("shapes world (generated on the fly, no files)", "(none)", True, "")]
