"""The file benchmark (``--bench file:PATH``): records read from JSON Lines and CSV, metrics checked
against a hand computation, and end to end on the toy CLIP through `harness run`, resume, the
leaderboard and the report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from benchmark_fixtures.file import records, write_csv, write_images, write_jsonl
from typer.testing import CliRunner

from benchmarks.file import FileBenchmark
from harness.cli import app
from harness.errors import BadRecordError, HarnessError, MissingDataError
from harness.metrics import accuracy_row

cli = CliRunner()

# Six items whose score matrices the tests choose: three one-image items (one with a tie between
# the right text and a wrong one) and three 2x2 items (one with its truth the other way round,
# one with a tie).
HAND_ITEMS = [
    {"id": "a", "image": "p0.png", "texts": ["red", "blue"], "truth": 0, "subset": "s1", "tags": ["colour"]},
    {"id": "b", "image": "p1.png", "texts": ["x", "y", "z"], "truth": 2, "subset": "s1", "tags": "colour"},
    {"id": "c", "image": "p2.png", "texts": ["left", "right"], "truth": 1, "subset": "s2", "tags": ["colour", "hard"]},
    {"id": "d", "images": ["p3.png", "p4.png"], "texts": ["dog on couch", "couch on dog"], "truth": [0, 1],
     "tags": ["relation"]},
    {"id": "e", "images": ["p4.png", "p5.png"], "texts": ["cup in box", "box in cup"], "truth": [1, 0],
     "tags": ["relation", "hard"]},
    {"id": "f", "images": ["p0.png", "p5.png"], "texts": ["a", "b"], "truth": [0, 1], "tags": ["relation"]},
]
HAND_SCORES = {
    "a": [[0.5, 0.5]],  # a tie: wrong by the strict rule, right by an argmax (which takes index 0)
    "b": [[0.1, 0.2, 0.3]],
    "c": [[0.9, 0.1]],
    "d": [[0.6, 0.2], [0.3, 0.7]],
    "e": [[0.2, 0.6], [0.7, 0.3]],  # image 0's caption is column 1
    "f": [[0.5, 0.5], [0.2, 0.8]],  # text: a tie on image 0; image: right
}


def hand_outcome(scores: list[list[float]], truth: list[int]) -> dict[str, bool]:
    """The file benchmark's rules written out: one image, the right text strictly above every
    other; two images, Winoground's strict text and image conditions with c_k = truth[k]."""
    s = np.array(scores)
    if len(truth) == 1:
        right = s[0, truth[0]]
        return {"accuracy": all(right > s[0, j] for j in range(s.shape[1]) if j != truth[0])}
    c0, c1 = truth
    text = s[0, c0] > s[0, c1] and s[1, c1] > s[1, c0]
    image = s[0, c0] > s[1, c0] and s[1, c1] > s[0, c1]
    return {"text": bool(text), "image": bool(image), "group": bool(text and image)}


def write_hand_file(folder: Path, items=HAND_ITEMS) -> Path:
    write_images(folder, items)
    return write_jsonl(folder / "hand.jsonl", items)


def test_metrics_equal_a_hand_computation_with_the_strict_tie_rule(tmp_path):
    path = write_hand_file(tmp_path)
    bench = FileBenchmark(tmp_path, str(path))
    items = bench.items()
    assert [i.id for i in items] == list(HAND_SCORES)
    scores = [np.array(HAND_SCORES[i.id]) for i in items]
    rows = {(r.subset, r.metric): r for r in bench.metrics(items, scores, seed=3)}

    outcomes = {r["id"]: hand_outcome(HAND_SCORES[r["id"]], r["truth"] if isinstance(r["truth"], list)
                                      else [r["truth"]]) for r in HAND_ITEMS}
    tags = {r["id"]: [r["tags"]] if isinstance(r["tags"], str) else r["tags"] for r in HAND_ITEMS}
    groups = {"all": list(HAND_SCORES), "s1": ["a", "b"], "s2": ["c"],
              **{f"tag={t}": [i for i in HAND_SCORES if t in tags[i]] for t in ("colour", "hard", "relation")}}
    expected = {}
    for subset, members in groups.items():
        for metric in ("accuracy", "text", "image", "group"):
            values = [outcomes[i][metric] for i in members if metric in outcomes[i]]
            if values:
                expected[(subset, metric)] = values
    assert set(rows) == set(expected)
    for key, values in expected.items():
        row = rows[key]
        assert row.n == len(values)
        assert row.value == pytest.approx(100 * np.mean(values))
        reference = accuracy_row(key[0], key[1], np.array(values), seed=3)
        assert (row.ci_low, row.ci_high) == (reference.ci_low, reference.ci_high)
        assert row.ci_low <= row.value <= row.ci_high

    # the numbers themselves, so a change in the rules above cannot hide
    assert rows[("all", "accuracy")].value == pytest.approx(100 / 3)
    assert [rows[("all", m)].value for m in ("text", "image", "group")] == pytest.approx([200 / 3, 100, 200 / 3])
    assert rows[("tag=hard", "accuracy")].value == 0 and rows[("tag=hard", "group")].value == 100
    # an argmax would count item a right: the strict rule and the lenient one differ here
    lenient = [int(np.argmax(HAND_SCORES[i][0])) == r["truth"] for i, r in zip("abc", HAND_ITEMS)]
    assert 100 * np.mean(lenient) == pytest.approx(200 / 3) != rows[("all", "accuracy")].value
    assert bench.outcome(items[0], scores[0]) == {"correct": False}
    assert bench.outcome(items[4], scores[4]) == {"text": True, "image": True, "group": True}


def test_csv_jsonl_and_folder_forms_read_the_same_items(tmp_path):
    items = records(9)
    for record in items:  # CSV has no scalar-or-list choice: give every record its id
        record.setdefault("id", f"given-{record['texts'][0]}")
    write_images(tmp_path, items)
    jsonl = FileBenchmark(tmp_path, str(write_jsonl(tmp_path / "items.jsonl", items))).items()
    csv_path = write_csv(tmp_path / "other" / "items.csv", items)
    shutil.copytree(tmp_path / "images", tmp_path / "other" / "images")
    from_csv = FileBenchmark(tmp_path, str(csv_path)).items()
    from_folder = FileBenchmark(tmp_path, str(tmp_path / "other")).items()
    strip = [(i.id, i.images, i.texts, i.truth, i.meta.get("subset"), i.meta.get("tags")) for i in jsonl]
    assert strip == [(i.id, i.images, i.texts, i.truth, i.meta.get("subset"), i.meta.get("tags")) for i in from_csv]
    assert [i.id for i in from_folder] == [i.id for i in from_csv]
    assert {len(i.texts) for i in jsonl} == {2, 3, 4} and {len(i.images) for i in jsonl} == {1, 2}


def test_names_versions_and_where_paths_are_looked_for(tmp_path, monkeypatch):
    folder = tmp_path / "mine"
    path = write_hand_file(folder)
    by_file, by_folder = FileBenchmark(tmp_path, str(path)), FileBenchmark(tmp_path, str(folder))
    assert by_file.name == "file:hand" and by_folder.name == "file:mine"
    assert by_file.key == f"file:{path}" and by_file.version == by_folder.version
    assert by_file.version.startswith("1-") and by_file.comparisons == "matrix"
    assert by_file.details() == {"source": "hand.jsonl", "sha256": by_file.file_sha256, "images_hashed": True}
    monkeypatch.chdir(tmp_path / "mine")  # relative: the working directory first, then the data root
    assert FileBenchmark(tmp_path / "elsewhere", "hand.jsonl").path == path
    assert FileBenchmark(tmp_path, "mine/hand.jsonl").path == path

    # the version follows the file's bytes and, unless told otherwise, the images' bytes
    photo = folder / "p5.png"
    photo.write_bytes((folder / "p1.png").read_bytes())
    assert FileBenchmark(tmp_path, str(path)).version != by_file.version
    unhashed = FileBenchmark(tmp_path, str(path), hash_images="false")
    path.write_text(path.read_text().replace("dog on couch", "dog under couch"))
    assert FileBenchmark(tmp_path, str(path), hash_images="false").version != unhashed.version

    only_single = write_jsonl(tmp_path / "singles.jsonl", [dict(HAND_ITEMS[0], image="mine/p0.png")])
    assert FileBenchmark(tmp_path, str(only_single)).comparisons == "text_argmax"


def _one_line_file(tmp_path: Path, line: str, name: str = "items.jsonl") -> Path:
    write_images(tmp_path, HAND_ITEMS)
    good = json.dumps(HAND_ITEMS[0])
    path = tmp_path / name
    path.write_text(f"{good}\n{line}\n")
    return path


@pytest.mark.parametrize("line, message", [
    ('{"image": "p0.png", "texts": ["a", "b"], "truth": 0', "items.jsonl line 2: not a JSON object"),
    ('["p0.png", "a", "b"]', "items.jsonl line 2: expected a JSON object, found list"),
    ('{"image": "p0.png", "truth": 0}', "items.jsonl line 2: lacks field 'texts'"),
    ('{"texts": ["a", "b"], "truth": 0}', "items.jsonl line 2: lacks field 'image' or 'images'"),
    ('{"image": "p0.png", "texts": ["a", "b"], "truth": 2}', "line 2, field truth: 2 is not an index of the 2 texts"),
    ('{"image": "p0.png", "texts": ["a", "b"], "truth": "0"}', "line 2, field truth: \"0\" is not an index"),
    ('{"image": "p0.png", "texts": ["a", ""], "truth": 0}', "line 2, field texts[1]: expected a non-empty string"),
    ('{"image": "p0.png", "texts": ["a"], "truth": 0}', "line 2, field texts: one candidate text"),
    ('{"image": "p0.png", "texts": ["a", "b"], "truth": 0, "tag": "x"}', "line 2, field 'tag': not a field"),
    ('{"images": ["p0.png", "p1.png", "p2.png"], "texts": ["a", "b", "c"], "truth": [0, 1, 2]}',
     "line 2, field images: 3 images"),
    ('{"images": ["p0.png", "p1.png"], "texts": ["a", "b"], "truth": [1, 1]}',
     "line 2, field truth: [1, 1]: the two images must have different right texts"),
    ('{"images": ["p0.png", "p1.png"], "texts": ["a", "b"], "truth": 0}', "line 2, field truth: 1 indices for 2"),
    ('{"images": ["p0.png", "p1.png"], "texts": ["a", "b", "c"], "truth": [0, 1]}', "line 2, field texts: 3 texts"),
    ('{"id": "a", "image": "p1.png", "texts": ["a", "b"], "truth": 0}', "line 2, field id: id 'a' was already used "
                                                                        "on line 1"),
    ('{"image": "p0.png", "texts": ["a", "b"], "truth": 0, "subset": "all"}', "line 2, field subset: \"all\""),
])
def test_a_malformed_jsonl_record_is_named_by_line_and_field(tmp_path, line, message):
    path = _one_line_file(tmp_path, line)
    with pytest.raises(BadRecordError) as err:
        FileBenchmark(tmp_path, str(path))
    assert message in str(err.value)


def test_a_missing_image_is_named_by_line_and_field(tmp_path):
    path = _one_line_file(tmp_path, '{"images": ["p0.png", "gone.png"], "texts": ["a", "b"], "truth": [0, 1]}')
    with pytest.raises(MissingDataError, match=r"items.jsonl line 2, field images\[1\]: image .*gone.png not found "
                                               r"\(image paths are relative to the folder of items.jsonl\)"):
        FileBenchmark(tmp_path, str(path))


@pytest.mark.parametrize("rows, message", [
    ("image,text_0,text_1,truth\np0.png,a,,0\n", "items.csv line 2, field text_0, text_1, ...: one candidate text"),
    ("image,text_0,text_1,text_2,truth\np0.png,a,,c,0\n", "items.csv line 2, field text_1: blank between filled"),
    ("image,text_0,text_1,truth\np0.png,a,b,first\n", "items.csv line 2, field truth: 'first' is not a whole number"),
    ('image,text_0,text_1,truth\n"p0.png","a, b\nc",b,0\np1.png,a,b,5\n',
     "items.csv line 4, field truth: 5 is not an index"),  # a quoted cell over two lines
    ("image,caption,truth\np0.png,a,0\n", "items.csv line 1, column 'caption': not a column"),
    ("image,text_0,text_2,truth\np0.png,a,b,0\n", "numbered 0, 1, 2, ... without gaps; found text_0, text_2"),
    ("image,image_0,text_0,text_1,truth\np0.png,p0.png,a,b,0\n", "a column appears twice"),
    ("image_0,image_1,text_0,text_1,truth_0,truth_1\np0.png,p1.png,a,b,0,\n",
     "items.csv line 2, field truth_0, truth_1: 1 indices for 2 images"),
    ("image,text_0,text_1,truth\np0.png,a,b,0,extra\n", "items.csv line 2: 5 cells for 4 columns"),
])
def test_a_malformed_csv_record_is_named_by_line_and_column(tmp_path, rows, message):
    write_images(tmp_path, HAND_ITEMS)
    path = tmp_path / "items.csv"
    path.write_text(rows)
    with pytest.raises(BadRecordError) as err:
        FileBenchmark(tmp_path, str(path))
    assert message in str(err.value)


def test_missing_files_and_folders_say_where_they_were_looked_for(tmp_path):
    with pytest.raises(MissingDataError, match="nope.jsonl, nor .*nope.jsonl not found"):
        FileBenchmark(tmp_path, "nope.jsonl")
    with pytest.raises(MissingDataError, match=r"--bench file without a path reads .*file/, which is not there"):
        FileBenchmark(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingDataError, match="holds no .jsonl or .csv file"):
        FileBenchmark(tmp_path, str(tmp_path / "empty"))
    write_jsonl(tmp_path / "two" / "a.jsonl", [])
    write_jsonl(tmp_path / "two" / "b.jsonl", [])
    with pytest.raises(HarnessError, match=r"holds several items files \(a.jsonl, b.jsonl\)"):
        FileBenchmark(tmp_path, str(tmp_path / "two"))
    with pytest.raises(BadRecordError, match="a.jsonl holds no records"):
        FileBenchmark(tmp_path, str(tmp_path / "two" / "a.jsonl"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(HarnessError, match="not a .jsonl or .csv file"):
        FileBenchmark(tmp_path, str(tmp_path / "notes.txt"))
    assert not FileBenchmark.describe_data(tmp_path)[0].found


# -- end to end on the toy CLIP -------------------------------------------------------------------

def _run(path: Path, results: Path, *extra: str):
    return cli.invoke(app, ["run", "--bench", f"file:{path}", "--results-dir", str(results), "--workers", "0",
                            "--no-progress", *extra])


def test_harness_run_on_a_file_with_the_toy_clip_resumes_and_reaches_leaderboard_and_report(tmp_path):
    from harness import score

    items = [dict(r) for r in HAND_ITEMS]
    items[0]["texts"] = ["a photo", "a photo"]  # identical texts tie exactly: wrong by the strict rule
    path = write_hand_file(tmp_path / "mine", items)
    results = tmp_path / "results"
    first = _run(path, results)
    assert first.exit_code == 0, first.output
    assert "6 items (6 scored now, 0 from the score store)" in first.output

    [run_dir] = (results / "runs").iterdir()
    stored = {json.loads(line)["item_id"]: json.loads(line) for line in (run_dir / "item_scores.jsonl").open()}
    tags = {r["id"]: [r["tags"]] if isinstance(r["tags"], str) else r["tags"] for r in items}
    outcomes = {r["id"]: hand_outcome(stored[r["id"]]["scores"], stored[r["id"]]["truth"]) for r in items}
    assert stored["a"]["scores"][0][0] == stored["a"]["scores"][0][1] and not outcomes["a"]["accuracy"]
    # the Python API gives the same matrices for the same pairs
    for r in items:
        images = [tmp_path / "mine" / p for p in ([r["image"]] if "image" in r else r["images"])]
        assert np.allclose(score(images, r["texts"]), stored[r["id"]]["scores"], atol=1e-5)

    import pandas as pd

    board = pd.read_csv(results / "leaderboard.csv")
    assert set(board["benchmark"]) == {"file:hand"} and set(board["model"]) == {"toy:clip"}
    got = {(r.subset, r.metric): (r.value, r.n) for r in board.itertuples()}
    groups = {"all": list(outcomes), "s1": ["a", "b"], "s2": ["c"],
              **{f"tag={t}": [i for i in outcomes if t in tags[i]] for t in ("colour", "hard", "relation")}}
    expected = {}
    for subset, members in groups.items():
        for metric in ("accuracy", "text", "image", "group"):
            values = [outcomes[i][metric] for i in members if metric in outcomes[i]]
            if values:
                expected[(subset, metric)] = (pytest.approx(100 * np.mean(values)), len(values))
    assert got == expected
    assert board["ci_low"].notna().all() and (board["ci_low"] <= board["value"]).all()

    again = _run(path, results)
    assert "6 items (0 scored now, 6 from the score store)" in again.output
    shown = cli.invoke(app, ["leaderboard", "--results-dir", str(results), "--bench", "file"])
    assert "file:hand/all/accuracy" in shown.output and "file:hand/all/group" in shown.output
    report = cli.invoke(app, ["report", "--results-dir", str(results)])
    assert report.exit_code == 0, report.output
    assert "## file:hand" in (results / "report" / "report.md").read_text()

    # an edited file is a new version: nothing stale is reused
    path.write_text(path.read_text().replace("dog on couch", "a dog on a couch"))
    edited = _run(path, results)
    assert "6 items (6 scored now, 0 from the score store)" in edited.output


def test_harness_run_refuses_a_bad_file_with_exit_2_and_no_rows(tmp_path):
    path = _one_line_file(tmp_path, '{"image": "p0.png", "texts": ["a", "b"], "truth": 3}')
    result = _run(path, tmp_path / "results")
    assert result.exit_code == 2
    assert "error: items.jsonl line 2, field truth: 3 is not an index" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "results" / "leaderboard.csv").exists()
    missing = _run(tmp_path / "nope.jsonl", tmp_path / "results")
    assert missing.exit_code == 2 and "nope.jsonl not found" in missing.output


def test_the_readme_examples_are_the_example_folder_and_read_the_same(tmp_path):
    import re

    root = Path(__file__).parents[1]
    example = root / "examples" / "my_items"
    blocks = re.findall(r"^```\w*\n(.*?)^```$", (root / "README.md").read_text(), flags=re.S | re.M)
    [jsonl] = [b for b in blocks if b.startswith('{"id": "colours"')]
    [csv_text] = [b for b in blocks if b.startswith("image_0,")]
    assert jsonl == (example / "items.jsonl").read_text()
    bench = FileBenchmark(tmp_path, str(example))
    assert bench.name == "file:my_items" and len(bench.items()) == 5 and len(jsonl.splitlines()) <= 10
    assert {len(i.images) for i in bench.items()} == {1, 2}

    shutil.copytree(example, tmp_path / "csv")
    (tmp_path / "csv" / "items.jsonl").unlink()
    (tmp_path / "csv" / "items.csv").write_text(csv_text)
    by_id = {i.id: i for i in bench.items()}
    for item in FileBenchmark(tmp_path, str(tmp_path / "csv")).items():
        same = by_id[item.id]
        assert (item.images, item.texts, item.truth) == (same.images, same.texts, same.truth)
        assert item.meta["tags"] == same.meta["tags"] + (("order",) if item.id == "swap-places" else ())
