"""The shapes world: deterministic scenes, held-out combinations, swap captions, geometry, metrics."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.shapes import (
    COLOURS,
    SUBSETS,
    Shapes,
    held_out,
    in_batch_swap_rate,
    is_swap,
    render,
    scene_from_ref,
    scenes,
    training_pairs,
    write_training_set,
)
from harness.api import Item


def test_scenes_are_deterministic_and_splits_never_share_a_combination():
    assert scenes(20, 0, test=True) == scenes(20, 0, test=True)
    assert scenes(20, 0, test=True) != scenes(20, 1, test=True)
    assert all(held_out(s.a, s.b) for s in scenes(200, 0, test=True))
    assert not any(held_out(s.a, s.b) for s in scenes(500, 0, test=False))
    for scene in scenes(50, 3, test=True):
        assert scene_from_ref(scene.ref()) == scene


def test_swapped_captions_use_the_same_words():
    for scene in scenes(100, 0, test=True):
        assert is_swap(scene.caption(), scene.swapped_objects().caption())
        assert is_swap(scene.caption(), scene.swapped_colours().caption())


def _centre(image, colour) -> np.ndarray:
    pixels = np.argwhere((np.asarray(image) == np.array(colour)).all(axis=-1))
    return pixels.mean(axis=0)  # (row, column)


@pytest.mark.parametrize("relation, axis, sign", [("left of", 1, -1), ("right of", 1, 1), ("above", 0, -1),
                                                  ("below", 0, 1)])
def test_rendering_puts_a_where_the_caption_says(relation, axis, sign):
    scene = scenes(1, 0, test=True)[0]
    scene = type(scene)(scene.a, scene.b, relation, 0)
    image = render(scene, 64)
    a, b = _centre(image, COLOURS[scene.a.colour]), _centre(image, COLOURS[scene.b.colour])
    assert sign * (a[axis] - b[axis]) > 10
    swapped = render(scene.swapped_objects(), 64)
    assert not np.array_equal(np.asarray(image), np.asarray(swapped))


def test_in_batch_swap_rate():
    captions = ["a b c", "c b a", "x y", "y z", "p q", "q p r"]
    assert in_batch_swap_rate(captions, 2) == pytest.approx(1 / 3)  # only the first batch holds a swap
    assert in_batch_swap_rate(captions, 6) == 1.0
    pairs = training_pairs(1024, seed=0)
    rate = in_batch_swap_rate([c for _, c in pairs], 32)
    assert 0 <= rate < 0.5  # a varied world: most batches hold no same-words negative


def test_training_set_feeds_finetune(tmp_path):
    from models.finetune import FinetuneConfig, read_samples

    path = write_training_set(tmp_path / "train", 12)
    samples = read_samples(FinetuneConfig(clip="x", sd="y", out="z", captions=str(path)))
    assert len(samples) == 12 and all(s.image.is_file() for s in samples)


def test_benchmark_subsets_and_metrics(tmp_path):
    bench = Shapes(tmp_path, n=5)
    items = bench.items()
    assert [sum(i.meta["subset"] == s for i in items) for s in SUBSETS] == [5, 5, 5, 5]
    assert len({i.id for i in items}) == 20
    wino = [i for i in items if i.meta["subset"] == "winoground"]
    assert all(len(i.images) == 2 and is_swap(*i.texts) for i in wino)
    zeroshot = [i for i in items if i.meta["subset"] == "zeroshot"]
    assert len({id(i.texts) for i in zeroshot}) == 1  # one shared class tuple
    assert bench.load_image(zeroshot[0].images[0]).size == (32, 32)

    right2, right1 = np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[0.9, 0.1]])
    tie1 = np.array([[0.5, 0.5]])
    scores = {"winoground": right2, "relation": right1, "attribute": tie1}
    matrices = []
    for item in items:
        subset = item.meta["subset"]
        if subset == "zeroshot":
            row = np.zeros((1, len(item.texts)))
            row[0, item.truth[0]] = 1.0
            matrices.append(row)
        else:
            matrices.append(scores[subset])
    rows = {(r.subset, r.metric): r.value for r in bench.metrics(items, matrices, seed=0)}
    assert rows == {("winoground", "text"): 100.0, ("winoground", "image"): 100.0, ("winoground", "group"): 100.0,
                    ("relation", "accuracy"): 100.0, ("attribute", "accuracy"): 0.0,
                    ("zeroshot", "accuracy"): 100.0}


def test_one_subset_and_options(tmp_path):
    items = Shapes(tmp_path, "relation", n="3", seed="2").items()
    assert [i.id for i in items] == ["relation/0", "relation/1", "relation/2"]
    assert isinstance(items[0], Item)
    with pytest.raises(Exception, match="n=0 for benchmark shapes: must be at least 1"):
        Shapes(tmp_path, n=0)
