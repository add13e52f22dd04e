"""ARO: the four subsets in their real layouts, frozen order perturbations, and the reference metrics."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter

import numpy as np
import pytest
from factories import toy_tagger, write_aro
from PIL import Image

from benchmarks.aro import ARO, normalise_caption, perturb, symmetric_relations
from harness.api import Item, ScorerConfig
from harness.errors import BadRecordError, HarnessError, MissingDataError
from harness.runner import evaluate
from harness.store import ScoreStore
from models.clip import ClipScorer


@pytest.fixture()
def aro_root(tmp_path):
    write_aro(tmp_path)
    return tmp_path


def _full_image(aro_root, name="2300000.jpg"):
    with Image.open(aro_root / "aro" / "images" / name) as full:
        return full.convert("RGB")


def test_vg_items_crop_to_their_box_as_the_reference_does(aro_root):
    bench = ARO(aro_root, "vg-relation")
    items = bench.items()
    assert len(items) == 36 and items[0].id == "vg-relation/0"
    first = items[0]
    assert first.texts == ("the couch is on the dog", "the dog is on the couch") and first.truth == (1,)
    assert first.meta["group"] == "on"
    crop = bench.load_image(items[1].images[0])  # box x=5 y=3 w=40 h=50
    assert np.array_equal(np.asarray(crop), np.asarray(_full_image(aro_root).crop((5, 3, 45, 53))))
    # x=80 y=70 w=60 h=60 leaves the 96x96 image: the reference's Pillow crop keeps the whole box
    # and fills the part outside with black
    leaving = bench.load_image(items[11].images[0])
    full = np.asarray(_full_image(aro_root))
    assert leaving.size == (60, 60)
    assert np.array_equal(np.asarray(leaving), np.asarray(_full_image(aro_root).crop((80, 70, 140, 130))))
    pixels = np.asarray(leaving)
    assert np.array_equal(pixels[:26, :16], full[70:96, 80:96])  # the part inside the image
    assert not pixels[26:].any() and not pixels[:, 16:].any()  # black beyond the image's edges


def test_box_clip_option_clips_to_the_image_and_keeps_its_own_ids(aro_root):
    bench = ARO(aro_root, "vg-relation", box="clip")
    items = bench.items()
    assert items[0].id == "vg-relation/clip-box/0"
    assert not {i.id for i in items} & {i.id for i in ARO(aro_root, "vg-relation").items()}
    clipped = bench.load_image(items[11].images[0])  # x=80 y=70 w=60 h=60 in a 96x96 image
    assert clipped.size == (16, 26)
    assert np.array_equal(np.asarray(clipped), np.asarray(_full_image(aro_root).crop((80, 70, 96, 96))))
    inside = bench.load_image(items[1].images[0])  # a box inside the image: both modes agree
    assert np.array_equal(np.asarray(inside), np.asarray(ARO(aro_root, "vg-relation").load_image(
        ARO(aro_root, "vg-relation").items()[1].images[0])))


def test_box_wholly_outside_is_black_by_reference_and_refused_when_clipping(aro_root):
    black = ARO(aro_root, "vg-relation").load_image("vg/2300000.jpg#200,0,10,10")
    assert black.size == (10, 10) and not np.asarray(black).any()
    with pytest.raises(BadRecordError, match=r"box x=200.0 y=0.0 .* lies outside the 96x96 image .*2300000.jpg"):
        ARO(aro_root, "vg-relation", box="clip").load_image("vg/2300000.jpg#clip:200,0,10,10")
    with pytest.raises(BadRecordError, match=r"box x=5.0 y=3.0 w=0.0 h=50.0 of image .*2300000.jpg is empty"):
        ARO(aro_root, "vg-relation").load_image("vg/2300000.jpg#5,3,0,50")


def test_vg_rows_count_the_boxes_that_leave_their_image(aro_root):
    path = aro_root / "aro" / "visual_genome_relation.json"
    records = json.loads(path.read_text())
    records[3].update({"bbox_x": 500, "bbox_y": 500})  # wholly outside its 96x96 image
    path.write_text(json.dumps(records))
    for box in ("reference", "clip"):
        bench = ARO(aro_root, "vg-relation", box=box)
        items = bench.items()
        scores = [np.array([[0.0, 1.0]])] * len(items)
        rows = {(r.subset, r.metric): r for r in bench.metrics(items, scores, seed=0)}
        details = rows[("vg-relation", "accuracy")].details
        # the fixture's last box on each of its 3 images leaves the image, and now record 3
        expected = {"box": box, "boxes_leaving_image": 4, "boxes_wholly_outside": 1}
        assert details == expected
        assert rows[("vg-relation", "macro_accuracy")].details.items() >= expected.items()


def test_vg_attribution_groups(aro_root):
    items = ARO(aro_root, "vg-attribution").items()
    assert Counter(i.meta["group"] for i in items) == {"red_white": 30, "small_black": 6}
    assert items[0].texts == ("the black cat and the small hat", "the small cat and the black hat")


def test_record_missing_a_field_is_named(aro_root):
    path = aro_root / "aro" / "visual_genome_relation.json"
    records = json.loads(path.read_text())
    del records[3]["relation_name"]
    path.write_text(json.dumps(records))
    with pytest.raises(BadRecordError, match="record 3 of .*visual_genome_relation.json lacks field 'relation_name'"):
        ARO(aro_root, "vg-relation").items()


def test_missing_files_name_paths_and_how_to_get_them(tmp_path, aro_root):
    empty = tmp_path / "empty"
    with pytest.raises(MissingDataError, match=r"coco_karpathy_test.json not found. Put the Karpathy"):
        ARO(empty, "coco-order").items()
    with pytest.raises(MissingDataError) as err:
        ARO(empty).items()
    for subset in ("vg-relation", "vg-attribution", "coco-order", "flickr30k-order"):
        assert subset in str(err.value)
    shutil.rmtree(aro_root / "flickr30k")
    bench = ARO(aro_root, tagger=toy_tagger)
    assert {i.meta["subset"] for i in bench.items()} == {"vg-relation", "vg-attribution", "coco-order"}
    assert list(bench.skipped) == ["flickr30k-order"] and "flickr30k_test.json" in bench.skipped["flickr30k-order"]


def test_paths_can_be_overridden(aro_root, tmp_path):
    moved = tmp_path / "elsewhere"
    shutil.copytree(aro_root / "coco", moved)
    shutil.rmtree(aro_root / "coco")
    bench = ARO(aro_root, "coco-order", coco_json=moved / "coco_karpathy_test.json", coco_root=moved,
                tagger=toy_tagger)
    items = bench.items()
    assert len(items) == 15
    assert bench.load_image(items[0].images[0]).size == (64, 64)


def test_caption_normalisation():
    assert normalise_caption('A small Dog; sits "on" a (red) couch!!  ~') == "a small dog sits on a red couch"
    assert normalise_caption(" ".join(["word"] * 40)) == " ".join(["word"] * 30)
    assert normalise_caption("keep, commas and hyphen-ated words") == "keep, commas and hyphen-ated words"


def test_perturbations_permute_the_right_tokens():
    caption = "A small dog sits on a red couch near the old table"
    tokens = caption.split()
    rng = np.random.default_rng(0)
    for _ in range(20):
        nouns_adj, others, within, across = (o.split() for o in perturb(caption, toy_tagger, rng))
        for option in (nouns_adj, others, within, across):
            assert sorted(option) == sorted(tokens)  # a permutation of the caption's tokens
        tags = [tag for _, tag in toy_tagger(caption)]
        for i, tag in enumerate(tags):
            if tag in ("NN", "JJ"):
                assert others[i] == tokens[i]  # (2) keeps nouns and adjectives in place
                assert toy_tagger(nouns_adj[i])[0][1] == tag  # (1) moves nouns among nouns, adjectives among adjectives
            else:
                assert nouns_adj[i] == tokens[i]  # (1) keeps every other token in place
        trigrams = [tokens[i:i + 3] for i in range(0, len(tokens), 3)]
        assert [sorted(within[i:i + 3]) for i in range(0, len(tokens), 3)] == [sorted(t) for t in trigrams]
        regrouped = sorted(tuple(across[i:i + 3]) for i in range(0, 9, 3))
        assert all(tuple(t) in {tuple(g) for g in trigrams} for t in regrouped)


def test_order_options_are_frozen_once_and_reused_without_a_tagger(aro_root):
    first = ARO(aro_root, "coco-order", tagger=toy_tagger)
    items = first.items()
    files = list((aro_root / "aro" / "frozen").glob("coco-order-seed0-*.json"))
    assert len(files) == 1
    frozen = json.loads(files[0].read_text())
    assert frozen["tagger"] == "toy-tagger" and frozen["seed"] == 0 and len(frozen["items"]) == 15
    assert items[0].texts[0] == "a small dog sits on a red couch" and items[0].truth == (0,)
    assert all(len(i.texts) == 5 for i in items)
    assert len({i.images[0] for i in items}) == 3  # five captions per image, one image ref each

    again = ARO(aro_root, "coco-order")  # no tagger: the frozen file is enough
    assert [i.texts for i in again.items()] == [i.texts for i in items]

    other_seed = ARO(aro_root, "coco-order", order_seed="1", tagger=toy_tagger).items()
    assert [i.texts for i in other_seed] != [i.texts for i in items]
    assert len(list((aro_root / "aro" / "frozen").glob("coco-order-*.json"))) == 2


def test_a_changed_annotation_file_gets_new_options(aro_root):
    ARO(aro_root, "coco-order", tagger=toy_tagger).items()
    path = aro_root / "coco" / "coco_karpathy_test.json"
    data = json.loads(path.read_text())
    data[0]["caption"][0] = "A green car on the street."
    path.write_text(json.dumps(data))
    items = ARO(aro_root, "coco-order", tagger=toy_tagger).items()
    assert items[0].texts[0] == "a green car on the street"
    assert len(list((aro_root / "aro" / "frozen").glob("coco-order-*.json"))) == 2


def test_without_spacy_or_frozen_file_the_error_says_how_to_install(aro_root):
    try:
        import spacy  # noqa: F401

        pytest.skip("spaCy is installed here")
    except ImportError:
        pass
    with pytest.raises(HarnessError, match=re.escape('pip install -e ".[aro]"') + ".*en_core_web_sm"):
        ARO(aro_root, "flickr30k-order").items()


def _vg_item(i: int, subset: str, group: str) -> Item:
    return Item(id=f"{subset}/{i}", images=(f"{i}",), texts=("false", "true"), truth=(1,),
                meta={"subset": subset, "group": group})


def test_vg_relation_macro_drops_symmetric_relations_and_ties_are_wrong(tmp_path):
    assert {"next to", "by", "near", "with"} <= symmetric_relations() and "on" not in symmetric_relations()
    right, wrong, tie = np.array([[0.1, 0.9]]), np.array([[0.9, 0.1]]), np.array([[0.5, 0.5]])
    cases = [("on", right), ("on", tie), ("next to", right), ("next to", right), ("under", right), ("under", wrong)]
    items = [_vg_item(i, "vg-relation", g) for i, (g, _) in enumerate(cases)]
    rows = {(r.subset, r.metric): r for r in ARO(tmp_path).metrics(items, [s for _, s in cases], seed=0)}
    assert rows[("vg-relation", "macro_accuracy")].value == pytest.approx(50.0)  # mean(on 1/2, under 1/2)
    assert rows[("vg-relation", "macro_accuracy")].n == 4
    assert rows[("vg-relation", "accuracy")].value == pytest.approx(400 / 6)  # micro over all items
    assert rows[("vg-relation/relation=next to", "accuracy")].value == 100.0
    assert rows[("vg-relation/relation=next to", "accuracy")].details == {"in_macro": False}
    assert rows[("vg-relation", "macro_accuracy")].details["dropped_symmetric_relations"] == 1


def test_vg_attribution_macro_keeps_pairs_with_at_least_25_items(tmp_path):
    right, wrong = np.array([[0.0, 1.0]]), np.array([[1.0, 0.0]])
    groups = [("red_white", right)] * 20 + [("red_white", wrong)] * 5 + [("big_small", right)] * 24
    items = [_vg_item(i, "vg-attribution", g) for i, (g, _) in enumerate(groups)]
    rows = {(r.subset, r.metric): r for r in ARO(tmp_path).metrics(items, [s for _, s in groups], seed=0)}
    assert rows[("vg-attribution", "macro_accuracy")].value == pytest.approx(80.0)  # red_white only
    assert rows[("vg-attribution", "macro_accuracy")].n == 25
    assert rows[("vg-attribution", "accuracy")].value == pytest.approx(100 * 44 / 49)
    assert rows[("vg-attribution/attributes=big_small", "accuracy")].details == {"in_macro": False}


def test_order_precision_at_1_is_strict_and_rows_name_the_frozen_file(aro_root):
    bench = ARO(aro_root, "coco-order", tagger=toy_tagger)
    items = bench.items()[:3]
    scores = [np.array([[0.9, 0.1, 0.2, 0.3, 0.4]]),   # original strictly first: right
              np.array([[0.5, 0.5, 0.1, 0.1, 0.1]]),   # tie with a perturbation: wrong
              np.array([[0.1, 0.9, 0.2, 0.3, 0.4]])]   # wrong
    (row,) = bench.metrics(items, scores, seed=0)
    assert (row.subset, row.metric, row.n) == ("coco-order", "precision_at_1", 3)
    assert row.value == pytest.approx(100 / 3)
    frozen = next((aro_root / "aro" / "frozen").glob("coco-order-*.json"))
    import hashlib

    assert row.details["order_options_sha256"] == hashlib.sha256(frozen.read_bytes()).hexdigest()
    assert row.details["order_options_file"] == frozen.name


def test_each_coco_image_is_encoded_once_for_its_five_captions(aro_root, tiny_clip, monkeypatch, tmp_path):
    bench = ARO(aro_root, "coco-order", tagger=toy_tagger)
    scorer = ClipScorer(ScorerConfig(model=f"local-dir:{tiny_clip.local_dir}", options={"batch_size": 4}))
    seen = []
    encode_image = scorer.model.encode_image
    monkeypatch.setattr(scorer.model, "encode_image", lambda x, *a, **k: seen.append(len(x)) or encode_image(x))
    result = evaluate(scorer, bench, ScoreStore(tmp_path / "s.sqlite"), workers=0, chunk_items=4, progress=False)
    assert len(result.items) == 15 and sum(seen) == 3
    assert {r.metric for r in result.rows} == {"precision_at_1"}


def test_whole_aro_run_reports_every_subset(aro_root, tiny_clip, tmp_path):
    bench = ARO(aro_root, tagger=toy_tagger)
    scorer = ClipScorer(ScorerConfig(model=f"local-dir:{tiny_clip.local_dir}", options={"batch_size": 16}))
    result = evaluate(scorer, bench, ScoreStore(tmp_path / "s.sqlite"), workers=0, progress=False)
    main = {(r.subset, r.metric) for r in result.rows if "=" not in r.subset}
    assert main == {("vg-relation", "macro_accuracy"), ("vg-relation", "accuracy"),
                    ("vg-attribution", "macro_accuracy"), ("vg-attribution", "accuracy"),
                    ("coco-order", "precision_at_1"), ("flickr30k-order", "precision_at_1")}
    # a one-subset run reuses the whole run's stored scores (item ids are unique across subsets)
    again = evaluate(scorer, ARO(aro_root, "vg-relation"), ScoreStore(tmp_path / "s.sqlite"), workers=0,
                     progress=False)
    assert again.scored_now == 0


def test_a_box_outside_its_image_stops_a_clipping_run_naming_the_item(aro_root, tiny_clip, tmp_path):
    from harness.errors import ImageDecodeError

    path = aro_root / "aro" / "visual_genome_relation.json"
    records = json.loads(path.read_text())
    records[3].update({"bbox_x": 500, "bbox_y": 500})
    path.write_text(json.dumps(records))
    scorer = ClipScorer(ScorerConfig(model=f"local-dir:{tiny_clip.local_dir}", options={"batch_size": 4}))
    with pytest.raises(ImageDecodeError, match=r"item 'vg-relation/clip-box/3'.*lies outside the 96x96 image"):
        evaluate(scorer, ARO(aro_root, "vg-relation", box="clip"), ScoreStore(tmp_path / "s.sqlite"), workers=0,
                 progress=False)
