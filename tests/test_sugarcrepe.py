"""SugarCrepe: its layout, skipped subsets, strict accuracy and the mean over subsets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from factories import write_sugarcrepe

from benchmarks.sugarcrepe import SugarCrepe
from harness.api import Item
from harness.errors import BadRecordError, MissingDataError


@pytest.fixture()
def root(tmp_path):
    write_sugarcrepe(tmp_path, per_subset=4)
    return tmp_path


def test_reads_present_subsets_and_reports_the_rest(root):
    bench = SugarCrepe(root)
    items = bench.items()
    assert [i.id for i in items[:2]] == ["replace-obj/0", "replace-obj/1"]
    assert {i.meta["subset"] for i in items} == {"replace-obj", "swap-att"}
    assert items[0].texts == ("a dog on a couch number 0", "a couch on a dog number 0") and items[0].truth == (0,)
    assert set(bench.skipped) == {"replace-att", "replace-rel", "swap-obj", "add-obj", "add-att"}
    assert "replace-att.json not found" in bench.skipped["replace-att"]
    image = bench.load_image(items[0].images[0])
    assert image.mode == "RGB" and image.size == (64, 64)


def test_missing_data_and_bad_records(root, tmp_path):
    with pytest.raises(MissingDataError, match="swap-obj.json not found"):
        SugarCrepe(root, "swap-obj").items()
    with pytest.raises(MissingDataError, match="val2017 not found"):
        SugarCrepe(tmp_path / "nothing").items()
    path = root / "sugarcrepe" / "swap-att.json"
    data = json.loads(path.read_text())
    del data["2"]["negative_caption"]
    path.write_text(json.dumps(data))
    with pytest.raises(BadRecordError, match="record '2' of .*swap-att.json lacks field 'negative_caption'"):
        SugarCrepe(root, "swap-att").items()


def test_accuracy_per_subset_and_mean_hand_computed(tmp_path):
    def item(i, subset):
        return Item(id=f"{subset}/{i}", images=("x",), texts=("pos", "neg"), truth=(0,), meta={"subset": subset})

    right, wrong, tie = np.array([[0.9, 0.1]]), np.array([[0.1, 0.9]]), np.array([[0.4, 0.4]])
    cases = [("swap-obj", right), ("swap-obj", tie), ("add-att", right), ("add-att", right), ("add-att", wrong),
             ("add-att", right)]
    items = [item(i, s) for i, (s, _) in enumerate(cases)]
    rows = {(r.subset, r.metric): r for r in SugarCrepe(tmp_path).metrics(items, [m for _, m in cases], seed=0)}
    assert rows[("swap-obj", "accuracy")].value == pytest.approx(50.0)
    assert rows[("add-att", "accuracy")].value == pytest.approx(75.0)
    assert rows[("mean", "accuracy")].value == pytest.approx(62.5)  # the mean of subset accuracies
    assert rows[("mean", "accuracy")].details == {"subsets": ["add-att", "swap-obj"]}
    assert rows[("swap-obj", "accuracy")].details == {"expected_n": 245}  # partial data is flagged
    low, high = rows[("mean", "accuracy")].ci_low, rows[("mean", "accuracy")].ci_high
    assert low <= 62.5 <= high
