"""SugarCrepe++: its layout, the ITT and TOT metrics by hand (ties included), and text-query items
with a scorer that can compare texts (CLIP) and one that cannot."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from benchmark_fixtures import sugarcrepe_pp as fixture

from benchmarks.sugarcrepe_pp import SugarCrepePP
from harness.api import Item, ScorerConfig
from harness.errors import BadRecordError, MissingDataError
from harness.report import make_report
from harness.results import format_metric_rows, format_table, pivot, read_leaderboard
from harness.runner import evaluate, run
from harness.store import ScoreStore
from models.clip import ClipScorer


@pytest.fixture()
def root(tmp_path):
    fixture.write(tmp_path, 3)
    return tmp_path


def test_reads_the_repository_layout_and_reports_missing_subsets(root):
    bench = SugarCrepePP(root)
    items = bench.items()
    assert [i.id for i in items[:4]] == ["replace-att/0", "replace-att/0/tot", "replace-att/1", "replace-att/1/tot"]
    image_item, text_item = items[0], items[1]
    p1, p2, neg = ("a red cup beside a blue plate, take 0", "beside a blue plate there is a red cup, take 0",
                   "a blue cup beside a red plate, take 0")
    assert image_item.images == ("000000397133.jpg",) and image_item.texts == (p1, p2, neg)
    assert text_item.images == () and text_item.query_texts == (p1, p2) and text_item.texts == (p1, p2, neg)
    assert text_item.truth == (1, 0)
    assert {i.meta["subset"] for i in items} == {"replace-att", "swap-obj"} and len(items) == 12
    assert set(bench.skipped) == {"replace-obj", "replace-rel", "swap-att"}
    assert "replace_obj.json not found" in bench.skipped["replace-obj"]
    image = bench.load_image(image_item.images[0])
    assert image.mode == "RGB" and image.size == (64, 64)
    assert [r.found for r in SugarCrepePP.describe_data(root)] == [True, True, False, False, False, True]


def test_missing_data_and_bad_records_are_named(root, tmp_path):
    with pytest.raises(MissingDataError, match="swap_att.json not found.*huggingface-cli download Aman-J"):
        SugarCrepePP(root, "swap-att").items()
    with pytest.raises(MissingDataError, match="val2017 not found"):
        SugarCrepePP(tmp_path / "nothing").items()
    path = root / "sugarcrepe_pp" / "data" / "swap_obj.json"
    records = json.loads(path.read_text())
    del records[2]["caption2"]
    path.write_text(json.dumps(records))
    with pytest.raises(BadRecordError, match="record 2 of .*swap_obj.json lacks field 'caption2'"):
        SugarCrepePP(root, "swap-obj").items()
    path.write_text(json.dumps({"0": records[0]}))
    with pytest.raises(BadRecordError, match="should hold a JSON list"):
        SugarCrepePP(root, "swap-obj").items()


def _pair(subset: str, k: int, itt: list[float], tot: list[list[float]]):
    texts = ("p1", "p2", "neg")
    meta = {"subset": subset}
    return [(Item(id=f"{subset}/{k}", images=("x",), texts=texts, truth=(0,), meta=meta), np.array([itt])),
            (Item(id=f"{subset}/{k}/tot", images=(), query_texts=("p1", "p2"), texts=texts, truth=(1, 0), meta=meta),
             np.array(tot))]


# (subset, ITT row [P1, P2, N], TOT matrix [P1, P2] x [P1, P2, N])
CASES = [
    ("swap-obj", [0.9, 0.8, 0.1], [[1, .7, .2], [.7, 1, .3]]),  # all right
    ("swap-obj", [0.5, 0.5, 0.5], [[1, .4, .4], [.4, 1, .1]]),  # ties: wrong under the strict rule
    ("swap-obj", [0.9, 0.2, 0.3], [[1, .6, .2], [.6, 1, .7]]),  # P2 loses to N in both tasks
    ("swap-obj", [0.3, 0.9, 0.4], [[1, .9, .1], [.05, 1, .2]]),  # t(P1, P2) is read from row P1 only
    ("replace-att", [.6, .7, .5], [[1, .5, .6], [.5, 1, .2]]),
    ("replace-att", [.1, .2, .3], [[1, .8, .3], [.8, 1, .3]]),
]


def _hand_items():
    pairs = [p for k, (subset, itt, tot) in enumerate(CASES) for p in _pair(subset, k, itt, tot)]
    return [i for i, _ in pairs], [m for _, m in pairs]


def test_itt_and_tot_hand_computed_with_strict_ties(tmp_path):
    items, scores = _hand_items()
    rows = {(r.subset, r.metric): r for r in SugarCrepePP(tmp_path).metrics(items, scores, seed=0)}
    # swap-obj: ITT right only for case 0; P1 beats N in 0 and 2, P2 in 0 and 3; TOT right in 0 and 3
    assert rows[("swap-obj", "itt")].value == pytest.approx(25.0)
    assert rows[("swap-obj", "p1_vs_neg")].value == pytest.approx(50.0)
    assert rows[("swap-obj", "p2_vs_neg")].value == pytest.approx(50.0)
    assert rows[("swap-obj", "tot")].value == pytest.approx(50.0)
    assert rows[("replace-att", "itt")].value == pytest.approx(50.0)
    assert rows[("replace-att", "tot")].value == pytest.approx(50.0)
    assert rows[("mean", "itt")].value == pytest.approx(37.5)  # mean of the subsets' accuracies
    assert rows[("mean", "tot")].value == pytest.approx(50.0)
    assert rows[("mean", "itt")].details == {"subsets": ["replace-att", "swap-obj"]}
    assert rows[("swap-obj", "itt")].details == {"expected_n": 245} and rows[("swap-obj", "itt")].n == 4
    # A lenient rule (>=) would count case 1 right in both tasks: 50 and 75 instead of 25 and 50.
    swap = [(s, t) for (subset, s, t) in CASES if subset == "swap-obj"]
    lenient_itt = np.mean([p1 >= n and p2 >= n for (p1, p2, n), _ in swap]) * 100
    lenient_tot = np.mean([t[0][1] >= t[0][2] and t[0][1] >= t[1][2] for _, t in swap]) * 100
    assert (lenient_itt, lenient_tot) == (50.0, 75.0)
    low, high = rows[("mean", "itt")].ci_low, rows[("mean", "itt")].ci_high
    assert low <= 37.5 <= high


def test_tot_rows_say_not_computed_when_the_text_scores_are_missing(tmp_path):
    items, scores = _hand_items()
    scores = [None if item.query_texts else s for item, s in zip(items, scores)]
    rows = {(r.subset, r.metric): r for r in SugarCrepePP(tmp_path).metrics(items, scores, seed=0)}
    for key in (("swap-obj", "tot"), ("replace-att", "tot"), ("mean", "tot")):
        row = rows[key]
        assert math.isnan(row.value) and row.n == 0 and row.ci_low is None
        assert "no text-to-text score" in row.details["not_computed"]
    assert rows[("swap-obj", "itt")].value == pytest.approx(25.0)  # the image task is unaffected


def test_clip_scores_text_queries_as_cosines_of_its_text_embeddings(root, tiny_clip, tmp_path):
    scorer = ClipScorer(ScorerConfig(model=f"local-dir:{tiny_clip.local_dir}", options={"batch_size": 4}))
    bench = SugarCrepePP(root)
    result = evaluate(scorer, bench, ScoreStore(tmp_path / "s.sqlite"), workers=0, progress=False)
    assert not result.not_computed
    item, matrix = result.items[1], result.scores[1]
    assert item.query_texts and matrix.shape == (2, 3)
    embedded = np.stack([scorer._text_cache[t].numpy() for t in item.texts])
    np.testing.assert_allclose(matrix, embedded[:2] @ embedded.T, atol=1e-6)
    np.testing.assert_allclose(np.diag(matrix[:, :2]), 1.0, atol=1e-5)  # a text is its own best match
    rows = {(r.subset, r.metric): r.value for r in result.rows}
    for subset in ("replace-att", "swap-obj"):
        pairs = [(i, s) for i, s in zip(result.items, result.scores) if i.meta["subset"] == subset]
        tot = [s[0, 1] > s[0, 2] and s[0, 1] > s[1, 2] for i, s in pairs if i.query_texts]
        itt = [s[0, 0] > s[0, 2] and s[0, 1] > s[0, 2] for i, s in pairs if not i.query_texts]
        assert rows[(subset, "tot")] == pytest.approx(100 * np.mean(tot))
        assert rows[(subset, "itt")] == pytest.approx(100 * np.mean(itt))
    # resume: the text-query items are in the store too, keyed by their query texts
    again = evaluate(scorer, bench, ScoreStore(tmp_path / "s.sqlite"), workers=0, progress=False)
    assert again.scored_now == 0


class ImageOnlyClip(ClipScorer):
    """The CLIP scorer as a scorer without a text-to-text score would declare itself."""

    compares_texts = False

    def score(self, items):
        assert not any(i.query_texts for i in items), "the runner gave a text-query item to an image-only scorer"
        return super().score(items)


def test_a_scorer_without_text_scores_runs_and_every_output_says_what_was_not_computed(root, tiny_clip, tmp_path,
                                                                                       monkeypatch):
    from harness import registry

    monkeypatch.setattr(registry.SCORERS, "get", lambda name: ImageOnlyClip)
    results_dir = tmp_path / "results"
    out = run(scorer="clip", bench="sugarcrepe-pp", model=f"local-dir:{tiny_clip.local_dir}", data_root=root,
              results_dir=results_dir, workers=0, progress=False)
    assert out.evaluation.not_computed == {"scorer clip has no text-to-text score (compares_texts is False)": 6}
    assert out.evaluation.scored_now == 6
    tot = [r for r in out.rows if r["metric"] == "tot"]
    assert len(tot) == 3 and all(math.isnan(r["value"]) and r["n"] == 0 for r in tot)
    assert all("no text-to-text score" in r["details"]["not_computed"] for r in tot)
    assert "not computed: sugarcrepe-pp swap-obj tot: the scorer has no text-to-text score" in \
        format_metric_rows(out.rows)

    records = [json.loads(line) for line in (out.run_dir / "item_scores.jsonl").read_text().splitlines()]
    text_records = [r for r in records if "query_texts" in r]
    assert len(text_records) == 6 and all(r["scores"] is None for r in text_records)
    assert all(r["scores"] is not None and "itt" in r for r in records if "query_texts" not in r)
    config = json.loads((out.run_dir / "config.json").read_text())
    assert config["not_computed"] == out.evaluation.not_computed

    board = read_leaderboard(results_dir)
    assert board[board["metric"] == "tot"]["value"].isna().all()
    table = format_table(pivot(board))
    assert "sugarcrepe-pp/swap-obj/tot" in table and "nan" not in table
    report = make_report(results_dir).read_text()
    assert "not computed: the scorer has no text-to-text score" in report


def test_a_text_query_item_has_no_images_and_one_truth_per_query():
    with pytest.raises(ValueError, match="a text-query item has no images"):
        Item(id="x", images=("a.jpg",), query_texts=("p1",), texts=("p1", "n"), truth=(0,))
    with pytest.raises(ValueError, match="truth has 1 entries for 2 query texts"):
        Item(id="x", images=(), query_texts=("p1", "p2"), texts=("p1", "p2", "n"), truth=(1,))
    assert Item(id="x", images=(), query_texts=("p1", "p2"), texts=("p1", "p2", "n"), truth=(1, 0)).matrix_rows == 2
