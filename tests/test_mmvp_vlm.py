"""MMVP-VLM: Questions.csv + 'MLLM_VLM Images/', the pattern of each pair by its position, and the
pair accuracy per pattern and on average, by hand under the strict and the reference tie rule."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from benchmark_fixtures.mmvp_vlm import TYPES, mmvp_rows, write_mmvp

from benchmarks.mmvp import PATTERNS, MMVPVLM
from harness.errors import BadRecordError, HarnessError, MissingDataError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mmvp")
    write_mmvp(root / "mmvp_vlm")
    return root


def test_reads_the_135_pairs_with_patterns_by_position(root):
    bench = MMVPVLM(root)
    items = bench.items()
    rows = mmvp_rows()
    assert len(items) == 135 and items[0].id == "1-2" and items[-1].id == "269-270"
    assert items[0].texts == (f"a photo of {rows[0][2]}", f"a photo of {rows[1][2]}") and items[0].truth == (0, 1)
    assert items[0].images == ("Orientation/1.jpg", "Orientation/2.jpg")
    assert [item.meta["pattern"] for item in items[::15]] == list(PATTERNS)
    assert {item.meta["pattern"] for item in items[15:30]} == {"Presence of Specific Features"}
    assert items[-1].meta["type"] == "Camera_Perspective"
    for item in (items[0], items[-1]):
        image = bench.load_image(item.images[1])
        assert image.mode == "RGB" and image.size == (24, 24)
    by_type = MMVPVLM(root, patterns="type").items()
    assert [item.meta["pattern"] for item in by_type[::15]] == list(TYPES)


def test_readme_folder_name_hub_snapshot_and_prompt(tmp_path, monkeypatch):
    write_mmvp(tmp_path / "data" / "mmvp_vlm", pairs=2, images_folder="MMVP_VLM_Images")
    assert len(MMVPVLM(tmp_path / "data").items()) == 2
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "datasets--MMVP--MMVP_VLM"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    write_mmvp(repo / "snapshots" / commit, pairs=3)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    bench = MMVPVLM(tmp_path / "empty", prompt="{}")
    items = bench.items()
    assert len(items) == 3 and items[0].texts[0] == mmvp_rows(3)[0][2]
    assert bench.load_image(items[2].images[0]).size == (24, 24)
    assert MMVPVLM.describe_data(tmp_path / "empty")[0].found
    with pytest.raises(HarnessError, match="prompt='a photo' .* must contain"):
        MMVPVLM(tmp_path, prompt="a photo")


def test_the_odd_question_id_names_the_first_image(tmp_path):
    folder = tmp_path / "mmvp_vlm"
    write_mmvp(folder, pairs=1)
    (folder / "MLLM_VLM Images" / "Orientation" / "1.jpg").rename(folder / "MLLM_VLM Images" / "Orientation" / "3.jpg")
    with open(folder / "Questions.csv", "w", newline="") as f:  # the pair listed even id first
        csv.writer(f).writerows([["Question ID", "Type", "Statement"], [2, "Orientation", "faces right"],
                                 [3, "Orientation", "faces left"]])
    item = MMVPVLM(tmp_path).items()[0]
    assert item.images == ("Orientation/2.jpg", "Orientation/3.jpg")
    # the reference's truth: the statement of the odd id (3) belongs to image 1 (2.jpg)
    assert item.texts == ("a photo of faces left", "a photo of faces right")


def reference_pattern_scores(scores: list[np.ndarray]) -> dict[str, float]:
    """The reference script's decision written out: per statement a softmax over the two images,
    image 1 when its probability > 0.5; truth from question-id parity (odd first in the fixture);
    pattern = pair index // 15; score = pairs right / (pairs // 9) * 100."""
    right = dict.fromkeys(PATTERNS, 0)
    for k, s in enumerate(scores):
        picks = []
        for text in (0, 1):
            logits = s[:, text]
            p1 = np.exp(logits[0]) / np.exp(logits).sum()
            picks.append("img1" if p1 > 0.5 else "img2")
        if picks == ["img1", "img2"]:
            right[PATTERNS[k // 15]] += 1
    return {p: 100 * c / (len(scores) // 9) for p, c in right.items()}


def test_pair_accuracy_by_hand_strict_and_official(root):
    rng = np.random.default_rng(0)
    # scores of 0 or 1 tie often, so the two rules differ on many pairs
    scores = [rng.integers(0, 2, size=(2, 2)).astype(float) for _ in range(135)]
    scores[0] = np.array([[1.0, 0.0], [0.0, 1.0]])  # right under both rules
    scores[1] = np.array([[1.0, 0.5], [0.0, 0.5]])  # statement 2 tied: official right, strict wrong
    scores[2] = np.array([[0.5, 0.0], [0.5, 1.0]])  # statement 1 tied: wrong under both
    official = MMVPVLM(root, ties="official")
    strict = MMVPVLM(root)
    items = strict.items()
    assert [official.pair_correct(s) for s in scores[:3]] == [True, True, False]
    assert [strict.pair_correct(s) for s in scores[:3]] == [True, False, False]

    reference = reference_pattern_scores(scores)
    rows = {(r.subset, r.metric): r for r in official.metrics(items, scores, seed=0)}
    for pattern in PATTERNS:
        assert rows[(f"pattern={pattern}", "pair_accuracy")].value == pytest.approx(reference[pattern])
        assert rows[(f"pattern={pattern}", "pair_accuracy")].n == 15
    assert rows[("average", "pair_accuracy")].value == pytest.approx(np.mean(list(reference.values())))

    strict_rows = {(r.subset, r.metric): r for r in strict.metrics(items, scores, seed=0)}
    for i, pattern in enumerate(PATTERNS):
        block = scores[15 * i:15 * i + 15]
        by_hand = 100 * np.mean([s[0, 0] > s[1, 0] and s[1, 1] > s[0, 1] for s in block])
        assert strict_rows[(f"pattern={pattern}", "pair_accuracy")].value == pytest.approx(by_hand)
        assert strict_rows[(f"pattern={pattern}", "pair_accuracy")].value <= rows[(f"pattern={pattern}",
                                                                                   "pair_accuracy")].value
    first = f"pattern={PATTERNS[0]}"
    assert strict_rows[(first, "pair_accuracy")].value < rows[(first, "pair_accuracy")].value
    for row in strict_rows.values():
        assert row.ci_low <= row.value <= row.ci_high


def test_missing_data_and_bad_files_are_named(tmp_path):
    with pytest.raises(MissingDataError) as err:
        MMVPVLM(tmp_path).items()
    message = str(err.value)
    assert str(tmp_path / "mmvp_vlm" / "Questions.csv") in message and "hub cache" in message
    assert "not the datasets cache" in message and "huggingface-cli download MMVP/MMVP_VLM" in message
    assert not any(r.found for r in MMVPVLM.describe_data(tmp_path))

    folder = tmp_path / "mmvp_vlm"
    write_mmvp(folder, pairs=2)
    lines = (folder / "Questions.csv").read_text().splitlines()
    (folder / "Questions.csv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(BadRecordError, match="3 statements, an odd number; line 4 has no partner"):
        MMVPVLM(tmp_path).items()
    (folder / "Questions.csv").write_text("\n".join([*lines[:2], "two,Orientation,x", *lines[3:]]) + "\n")
    with pytest.raises(BadRecordError, match="line 3: question id 'two' is not a whole number"):
        MMVPVLM(tmp_path).items()
    (folder / "Questions.csv").write_text("\n".join([*lines[:2], "3,Orientation,x", *lines[3:]]) + "\n")
    with pytest.raises(BadRecordError, match="question ids 1 and 3 of a pair must be one odd and one even"):
        MMVPVLM(tmp_path).items()
