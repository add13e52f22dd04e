"""The engine: resume after an interruption, bad scores and images, limits, worker processes."""

from __future__ import annotations

import numpy as np
import pytest
from factories import PhotoBenchmark, write_winoground_jsonl

from benchmarks.winoground import Winoground
from harness import runner
from harness.api import Item, ScorerConfig
from harness.errors import ImageDecodeError, NonFiniteScoreError
from harness.results import read_leaderboard
from harness.runner import evaluate, run
from harness.store import ScoreStore
from models.clip import ClipScorer


class CountingScorer(ClipScorer):
    """The CLIP scorer, counting the items it scores and optionally stopping after some."""

    stop_after: int | None = None

    def __init__(self, config):
        super().__init__(config)
        self.scored: list[str] = []

    def score(self, items):
        if self.stop_after is not None and len(self.scored) + len(items) > self.stop_after:
            raise KeyboardInterrupt
        self.scored += [i.id for i in items]
        return super().score(items)


def _config(tiny_clip, batch_size=4):
    return ScorerConfig(model=f"local-dir:{tiny_clip.local_dir}", options={"batch_size": batch_size})


def test_interrupted_evaluation_resumes_without_rescoring(tiny_clip, wino_parquet_root, tmp_path):
    bench = Winoground(wino_parquet_root)
    store = ScoreStore(tmp_path / "scores.sqlite")
    first = CountingScorer(_config(tiny_clip))
    first.stop_after = 10
    with pytest.raises(KeyboardInterrupt):
        evaluate(first, bench, store, workers=0, chunk_items=4, progress=False)
    assert first.scored == [str(i) for i in range(8)]  # two chunks of 4 were committed

    second = CountingScorer(_config(tiny_clip))
    resumed = evaluate(second, bench, store, workers=0, chunk_items=4, progress=False)
    assert second.scored == [str(i) for i in range(8, 24)]
    assert resumed.scored_now == 16

    clean = evaluate(ClipScorer(_config(tiny_clip)), bench, ScoreStore(tmp_path / "clean.sqlite"),
                     workers=0, progress=False)
    assert [(r.subset, r.metric, r.value, r.ci_low, r.ci_high, r.n) for r in resumed.rows] == \
           [(r.subset, r.metric, r.value, r.ci_low, r.ci_high, r.n) for r in clean.rows]


def test_interrupted_run_writes_no_rows_and_the_rerun_writes_one_set(tiny_clip, wino_parquet_root, tmp_path,
                                                                      monkeypatch):
    results_dir = tmp_path / "results"
    kwargs = dict(scorer="clip", bench="winoground", model=f"local-dir:{tiny_clip.local_dir}",
                  data_root=wino_parquet_root, results_dir=results_dir, options={"batch_size": 4}, chunk_items=4, workers=0, progress=False)
    calls = {"n": 0}
    original = ClipScorer.score

    def flaky(self, items):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, items)

    monkeypatch.setattr(ClipScorer, "score", flaky)
    with pytest.raises(KeyboardInterrupt):
        run(**kwargs)
    assert read_leaderboard(results_dir).empty
    failed = list((results_dir / "runs").glob("*/config.json"))
    assert len(failed) == 1 and '"status": "failed: KeyboardInterrupt' in failed[0].read_text()

    result = run(**kwargs)
    assert result.evaluation.scored_now == 24 - 8
    board = read_leaderboard(results_dir)
    # 3 metrics x (all + 3 tags + 2 predicate counts + the 5 hardness tags that ids 0..23 carry)
    assert len(board) == len(result.rows) == 33
    assert set(board["run_id"]) == {result.run_id}
    assert not board.duplicated(["subset", "metric"]).any()

    again = run(**kwargs)  # a completed run repeated: nothing scored, a second set of rows
    assert again.evaluation.scored_now == 0
    assert len(read_leaderboard(results_dir)) == 66


def test_run_files_record_config_rows_and_item_scores(tiny_clip, wino_parquet_root, tmp_path):
    import json

    result = run(scorer="clip", bench="winoground", model=f"local-dir:{tiny_clip.local_dir}",
                 data_root=wino_parquet_root, results_dir=tmp_path, limit=5, workers=0, progress=False, seed=7)
    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["status"] == "done" and config["limit"] == 5 and config["n_items"] == 5
    assert config["scorer_fingerprint"]["family"] == "clip"
    lines = [json.loads(x) for x in (result.run_dir / "item_scores.jsonl").read_text().splitlines()]
    assert [x["item_id"] for x in lines] == ["0", "1", "2", "3", "4"]
    assert np.array(lines[0]["scores"]).shape == (2, 2) and set(lines[0]) >= {"text", "image", "group"}
    # what `harness report` shows beside the scores: the image refs and the item's meta
    assert lines[0]["images"] == ["0:image_0", "0:image_1"] and lines[0]["meta"]["collapsed_tag"] == "Object"
    row = result.rows[0]
    assert "item_ids" not in row and "item_values" not in row  # per-item values stay in memory
    assert row["n"] == 5 and row["seed"] == 7 and row["benchmark_version"] == "1"
    # the row names the model portably (folder name and weights hash); config.json keeps the path
    weights = config["scorer_fingerprint"]["weights"][:12]
    assert row["model"] == f"local-dir:{tiny_clip.local_dir.name}@{weights}" and row["device"] == "cpu"
    assert config["scorer_config"]["model"] == f"local-dir:{tiny_clip.local_dir}"
    assert str(tmp_path) not in (tmp_path / "leaderboard.csv").read_text()
    assert (result.run_dir / "metrics.csv").read_text().count("\n") == len(result.rows) + 1


def test_nan_scores_stop_the_run_and_keep_earlier_chunks(tiny_clip, wino_parquet_root, tmp_path, monkeypatch):
    original = ClipScorer.score

    def nan_on_item_9(self, items):
        out = original(self, items)
        return [np.full_like(m, np.nan) if i.id == "9" else m for i, m in zip(items, out)]

    monkeypatch.setattr(ClipScorer, "score", nan_on_item_9)
    with pytest.raises(NonFiniteScoreError, match="non-finite scores .* item '9'"):
        run(scorer="clip", bench="winoground", model=f"local-dir:{tiny_clip.local_dir}",
            data_root=wino_parquet_root, results_dir=tmp_path, options={"batch_size": 4}, chunk_items=4, workers=0, progress=False)
    assert read_leaderboard(tmp_path).empty
    store = ScoreStore(tmp_path / "scores.sqlite")
    stored = set()
    import sqlite3

    with sqlite3.connect(store.path) as db:
        stored = {r[0] for r in db.execute("SELECT item_id FROM scores")}
    assert stored == {str(i) for i in range(8)}


@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_image_names_item_and_file(tiny_clip, tmp_path, workers):
    write_winoground_jsonl(tmp_path / "winoground", 6)
    (tmp_path / "winoground" / "data" / "images" / "ex_4_img_1.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ImageDecodeError) as err:
        run(scorer="clip", bench="winoground", model=f"local-dir:{tiny_clip.local_dir}", data_root=tmp_path,
            results_dir=tmp_path / "results", options={"batch_size": 2}, chunk_items=2, workers=workers, progress=False)
    message = str(err.value)
    assert "'ex_4_img_1'" in message and "item '4'" in message and "ex_4_img_1.png" in message
    assert "resumes" in message
    assert read_leaderboard(tmp_path / "results").empty


def test_limit_and_bad_limit(tiny_clip, wino_parquet_root, tmp_path):
    result = run(scorer="clip", bench="winoground", model=f"local-dir:{tiny_clip.local_dir}",
                 data_root=wino_parquet_root, results_dir=tmp_path, limit=3, workers=0, progress=False)
    assert [i.id for i in result.evaluation.items] == ["0", "1", "2"]
    with pytest.raises(runner.HarnessError, match="--limit must be at least 1"):
        run(scorer="clip", bench="winoground", model=f"local-dir:{tiny_clip.local_dir}",
            data_root=wino_parquet_root, results_dir=tmp_path, limit=0, workers=0, progress=False)


def test_worker_processes_give_the_same_scores(tiny_clip, wino_parquet_root, tmp_path):
    bench = Winoground(wino_parquet_root)
    inline = evaluate(ClipScorer(_config(tiny_clip)), bench, ScoreStore(tmp_path / "a.sqlite"), workers=0,
                      progress=False)
    workers = evaluate(ClipScorer(_config(tiny_clip)), bench, ScoreStore(tmp_path / "b.sqlite"), workers=2,
                       progress=False)
    for a, b in zip(inline.scores, workers.scores):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_changed_captions_are_rescored(tiny_clip, tmp_path):
    store = ScoreStore(tmp_path / "s.sqlite")
    items = [Item(id="a", images=("0",), texts=("x", "y"), truth=(0,))]
    evaluate(ClipScorer(_config(tiny_clip)), PhotoBenchmark.make(items), store, workers=0, progress=False)
    changed = [Item(id="a", images=("0",), texts=("x", "z"), truth=(0,))]
    again = evaluate(ClipScorer(_config(tiny_clip)), PhotoBenchmark.make(changed), store, workers=0,
                     progress=False)
    assert again.scored_now == 1


def test_unknown_names_fail_before_any_model_loads(wino_parquet_root, tmp_path):
    with pytest.raises(KeyError, match="Did you mean 'winoground'"):
        run(scorer="clip", bench="winogrand", model="whatever", data_root=wino_parquet_root, results_dir=tmp_path)
    with pytest.raises(KeyError, match="unknown scorer 'clap'.*Did you mean 'clip'"):
        run(scorer="clap", bench="winoground", model="whatever", data_root=wino_parquet_root, results_dir=tmp_path)
    assert not (tmp_path / "runs").exists()


def test_zeroshot_run_records_template_sets_and_compact_item_scores(tiny_clip, tmp_path):
    import json

    from factories_zeroshot import write_zeroshot_fixture

    write_zeroshot_fixture(tmp_path / "data", n_per_class=1, imagenet=False)
    result = run(scorer="clip", bench="zeroshot:cifar100", model=f"local-dir:{tiny_clip.local_dir}",
                 data_root=tmp_path / "data", results_dir=tmp_path / "results", workers=0, progress=False)
    rows = {row["metric"]: row for row in result.rows}
    assert set(rows) == {"top1", "top5", "mean_per_class_recall"}
    assert rows["top1"]["details"]["templates"] == "openai-cifar100" and rows["top1"]["subset"] == "cifar100"
    record = json.loads((result.run_dir / "item_scores.jsonl").read_text().splitlines()[0])
    assert "scores" not in record and len(record["best5"][0]) == 5  # 20 classes: the best five, named
    label, score = record["best5"][0][0]
    assert isinstance(label, str) and isinstance(score, float)
    assert json.loads((result.run_dir / "config.json").read_text())["status"] == "done"


def _open_store_and_register(path: str) -> str:
    store = ScoreStore(path)
    return store.register_scorer({"rank": "any"})


def test_two_processes_opening_one_new_store_both_succeed(tmp_path):
    """Ranks of a distributed run open the same new scores.sqlite at once. sqlite refuses the switch
    to WAL with "database is locked" without waiting, so the store must wait and retry (before the
    fix, 44 of 200 such openings failed here, and CI failed on one)."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    with context.Pool(2) as pool:
        for attempt in range(40):
            path = str(tmp_path / f"store{attempt}" / "scores.sqlite")
            keys = pool.map(_open_store_and_register, [path, path])
            assert keys[0] == keys[1]


def test_ranks_split_rank_zeros_list_of_pending_items(tiny_clip, wino_parquet_root, tmp_path, monkeypatch):
    """Rank 1 of 2 arrives after rank 0 has already stored its first item. Had rank 1 split its own
    view of what is pending, item 2 would fall between the shares (the GPU check's 2-process stage
    saw a KeyError for it); it must take every second item of the list rank 0 read."""
    bench = Winoground(wino_parquet_root)
    store = ScoreStore(tmp_path / "scores.sqlite")
    items = bench.items()[:4]
    ahead = CountingScorer(_config(tiny_clip))
    key = store.register_scorer(ahead.fingerprint())
    evaluate(ahead, bench, store, items=items[:1], workers=0, progress=False)  # "rank 0" stored item 0
    assert store.stored_ids(key, bench.name, bench.version, items) == {"0"}

    monkeypatch.setattr(runner.distributed, "world", lambda: (1, 2))
    monkeypatch.setattr(runner.distributed, "broadcast", lambda value: set())  # rank 0 read an empty store
    # rank 0's share (0 and 2) is in the store when the barrier lets rank 1 read the results
    monkeypatch.setattr(runner.distributed, "barrier",
                        lambda: store.put(key, bench.name, bench.version, [(items[2], np.zeros((2, 2)))]))
    late = CountingScorer(_config(tiny_clip))
    evaluate(late, bench, store, items=items, workers=0, progress=False)
    assert late.scored == ["1", "3"]
