"""Builders for test fixtures: tiny open_clip models saved to disk, and Winoground data written in
the dataset repository's real layouts with real photographs (scikit-image ships them offline)."""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

ASSETS = Path(__file__).parent / "assets"
TINY_ARCH = "tiny-clip"

_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
           "colorwheel", "camera", "coins", "moon", "clock", "brick", "grass", "gravel", "page")
_photo_cache: dict[str, np.ndarray] = {}


def photo(index: int, size: int = 48) -> Image.Image:
    """A distinct real photograph crop for every index."""
    import skimage.data

    name = _PHOTOS[index % len(_PHOTOS)]
    if name not in _photo_cache:
        array = getattr(skimage.data, name)()
        if array.ndim == 2:
            array = np.stack([array] * 3, axis=-1)
        _photo_cache[name] = array[..., :3]
    array = _photo_cache[name]
    h, w = array.shape[:2]
    step = index // len(_PHOTOS)
    crop = min(h, w) // 2
    top = (step * 37) % (h - crop)
    left = (step * 53) % (w - crop)
    return Image.fromarray(array[top:top + crop, left:left + crop]).resize((size, size), Image.BILINEAR)


# -- tiny CLIP ------------------------------------------------------------------------------------

@dataclass
class TinyClip:
    arch: str
    config: dict
    safetensors: Path
    pt: Path
    local_dir: Path


def register_tiny_arch() -> str:
    import open_clip

    if TINY_ARCH not in open_clip.list_models():
        open_clip.add_model_config(ASSETS / f"{TINY_ARCH}.json")
    return TINY_ARCH


def build_tiny_clip(folder: Path, seed: int = 0, quick_gelu: bool = False) -> TinyClip:
    """Random tiny CLIP weights saved as .safetensors, .pt and a local-dir: folder."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    from models.clip import save_local_dir

    arch = register_tiny_arch()
    torch.manual_seed(seed)
    model = open_clip.create_model(arch, quick_gelu=quick_gelu)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, folder / "tiny.safetensors")
    torch.save(state, folder / "tiny.pt")
    config = json.loads((ASSETS / f"{TINY_ARCH}.json").read_text())
    if quick_gelu:
        config["quick_gelu"] = True
    local = save_local_dir(folder / "local", model, config)
    return TinyClip(arch, config, folder / "tiny.safetensors", folder / "tiny.pt", local)


# -- Winoground -----------------------------------------------------------------------------------

_TAGS = ("Object", "Relation", "Both", "Relation")
_NOUNS = ("dog", "couch", "person", "tree", "cup", "car", "bird", "box")
_RELATIONS = ("on", "under", "beside", "behind")


def winoground_records(n: int) -> list[dict]:
    """Metadata of n items; captions use the same words in a different order."""
    records = []
    for i in range(n):
        a, b = _NOUNS[i % len(_NOUNS)], _NOUNS[(i * 3 + 1) % len(_NOUNS)]
        if a == b:
            b = _NOUNS[(i + 1) % len(_NOUNS)]
        rel = _RELATIONS[i % len(_RELATIONS)]
        records.append({
            "id": i,
            "caption_0": f"a {a} {rel} a {b} in scene {i}",  # unique, as real Winoground captions are
            "caption_1": f"a {b} {rel} a {a} in scene {i}",
            "tag": f"tag{i % 5}",
            "secondary_tag": "" if i % 3 else "Symbolic",
            "num_main_preds": 1 + (i % 3 == 0),
            "collapsed_tag": _TAGS[i % len(_TAGS)],
        })
    return records


def write_winoground_parquet(folder: Path, n: int, rows_per_group: int = 8, image_size: int = 48) -> Path:
    """The current repository layout: data/test-00000-of-00001.parquet with embedded images."""
    import datasets

    records = winoground_records(n)
    columns = {key: [r[key] for r in records] for key in records[0]}
    columns["image_0"] = [photo(2 * i, image_size) for i in range(n)]
    columns["image_1"] = [photo(2 * i + 1, image_size) for i in range(n)]
    features = datasets.Features({
        "id": datasets.Value("int32"),
        "image_0": datasets.Image(),
        "image_1": datasets.Image(),
        "caption_0": datasets.Value("string"),
        "caption_1": datasets.Value("string"),
        "tag": datasets.Value("string"),
        "secondary_tag": datasets.Value("string"),
        "num_main_preds": datasets.Value("int32"),
        "collapsed_tag": datasets.Value("string"),
    })
    ds = datasets.Dataset.from_dict(columns, features=features)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    path = folder / "data" / "test-00000-of-00001.parquet"
    ds.to_parquet(str(path), batch_size=rows_per_group)
    return path


def write_winoground_jsonl(folder: Path, n: int, zipped: bool = False, with_suffix: bool = False) -> Path:
    """The older layout: data/examples.jsonl naming images in data/images/ (or data/images.zip)."""
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    with open(data / "examples.jsonl", "w") as f:
        for r in winoground_records(n):
            names = {f"image_{k}": f"ex_{r['id']}_img_{k}" + (".png" if with_suffix else "") for k in (0, 1)}
            f.write(json.dumps({**r, **names}) + "\n")
    if zipped:
        with zipfile.ZipFile(data / "images.zip", "w") as z:
            for i in range(n):
                for k in (0, 1):
                    tmp = data / f"ex_{i}_img_{k}.png"
                    photo(2 * i + k).save(tmp)
                    z.write(tmp, f"images/ex_{i}_img_{k}.png")
                    tmp.unlink()
    else:
        (data / "images").mkdir(exist_ok=True)
        for i in range(n):
            for k in (0, 1):
                photo(2 * i + k).save(data / "images" / f"ex_{i}_img_{k}.png")
    return data / "examples.jsonl"


def write_hub_snapshot(cache: Path, repo_id: str, n: int) -> Path:
    """A Hugging Face hub cache entry for a dataset repo, as huggingface_hub lays it out."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"datasets--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    write_winoground_parquet(snapshot, n)
    return snapshot


# -- a benchmark made in the test, for engine tests -----------------------------------------------

class PhotoBenchmark:
    """Factory for an in-test Benchmark whose items are given directly; refs name photo indices."""

    @staticmethod
    def make(items, name: str = "photos"):
        from harness.api import Benchmark

        class _Photos(Benchmark):
            version = "1"

            def __init__(self):
                super().__init__(Path("."), None)

            def items(self):
                return list(items)

            def load_image(self, ref):
                if ref.startswith("broken"):
                    raise OSError(f"cannot identify image file {ref}.png")
                return photo(int(ref))

            def metrics(self, items_, scores, seed):
                from harness.metrics import accuracy_row

                correct = [all(s[i].argmax() == t and (s[i] == s[i].max()).sum() == 1
                               for i, t in enumerate(it.truth)) for it, s in zip(items_, scores)]
                return [accuracy_row("all", "accuracy", np.array(correct), seed)]

            @classmethod
            def describe_data(cls, data_root):
                return []

        _Photos.name = name
        return _Photos()


# -- one way to build each registered plug-in, for contract tests ---------------------------------

def scorer_config(name: str, tmp: Path):
    """A ScorerConfig for a registered scorer on a tiny model; a new scorer adds its line here."""
    from harness.api import ScorerConfig

    if name == "clip":
        tiny = build_tiny_clip(tmp / "clip")
        return ScorerConfig(model=f"local-dir:{tiny.local_dir}", options={"batch_size": 8})
    if name == "sds-clip":
        from factories_diffusion import build_tiny_sd

        from models.finetune import FinetuneConfig, finetune

        tiny = build_tiny_clip(tmp / "clip")
        write_coco_captions(tmp / "coco_data", n_images=4)
        out = finetune(FinetuneConfig(clip=f"local-dir:{tiny.local_dir}", sd=str(build_tiny_sd(tmp / "sd")),
                                      out=str(tmp / "sds"), data_root=str(tmp / "coco_data"), batch_size=4,
                                      max_steps=1, workers=0), progress=False)
        return ScorerConfig(model=str(out), options={"batch_size": 8})
    if name == "diffusion":
        from factories_diffusion import build_tiny_sd  # imports this module: import here

        return ScorerConfig(model=str(build_tiny_sd(tmp / "sd")), options={"batch_size": 64, "timesteps": 2})
    raise KeyError(f"no tiny test model for scorer {name!r}: add one to tests/factories.py")


def write_benchmark_data(name: str, root: Path, n: int = 6) -> dict:
    """Fixture data for a registered benchmark under a data root, in its real on-disk layout;
    returns the benchmark options a test should pass to stay that small (usually none).

    Each benchmark has its writer in tests/benchmark_fixtures/<name>.py (dashes as underscores), a
    function ``write(root, n)``; a new benchmark adds its own file there.
    """
    import importlib

    try:
        module = importlib.import_module(f"benchmark_fixtures.{name.replace('-', '_')}")
    except ModuleNotFoundError as err:
        raise KeyError(f"no fixture writer for benchmark {name!r}: add tests/benchmark_fixtures/"
                       f"{name.replace('-', '_')}.py with write(root, n)") from err
    options = module.write(root, n)  # a writer may return other things for its own tests
    return options if isinstance(options, dict) else {}


# -- ARO ------------------------------------------------------------------------------------------

_TOY_NOUNS = {"dog", "cat", "man", "woman", "couch", "table", "horse", "field", "street", "car", "frisbee",
              "park", "bench", "dogs", "people", "shirt", "hat", "plate", "pizza"}
_TOY_ADJECTIVES = {"red", "small", "big", "white", "black", "young", "green", "old", "wooden"}


def toy_tagger(text: str) -> list[tuple[str, str]]:
    """A small Penn-tag tagger for tests (the real one is spaCy's en_core_web_sm)."""
    import re

    out = []
    for token in re.findall(r"[A-Za-z']+|[^\sA-Za-z']", text):
        low = token.lower()
        tag = "NN" if low in _TOY_NOUNS else "JJ" if low in _TOY_ADJECTIVES else "." if not low.isalpha() else "DT"
        out.append((token, tag))
    return out


toy_tagger.name = "toy-tagger"  # recorded in frozen option files

VG_RELATIONS = ("on", "under", "next to", "holding", "behind", "sitting on")
COCO_CAPTIONS = (
    "A small dog sits on a red couch.",
    "Two people walk a big horse across the field!",
    "A young man throws a white frisbee in the park",
    "A black cat sleeps under the wooden table.",
    "An old car parked on the street (near a bench).",
)


def write_aro(root: Path, n_images: int = 3, vg_per_image: int = 12, unique_captions: bool = False) -> None:
    """ARO's real layouts: VG JSON lists with boxes plus images/, Karpathy test JSON plus images.

    ``unique_captions`` numbers each image's captions, as in real COCO where no two are alike."""
    (root / "aro" / "images").mkdir(parents=True, exist_ok=True)
    relation, attribution = [], []
    for i in range(n_images):
        name = f"{2300000 + i}.jpg"
        photo(i, 96).save(root / "aro" / "images" / name, quality=90)
        for k in range(vg_per_image):
            box = {"bbox_x": 5 * k, "bbox_y": 3 * k, "bbox_w": 40, "bbox_h": 50}
            if k == vg_per_image - 1:
                box = {"bbox_x": 80, "bbox_y": 70, "bbox_w": 60, "bbox_h": 60}  # partly outside: clipped
            rel = VG_RELATIONS[(i + k) % len(VG_RELATIONS)]
            relation.append({"image_id": str(2300000 + i), "image_path": name, **box, "relation_name": rel,
                             "true_caption": f"the dog is {rel} the couch",
                             "false_caption": f"the couch is {rel} the dog"})
            a0, a1 = ("small", "black") if k % 6 == 0 else ("red", "white")  # 30 and 6 items at the defaults
            attribution.append({"image_id": str(2300000 + i), "image_path": name, **box, "attributes": [a0, a1],
                                "true_caption": f"the {a0} cat and the {a1} hat",
                                "false_caption": f"the {a1} cat and the {a0} hat"})
    (root / "aro" / "visual_genome_relation.json").write_text(json.dumps(relation))
    (root / "aro" / "visual_genome_attribution.json").write_text(json.dumps(attribution))

    (root / "coco" / "val2014").mkdir(parents=True, exist_ok=True)
    (root / "flickr30k" / "flickr30k-images").mkdir(parents=True, exist_ok=True)
    coco, flickr = [], []
    for i in range(n_images):
        coco_name = f"val2014/COCO_val2014_{391895 + i:012d}.jpg"
        photo(10 + i, 64).save(root / "coco" / coco_name, quality=90)
        captions = [f"{c} number {i}" if unique_captions else c for c in COCO_CAPTIONS]
        coco.append({"image": coco_name, "caption": captions})
        flickr_name = f"flickr30k-images/{1000092795 + i}.jpg"
        photo(20 + i, 64).save(root / "flickr30k" / flickr_name, quality=90)
        flickr.append({"image": flickr_name, "caption": list(COCO_CAPTIONS[:3])})
    (root / "coco" / "coco_karpathy_test.json").write_text(json.dumps(coco))
    (root / "flickr30k" / "flickr30k_test.json").write_text(json.dumps(flickr))


# -- SugarCrepe -----------------------------------------------------------------------------------

def write_sugarcrepe(root: Path, per_subset: int = 4, subsets=("replace-obj", "swap-att", "add-rel")) -> None:
    """SugarCrepe's layout: {subset}.json dicts keyed by index, images in coco/val2017/."""
    (root / "coco" / "val2017").mkdir(parents=True, exist_ok=True)
    (root / "sugarcrepe").mkdir(parents=True, exist_ok=True)
    for s, subset in enumerate(subsets):
        if subset == "add-rel":  # not a SugarCrepe subset: written to check it is ignored
            continue
        records = {}
        for k in range(per_subset):
            filename = f"{139 + 10 * s + k:012d}.jpg"
            photo(30 + 10 * s + k, 64).save(root / "coco" / "val2017" / filename, quality=90)
            records[str(k)] = {"filename": filename, "caption": f"a dog on a couch number {k}",
                               "negative_caption": f"a couch on a dog number {k}"}
        (root / "sugarcrepe" / f"{subset}.json").write_text(json.dumps(records))


def count_encoder_inputs(model) -> dict[str, int]:
    """Counts the images and texts that reach an open_clip model's two towers (forward hooks, so
    every code path that encodes is seen)."""
    seen = {"images": 0, "texts": 0}

    def on_image(module, inputs, output):
        seen["images"] += len(inputs[0])

    def on_text(module, inputs, output):
        seen["texts"] += len(inputs[0])

    model.visual.register_forward_hook(on_image)
    model.token_embedding.register_forward_hook(on_text)
    return seen


# -- COCO 2017 captions (fine-tuning) --------------------------------------------------------------

def write_coco_captions(root: Path, n_images: int = 16, per_image: int = 2) -> Path:
    """MS-COCO 2017's layout: annotations/captions_train2017.json and train2017/ images."""
    folder = root / "coco"
    (folder / "train2017").mkdir(parents=True, exist_ok=True)
    (folder / "annotations").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(n_images):
        name = f"{9 + i:012d}.jpg"
        photo(40 + i, 64).save(folder / "train2017" / name, quality=90)
        images.append({"id": 9 + i, "file_name": name, "height": 64, "width": 64})
        for k in range(per_image):
            noun = _NOUNS[(i + k) % len(_NOUNS)]
            annotations.append({"id": 1000 * i + k, "image_id": 9 + i,
                                "caption": f"a photo of a {noun} in scene {i}, take {k}"})
    path = folder / "annotations" / "captions_train2017.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return path
