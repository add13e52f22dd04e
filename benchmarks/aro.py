"""ARO, Attribution, Relation and Order (Yuksekgonul et al., ICLR 2023): four subsets of one
image against K captions, scored by the argmax over captions.

- ``vg-relation``: a Visual Genome crop, [false caption, true caption] with swapped relation
  arguments. Macro accuracy over relations, without the symmetric relations of the reference
  evaluation (``data/aro_vgr_symmetric_relations.txt``).
- ``vg-attribution``: the same with swapped attributes. Macro accuracy over attribute pairs
  ``f"{a0}_{a1}"`` with at least 25 items.
- ``coco-order``, ``flickr30k-order``: each Karpathy-test caption against four perturbations of
  its word order (below). Precision@1.

Visual Genome crops follow the reference loader (``dataset_zoo/aro_datasets.py`` of GitHub
mertyg/vision-language-models-are-bows, ``VG_Relation.__getitem__``): the box is cropped exactly as
given, ``image.crop((x, y, x + w, y + h))``, and Pillow fills whatever lies outside the image with
black. ``--bench-opt box=clip`` clips the box to the image instead (the harness's behaviour before
version 2; its items have their own ids, so the two never share stored scores). The VG rows'
details count the boxes that leave their image (``boxes_leaving_image``, of which
``boxes_wholly_outside``): only on those do the two choices differ.

All decisions are strict: the correct caption must score higher than every other, so a tie is
wrong (the reference code's argmax would send a VG tie to the false caption and an order tie to
the original). Micro accuracy is reported over all items of a subset; per-relation and
per-attribute-pair rows carry ``n``.

Order perturbations, as the reference describes them, applied to the raw caption and each option
then normalised (lower-case, ``. ! " ( ) * # : ; ~`` to spaces, spaces collapsed, first 30 words):
(1) permute the nouns (Penn tags NN NNS NNP NNPS) among themselves and the adjectives (JJ JJR
JJS) among themselves; (2) permute every other token; (3) shuffle within consecutive trigrams;
(4) shuffle the order of the trigrams. The reference draws new perturbations on every run; here
they are drawn once per (annotation file, seed), frozen to a JSON file in the data root and
identified by its hash in every result row, so every model sees identical options. Tagging needs
spaCy's ``en_core_web_sm`` (the reference's tagger) unless the frozen file already exists.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from harness.api import Benchmark, DataRequirement, Item, MetricRow
from harness.errors import BadRecordError, HarnessError, MissingDataError
from harness.images import decode_image
from harness.files import atomic_write_text
from harness.metrics import accuracy_row, by_subset, macro_accuracy_row, strictly_first
from harness.options import Choice, FilePath, Int, Option

SUBSETS = ("vg-relation", "vg-attribution", "coco-order", "flickr30k-order")
SYMMETRIC_RELATIONS_FILE = Path(__file__).parent / "data" / "aro_vgr_symmetric_relations.txt"
ATTRIBUTE_MIN_ITEMS = 25  # the reference drops attribute pairs with fewer items
MAX_WORDS = 30
NOUN_TAGS = frozenset({"NN", "NNS", "NNP", "NNPS"})
ADJECTIVE_TAGS = frozenset({"JJ", "JJR", "JJS"})
PERTURBATIONS = ("shuffle_nouns_and_adjectives", "shuffle_other_tokens", "shuffle_within_trigrams",
                 "shuffle_trigrams")
ORDER_GENERATOR_VERSION = "1"  # bump when the perturbation code changes: frozen files then differ
BOX_MODES = ("reference", "clip")

# token, Penn Treebank tag
Tagger = Callable[[str], list[tuple[str, str]]]

HOW_TO_GET_VG = (
    "Download ARO's Visual Genome files (visual_genome_relation.json, visual_genome_attribution.json "
    "and the images folder, as the ARO repository's dataset code fetches them) into <data-root>/aro/."
)
HOW_TO_GET_COCO = (
    "Put the Karpathy test split annotation (coco_karpathy_test.json) in <data-root>/coco/ and the "
    "COCO 2014 validation images in <data-root>/coco/val2014/."
)
HOW_TO_GET_FLICKR = (
    "Put the Karpathy test split annotation (flickr30k_test.json) in <data-root>/flickr30k/ and the "
    "Flickr30k images in <data-root>/flickr30k/flickr30k-images/ (Flickr30k needs a request form)."
)


def normalise_caption(caption: str, max_words: int = MAX_WORDS) -> str:
    """The reference caption normalisation (see the module docstring)."""
    text = re.sub(r"[.!\"()*#:;~]", " ", caption.lower())
    text = re.sub(r"\s{2,}", " ", text).strip()
    return " ".join(text.split(" ")[:max_words])


def _shuffled(tokens: list[str], positions: list[int], rng: np.random.Generator) -> list[str]:
    """``tokens`` with the tokens at ``positions`` permuted among those positions."""
    out = list(tokens)
    for target, source in zip(positions, rng.permutation(len(positions))):
        out[target] = tokens[positions[source]]
    return out


def perturb(caption: str, tagger: Tagger, rng: np.random.Generator) -> list[str]:
    """The four order perturbations of a raw caption (not yet normalised), in PERTURBATIONS order."""
    tagged = tagger(caption)
    tokens = [token for token, _ in tagged]
    nouns = [i for i, (_, tag) in enumerate(tagged) if tag in NOUN_TAGS]
    adjectives = [i for i, (_, tag) in enumerate(tagged) if tag in ADJECTIVE_TAGS]
    others = [i for i, (_, tag) in enumerate(tagged) if tag not in NOUN_TAGS | ADJECTIVE_TAGS]
    trigrams = [tokens[i:i + 3] for i in range(0, len(tokens), 3)]
    return [
        " ".join(_shuffled(_shuffled(tokens, nouns, rng), adjectives, rng)),
        " ".join(_shuffled(tokens, others, rng)),
        " ".join(" ".join(_shuffled(g, list(range(len(g))), rng)) for g in trigrams),
        " ".join(" ".join(trigrams[i]) for i in rng.permutation(len(trigrams))),
    ]


def spacy_tagger() -> tuple[Tagger, str]:
    """The reference's tagger, spaCy's en_core_web_sm: (tagger, a name recorded in frozen files)."""
    try:
        import spacy
    except ImportError as err:
        raise HarnessError(
            "ARO's order subsets tag captions with spaCy, which is not installed. Install it with "
            "`pip install -e \".[aro]\"` and its model with `python -m spacy download en_core_web_sm`; or copy "
            "a frozen options file (aro/frozen/*.json) made elsewhere into the data root."
        ) from err
    try:
        nlp = spacy.load("en_core_web_sm", exclude=["parser", "ner", "lemmatizer"])
    except OSError as err:
        raise HarnessError(
            "spaCy is installed but its model en_core_web_sm is not: `python -m spacy download en_core_web_sm`"
        ) from err
    name = f"spacy-{spacy.__version__}/en_core_web_sm-{nlp.meta.get('version', '?')}"
    return (lambda text: [(t.text, t.tag_) for t in nlp(text)]), name


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_json_list(path: Path, what: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise BadRecordError(f"{path} ({what}) is not valid JSON: {err}") from err
    if not isinstance(data, list):
        raise BadRecordError(f"{path} ({what}) should hold a JSON list of records, found {type(data).__name__}")
    return data


def _field(record: dict[str, Any], field: str, index: int, path: Path) -> Any:
    if not isinstance(record, dict) or field not in record:
        raise BadRecordError(f"record {index} of {path} lacks field {field!r}")
    return record[field]


class TaggerOption:
    """``spacy`` (the reference's en_core_web_sm), or ``module:function`` naming a function from a
    text to (token, Penn Treebank tag) pairs (a function object, from Python)."""

    label = "spacy|module:function"

    def __call__(self, value: Any) -> Any:
        if callable(value) or value == "spacy":
            return value
        text = str(value).strip()
        module_name, colon, attr = text.partition(":")
        if not colon or not module_name or not attr:
            raise ValueError(f"expected spacy or module:function, got {value!r}")
        import importlib

        try:
            function = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"cannot import {text}: {err}") from None
        if not callable(function):
            raise ValueError(f"{text} is not a function")
        return function


class ARO(Benchmark):
    """Options: ``harness ls aro``."""

    name = "aro"
    version = "2"  # 2: VG boxes cropped as the reference does (black outside the image), not clipped
    subsets = SUBSETS
    comparisons = "text_argmax"
    OPTIONS = (
        Option("vg_relation_json", FilePath(), None, "default: <data-root>/aro/visual_genome_relation.json"),
        Option("vg_attribution_json", FilePath(), None, "default: <data-root>/aro/visual_genome_attribution.json"),
        Option("vg_images", FilePath(), None, "Visual Genome images (default: <data-root>/aro/images)"),
        Option("coco_json", FilePath(), None, "default: <data-root>/coco/coco_karpathy_test.json"),
        Option("coco_root", FilePath(), None, "folder the COCO annotation's image paths start from "
                                              "(default: <data-root>/coco)"),
        Option("flickr_json", FilePath(), None, "default: <data-root>/flickr30k/flickr30k_test.json"),
        Option("flickr_root", FilePath(), None, "folder the Flickr30k annotation's image paths start from "
                                                "(default: <data-root>/flickr30k)"),
        Option("order_seed", Int(0), 0, "seed of the frozen word-order perturbations (coco-order, flickr30k-order)"),
        Option("frozen_dir", FilePath(), None, "where frozen perturbations are kept "
                                               "(default: <data-root>/aro/frozen)"),
        Option("tagger", TaggerOption(), "spacy", "part-of-speech tagger that draws the order perturbations"),
        Option("box", Choice(*BOX_MODES), "reference",
               "VG crops: reference = the box exactly as given, black outside the image (the ARO code's "
               "image.crop); clip = the box clipped to the image"),
    )

    def __init__(self, data_root: Path, subset: str | None = None, **options: Any) -> None:
        super().__init__(data_root, subset, **options)
        o, root = self.options, self.data_root
        self.annotations = {
            "vg-relation": Path(o["vg_relation_json"] or root / "aro" / "visual_genome_relation.json"),
            "vg-attribution": Path(o["vg_attribution_json"] or root / "aro" / "visual_genome_attribution.json"),
            "coco-order": Path(o["coco_json"] or root / "coco" / "coco_karpathy_test.json"),
            "flickr30k-order": Path(o["flickr_json"] or root / "flickr30k" / "flickr30k_test.json"),
        }
        # image refs start with one of these keys; the rest of the ref is a path under the root
        self.image_roots = {
            "vg": Path(o["vg_images"] or root / "aro" / "images"),
            "coco": Path(o["coco_root"] or root / "coco"),
            "flickr30k": Path(o["flickr_root"] or root / "flickr30k"),
        }
        self.order_seed = o["order_seed"]
        self.frozen_dir = Path(o["frozen_dir"] or root / "aro" / "frozen")
        self._tagger = None if o["tagger"] == "spacy" else o["tagger"]
        self.box = o["box"]
        self._image_sizes: dict[Path, tuple[int, int] | None] = {}  # header reads for the box counts
        self._frozen: dict[str, tuple[Path, str, int]] = {}  # subset -> (file, sha256, degenerate items)
        self._items: list[Item] | None = None

    # -- items ------------------------------------------------------------------------------------
    def items(self) -> list[Item]:
        if self._items is not None:
            return self._items
        self._items = self.items_of_subsets(
            lambda subset: self._vg_items(subset) if subset.startswith("vg-") else self._order_items(subset),
            self._missing, "ARO")
        return self._items

    def _missing(self, subset: str) -> str:
        annotation = self.annotations[subset]
        images = self.image_roots["vg" if subset.startswith("vg-") else subset.removesuffix("-order")]
        how = {"vg-relation": HOW_TO_GET_VG, "vg-attribution": HOW_TO_GET_VG, "coco-order": HOW_TO_GET_COCO,
               "flickr30k-order": HOW_TO_GET_FLICKR}[subset]
        if not annotation.is_file():
            return f"annotation file {annotation} not found. {how}"
        if not images.is_dir():
            return f"image folder {images} not found. {how}"
        return ""

    def _vg_items(self, subset: str) -> list[Item]:
        path = self.annotations[subset]
        items = []
        for i, record in enumerate(_read_json_list(path, f"ARO {subset}")):
            box = [_field(record, f"bbox_{k}", i, path) for k in "xywh"]
            if subset == "vg-relation":
                group = str(_field(record, "relation_name", i, path))
            else:
                attributes = _field(record, "attributes", i, path)
                if not isinstance(attributes, list) or len(attributes) != 2:
                    raise BadRecordError(f"record {i} of {path}: 'attributes' should list two strings")
                group = f"{attributes[0]}_{attributes[1]}"
            # the ref names the crop: scorers cache images by ref, and clipped crops differ
            clip = "clip:" if self.box == "clip" else ""
            ref = f"vg/{_field(record, 'image_path', i, path)}#{clip}{','.join(str(v) for v in box)}"
            items.append(Item(
                id=f"{subset}/clip-box/{i}" if clip else f"{subset}/{i}",
                images=(ref,),
                texts=(str(_field(record, "false_caption", i, path)), str(_field(record, "true_caption", i, path))),
                truth=(1,),  # the reference orders the options [false, true]
                meta={"subset": subset, "group": group},
            ))
        return items

    def _order_items(self, subset: str) -> list[Item]:
        path, sha, degenerate = self._frozen_options(subset)
        data = json.loads(path.read_text(encoding="utf-8"))
        key = subset.removesuffix("-order")
        items = []
        for record in data["items"]:
            options = tuple(record["options"])
            items.append(Item(
                id=f"{subset}/{record['image_index']}/{record['caption_index']}",
                images=(f"{key}/{record['image']}",),
                texts=options,
                truth=(0,),
                meta={"subset": subset, "degenerate": any(o == options[0] for o in options[1:])},
            ))
        self._frozen[subset] = (path, sha, degenerate)
        return items

    def _frozen_options(self, subset: str) -> tuple[Path, str, int]:
        """The frozen options file for (annotation file, seed), generated on first use."""
        annotation = self.annotations[subset]
        annotation_sha = _sha256(annotation)
        path = self.frozen_dir / (f"{subset}-seed{self.order_seed}-v{ORDER_GENERATOR_VERSION}-"
                                  f"{annotation_sha[:12]}.json")
        if not path.is_file():
            self._generate_options(subset, annotation, annotation_sha, path)
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("annotation_sha256") != annotation_sha:
            raise BadRecordError(f"{path} was generated from another annotation file than {annotation}; delete it")
        degenerate = sum(any(o == r["options"][0] for o in r["options"][1:]) for r in data["items"])
        return path, _sha256(path), degenerate

    def _generate_options(self, subset: str, annotation: Path, annotation_sha: str, path: Path) -> None:
        from tqdm.auto import tqdm

        if self._tagger is not None:
            tagger, tagger_name = self._tagger, getattr(self._tagger, "name", "custom")
        else:
            tagger, tagger_name = spacy_tagger()
        records = _read_json_list(annotation, f"ARO {subset}")
        out = []
        for i, record in enumerate(tqdm(records, desc=f"freezing {subset} perturbations", unit="image")):
            captions = _field(record, "caption", i, annotation)
            image = str(_field(record, "image", i, annotation))
            for j, caption in enumerate(captions if isinstance(captions, list) else [captions]):
                # one generator per caption: the options do not depend on processing order
                rng = np.random.default_rng([self.order_seed, i, j])
                options = [caption, *perturb(str(caption), tagger, rng)]
                out.append({"image_index": i, "caption_index": j, "image": image,
                            "options": [normalise_caption(o) for o in options]})
        payload = {
            "subset": subset, "annotation_file": annotation.name, "annotation_sha256": annotation_sha,
            "seed": self.order_seed, "generator_version": ORDER_GENERATOR_VERSION, "tagger": tagger_name,
            "option_order": ["original", *PERTURBATIONS], "items": out,
        }
        atomic_write_text(path, json.dumps(payload, indent=1) + "\n")

    # -- images -----------------------------------------------------------------------------------
    def load_image(self, ref: str) -> Image.Image:
        path, box, clip = self._locate(ref)
        if not path.is_file():
            raise MissingDataError(f"image {path} not found (under {path.parent})")
        image = decode_image(path, str(path)).convert("RGB")
        if box is not None:
            image = _crop(image, box, path) if clip else reference_crop(image, box, path)
        return image

    def _locate(self, ref: str) -> tuple[Path, list[float] | None, bool]:
        """(image file, box or None, whether the box is clipped) of an image ref."""
        key, _, rest = ref.partition("/")
        relative, _, box = rest.partition("#")
        root = self.image_roots[key]
        path = root / relative
        if not path.is_file() and (root / Path(relative).name).is_file():
            path = root / Path(relative).name  # a flat image folder
        clip = box.startswith("clip:")
        values = [float(v) for v in box.removeprefix("clip:").split(",")] if box else None
        return path, values, clip

    def _box_counts(self, items: Sequence[Item]) -> dict[str, Any]:
        """How many of the items' boxes leave their image, read from image headers (cheap: no
        pixels are decoded). Boxes whose image cannot be read are counted as unchecked."""
        leaving = outside = unchecked = 0
        for item in items:
            ref = item.images[0]
            if "#" not in ref or ref.partition("/")[0] not in self.image_roots:
                continue  # not a VG crop (e.g. items built in a test)
            path, box, _ = self._locate(ref)
            if path not in self._image_sizes:
                try:
                    with Image.open(path) as image:
                        self._image_sizes[path] = image.size
                except (OSError, ValueError):
                    self._image_sizes[path] = None
            size = self._image_sizes[path]
            if size is None or box is None:
                unchecked += 1
                continue
            x, y, w, h = box
            # the corners Pillow's crop uses (it rounds them)
            left, top, right, bottom = (round(v) for v in (x, y, x + w, y + h))
            width, height = size
            if left < 0 or top < 0 or right > width or bottom > height:
                leaving += 1
                if left >= width or top >= height or right <= 0 or bottom <= 0:
                    outside += 1
        counts: dict[str, Any] = {"box": self.box, "boxes_leaving_image": leaving, "boxes_wholly_outside": outside}
        if unchecked:
            counts["boxes_unchecked"] = unchecked
        return counts

    # -- metrics ----------------------------------------------------------------------------------
    def outcome(self, item: Item, scores: np.ndarray) -> dict[str, Any]:
        return {"correct": strictly_first(scores, item.truth[0])}

    def metrics(self, items: Sequence[Item], scores: Sequence[np.ndarray], seed: int) -> list[MetricRow]:
        rows: list[MetricRow] = []
        for subset, chosen, matrices in by_subset(items, scores, SUBSETS):
            correct = np.array([strictly_first(s, item.truth[0]) for item, s in zip(chosen, matrices)])
            ids = [item.id for item in chosen]
            if subset.startswith("vg-"):
                boxes = self._box_counts(chosen)
                rows += self._vg_rows(subset, [item.meta["group"] for item in chosen], correct, seed, ids, boxes)
            else:
                path, sha, degenerate = self._frozen[subset]
                details = {"order_options_file": path.name, "order_options_sha256": sha,
                           "order_seed": self.order_seed, "degenerate_items": degenerate}
                rows.append(replace(accuracy_row(subset, "precision_at_1", correct, seed, ids), details=details))
        return rows

    def _vg_rows(self, subset: str, groups: list[str], correct: np.ndarray, seed: int,
                 ids: list[str], boxes: dict[str, Any]) -> list[MetricRow]:
        by_group: dict[str, list[bool]] = {}
        group_ids: dict[str, list[str]] = {}
        for group, ok, item_id in zip(groups, correct, ids):
            by_group.setdefault(group, []).append(bool(ok))
            group_ids.setdefault(group, []).append(item_id)
        if subset == "vg-relation":
            symmetric = symmetric_relations()
            kept = {g: v for g, v in by_group.items() if g not in symmetric}
            rule = {"dropped_symmetric_relations": len(by_group) - len(kept)}
            field = "relation"
        else:
            kept = {g: v for g, v in by_group.items() if len(v) >= ATTRIBUTE_MIN_ITEMS}
            rule = {"min_items_per_pair": ATTRIBUTE_MIN_ITEMS, "dropped_pairs": len(by_group) - len(kept)}
            field = "attributes"
        rows = [replace(accuracy_row(subset, "accuracy", correct, seed, ids), details=boxes)]
        if kept:  # with no group left (a small --limit), there is no macro accuracy to report
            macro = macro_accuracy_row(subset, "macro_accuracy", [np.array(v) for v in kept.values()], seed,
                                       ids=[group_ids[g] for g in kept], names=list(kept))
            rows.insert(0, replace(macro, details={**rule, "groups": len(kept), **boxes}))
        for group in sorted(by_group):
            row = accuracy_row(f"{subset}/{field}={group}", "accuracy", np.array(by_group[group]), seed,
                               group_ids[group])
            rows.append(replace(row, details={"in_macro": group in kept}))
        return rows

    def details(self) -> dict[str, Any]:
        return {"order_seed": self.order_seed}

    @classmethod
    def describe_data(cls, data_root: Path) -> list[DataRequirement]:
        bench = cls(data_root)
        out = []
        for subset in SUBSETS:
            missing = bench._missing(subset)
            how = missing.split(". ", 1)[-1] if missing else ""
            out.append(DataRequirement(f"ARO {subset} annotation", str(bench.annotations[subset]),
                                       bench.annotations[subset].is_file(), how))
        for key, folder in bench.image_roots.items():
            out.append(DataRequirement(f"ARO images ({key})", str(folder), folder.is_dir(), ""))
        return out


def symmetric_relations() -> frozenset[str]:
    lines = SYMMETRIC_RELATIONS_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def reference_crop(image: Image.Image, box: Sequence[float], path: Path) -> Image.Image:
    """The reference crop: Pillow's ``image.crop((x, y, x + w, y + h))`` on the box as given, so
    the part of the box outside the image comes back black (Pillow rounds float corners). An
    empty box (w or h not positive) is refused: it holds no pixels to score."""
    x, y, w, h = box
    if w <= 0 or h <= 0:
        raise BadRecordError(f"box x={x} y={y} w={w} h={h} of image {path} is empty")
    return image.crop((x, y, x + w, y + h))


def _crop(image: Image.Image, box: list[float], path: Path) -> Image.Image:
    """Crop to (x, y, x+w, y+h), clipped to the image (``box=clip``); a box wholly outside it is refused."""
    x, y, w, h = box
    left, top = max(0.0, x), max(0.0, y)
    right, bottom = min(float(image.width), x + w), min(float(image.height), y + h)
    if right <= left or bottom <= top:
        raise BadRecordError(f"box x={x} y={y} w={w} h={h} lies outside the {image.width}x{image.height} image {path}")
    return image.crop((int(left), int(top), int(np.ceil(right)), int(np.ceil(bottom))))
