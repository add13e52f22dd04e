"""Retrieval: the Karpathy layout, recall@k computed by hand (ties both ways), the three ranking
paths agreeing, resume after an interruption, and what the store keeps per query."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
import torch
from benchmark_fixtures.retrieval import SHARED_CAPTION, write
from factories_ranking import TableScorer, eighths_table, full_matrix, hand_recall

from benchmarks.retrieval import Retrieval
from harness import ranking
from harness.api import Item, ScorerConfig
from harness.errors import BadRecordError, HarnessError, MissingDataError
from harness.ranking import TOP_K, record_dtype
from harness.runner import evaluate
from harness.store import ScoreStore
from models.clip import ClipScorer


@pytest.fixture()
def root(tmp_path):
    write(tmp_path, 6)
    return tmp_path


def test_reads_the_karpathy_layout_and_names_bad_records(root, tmp_path_factory):
    bench = Retrieval(root)
    items = bench.items()
    assert [i.id for i in items[:2]] == ["coco/0", "coco/1"] and len(items) == 12
    assert items[0].images == ("coco/val2014/COCO_val2014_000000391895.jpg",)
    assert len(items[2].texts) == 6 and items[0].texts[-1] == items[1].texts[-1] == SHARED_CAPTION
    assert bench.load_image(items[7].images[0]).size == (64, 64)
    assert {r.what: r.found for r in Retrieval.describe_data(root)} == {
        "COCO Karpathy test annotation (shared with aro)": True, "COCO images (shared with aro)": True,
        "Flickr30k Karpathy test annotation (shared with aro)": True, "Flickr30k images (shared with aro)": True}

    (root / "flickr30k" / "flickr30k_test.json").unlink()
    assert [i.meta["subset"] for i in Retrieval(root).items()] == ["coco"] * 6
    bench = Retrieval(root)
    bench.items()
    assert "flickr30k_test.json not found" in bench.skipped["flickr30k"]
    with pytest.raises(MissingDataError, match="flickr30k_test.json not found.*request form"):
        Retrieval(root, "flickr30k").items()
    with pytest.raises(MissingDataError, match="coco_karpathy_test.json not found"):
        Retrieval(tmp_path_factory.mktemp("empty")).items()

    path = root / "coco" / "coco_karpathy_test.json"
    records = json.loads(path.read_text())
    records[3]["caption"] = []
    path.write_text(json.dumps(records))
    with pytest.raises(BadRecordError, match=r"record 3 of .*coco_karpathy_test.json: .*caption=\[\]"):
        Retrieval(root, "coco").items()
    del records[4]["image"]
    records[3]["caption"] = ["fixed"]
    path.write_text(json.dumps(records))
    with pytest.raises(BadRecordError, match="record 4 of .*coco_karpathy_test.json lacks field 'image'"):
        Retrieval(root, "coco").items()
    (root / "coco" / "val2014" / "COCO_val2014_000000391895.jpg").unlink()
    with pytest.raises(MissingDataError, match="COCO_val2014_000000391895.jpg not found"):
        Retrieval(root, "coco").load_image("coco/val2014/COCO_val2014_000000391895.jpg")


@pytest.mark.parametrize("embeds", [True, False], ids=["embeddings", "pair-by-pair"])
def test_recall_equals_a_hand_computation_under_both_tie_rules(root, tmp_path, embeds):
    items = Retrieval(root, "coco").items()
    table = eighths_table(items)
    matrix, image_positives, text_positives = full_matrix(items, table)
    rows = {}
    for ties in ("strict", "lenient"):
        result = evaluate(TableScorer(table, embeds), Retrieval(root, "coco", ties=ties), ScoreStore(tmp_path / "s.db"),
                          workers=0, chunk_items=4, progress=False)
        rows[ties] = {r.metric: r for r in result.rows}
        for k in (1, 5, 10):
            i2t, t2i = rows[ties][f"i2t_recall@{k}"], rows[ties][f"t2i_recall@{k}"]
            assert i2t.value == pytest.approx(hand_recall(matrix, image_positives, k, ties == "strict"))
            assert t2i.value == pytest.approx(hand_recall(matrix.T, text_positives, k, ties == "strict"))
            assert (i2t.n, t2i.n) == (6, 31) and i2t.details["ties"] == ties
        for item, own, record in zip(result.items, result.scores, result.rankings):
            assert own.tolist() == [[table[item.images[0]][t] for t in item.texts]]
            assert record.shape == (1 + len(item.texts),)
    # eighths tie often: the rules must disagree somewhere, or this test proves nothing about ties
    assert any(rows["strict"][m].value < rows["lenient"][m].value for m in rows["strict"])
    assert all(rows["strict"][m].value <= rows["lenient"][m].value for m in rows["strict"])


def test_the_shared_caption_ties_exactly_and_only_counts_against_the_strict_rule(root, tmp_path):
    items = Retrieval(root, "coco").items()
    table = eighths_table(items)
    for ref in table:
        table[ref] = {t: 0.0 for t in table[ref]}
    table[items[0].images[0]][SHARED_CAPTION] = 1.0  # image 0's best text is the one image 1 also has
    result = evaluate(TableScorer(table), Retrieval(root, "coco"), ScoreStore(tmp_path / "s.db"), workers=0,
                      progress=False)
    entry = result.rankings[0][0]
    assert (entry["best"], entry["above"], entry["tied"]) == (1.0, 0, 1)  # image 1's copy ties with it
    assert entry["top_index"][:2].tolist() == [4, 9]  # both copies first, the lower gallery index first


def test_interrupted_ranking_resumes_from_the_stored_chunks(root, tmp_path):
    items = Retrieval(root, "coco").items()
    table = eighths_table(items)

    class FailingStore(ScoreStore):
        def put_rankings(self, *args, **kwargs):
            if self.calls == 1:
                raise KeyboardInterrupt
            self.calls += 1
            super().put_rankings(*args, **kwargs)

    store = FailingStore(tmp_path / "s.db")
    store.calls = 0
    with pytest.raises(KeyboardInterrupt):
        evaluate(TableScorer(table), Retrieval(root, "coco"), store, workers=0, chunk_items=2, progress=False)
    resumed = evaluate(TableScorer(table), Retrieval(root, "coco"), ScoreStore(tmp_path / "s.db"), workers=0,
                       chunk_items=2, progress=False)
    assert resumed.scored_now == 4  # the first chunk of 2 items was kept
    clean = evaluate(TableScorer(table), Retrieval(root, "coco"), ScoreStore(tmp_path / "clean.db"), workers=0,
                     progress=False)
    assert [(r.metric, r.value, r.ci_low, r.ci_high) for r in resumed.rows] == \
           [(r.metric, r.value, r.ci_low, r.ci_high) for r in clean.rows]
    assert all((a == b).all() for a, b in zip(resumed.rankings, clean.rankings))
    again = evaluate(TableScorer(table), Retrieval(root, "coco"), ScoreStore(tmp_path / "s.db"), workers=0,
                     progress=False)
    assert again.scored_now == 0


def test_the_store_keeps_a_fixed_size_per_query_whatever_the_gallery(tmp_path):
    sizes = {}
    for n in (6, 12):
        root = tmp_path / f"n{n}"
        write(root, n)
        items = Retrieval(root, "flickr30k").items()
        evaluate(TableScorer(eighths_table(items)), Retrieval(root, "flickr30k"), ScoreStore(root / "s.db"),
                 workers=0, progress=False)
        with sqlite3.connect(root / "s.db") as db:
            blobs = db.execute("SELECT item_id, length(record), length(scores) FROM rankings").fetchall()
            assert db.execute("SELECT count(*) FROM scores").fetchone() == (0,)  # no score matrix anywhere
        sizes[n] = {item_id: (record, own) for item_id, record, own in blobs}
    # an item's record holds 1 + 5 queries of K candidates each, the same bytes in a gallery twice as big
    assert {i: sizes[12][i] for i in sizes[6]} == sizes[6]
    assert record_dtype(TOP_K).itemsize == TOP_K * (4 + 8) + 3 * 8
    assert all(record <= 6 * record_dtype(TOP_K).itemsize + 512 for record, _ in sizes[12].values())


def test_a_limited_gallery_is_ranked_on_its_own(root, tmp_path):
    bench = Retrieval(root, "coco")
    items = bench.items()
    table = eighths_table(items)
    store = ScoreStore(tmp_path / "s.db")
    evaluate(TableScorer(table), bench, store, workers=0, progress=False)
    small = evaluate(TableScorer(table), bench, store, items=items[:3], workers=0, progress=False)
    assert small.scored_now == 3  # another gallery, so nothing of the whole one is reused
    texts = sum(len(i.texts) for i in items[:3])
    assert all(r[0]["top_index"].max() < texts and r[1:]["top_index"].max() < 3 for r in small.rankings)
    matrix, image_positives, _ = full_matrix(items[:3], table)
    rows = {r.metric: r.value for r in small.rows}
    assert rows["i2t_recall@1"] == pytest.approx(hand_recall(matrix, image_positives, 1, True))


def test_scorers_without_embeddings_are_refused_on_big_galleries(root, tmp_path, monkeypatch):
    items = Retrieval(root, "coco").items()
    monkeypatch.setattr(ranking, "MAX_PAIRS_WITHOUT_EMBEDDINGS", 100)
    with pytest.raises(HarnessError, match=r"372 pairs.*--shortlist clip:ViT-B-32:openai:k=10"):
        evaluate(TableScorer(eighths_table(items), embeds=False), Retrieval(root, "coco"),
                 ScoreStore(tmp_path / "s.db"), workers=0, progress=False)


def test_the_tiny_clip_ranks_as_its_own_score_matrix_says(root, tmp_path, tiny_clip):
    """The embedding path against CLIP's ordinary score() on the whole gallery as one item: the
    same recall under both tie rules (the tiny CLIP's distinct similarities differ by 2e-4 or more;
    the shared caption ties exactly in both)."""
    bench = Retrieval(root, "coco")
    items = bench.items()
    clip = ClipScorer(ScorerConfig(model=f"local-dir:{tiny_clip.local_dir}", options={"batch_size": 4}))
    refs, texts = [i.images[0] for i in items], tuple(t for i in items for t in i.texts)
    transform = clip.image_transform()
    clip.add_images(refs, torch.stack([transform(bench.load_image(r)) for r in refs]))
    matrix = np.concatenate([clip.score([Item("all", (r,), texts, (0,))])[0] for r in refs])
    clip.clear_images()
    owner = [i for i, item in enumerate(items) for _ in item.texts]
    image_positives = [{j for j, o in enumerate(owner) if o == i} for i in range(len(items))]
    for ties in ("strict", "lenient"):
        result = evaluate(clip, Retrieval(root, "coco", ties=ties), ScoreStore(tmp_path / "s.db"), workers=0,
                          progress=False)
        rows = {r.metric: r.value for r in result.rows}
        for k in (1, 5, 10):
            assert rows[f"i2t_recall@{k}"] == pytest.approx(hand_recall(matrix, image_positives, k, ties == "strict"))
            assert rows[f"t2i_recall@{k}"] == pytest.approx(hand_recall(matrix.T, [{o} for o in owner], k,
                                                                        ties == "strict"))
        for item, own, row in zip(items, result.scores, matrix):
            np.testing.assert_allclose(own[0], row[[j for j, o in enumerate(owner) if items[o] is item]], atol=1e-6)
