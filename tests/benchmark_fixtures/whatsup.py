"""What'sUp in the layout of the reference repository's data/ folder (amitakamath/whatsup_vlms):
controlled_{images,clevr}_dataset.json with their image folders, {coco,vg}_qa_{one,two}_obj.json
with val2017/ and vg_images/. The first caption option is always the true one."""

from __future__ import annotations

import json
from pathlib import Path

from factories import photo

OBJECTS_A = (("mug", "table"), ("beer-bottle", "armchair"), ("scarf", "chair"), ("cap", "box"))
OBJECTS_B = (("cube", "sphere"), ("cylinder", "cube"), ("sphere", "cylinder"), ("cone", "cube"))
# file-name preposition, caption phrase
PREPOSITIONS_A = (("on", "on"), ("under", "under"), ("left_of", "to the left of"), ("right_of", "to the right of"))
PREPOSITIONS_B = (("in-front_of", "in front of"), ("behind", "behind"), ("left_of", "to the left of"),
                  ("right_of", "to the right of"))
COCO_ONE = ("left", "right", "top", "bottom")
COCO_TWO = (("to the left of", "to the right of"), ("to the right of", "to the left of"), ("above", "below"),
            ("below", "above"))
GQA_ONE = ("left", "right")
GQA_TWO = (("to the left of", "to the right of"), ("in front of", "behind"), ("behind", "in front of"),
           ("on top of", "below"))


def controlled_records(subset: str, groups: int) -> list[dict]:
    """Four images per object pair, one per preposition; each record's captions start with the
    true one and list the other three prepositions in a fixed order."""
    objects, prepositions, folder = ((OBJECTS_A, PREPOSITIONS_A, "controlled_images") if subset == "a"
                                     else (OBJECTS_B, PREPOSITIONS_B, "controlled_clevr"))
    records = []
    for first, second in objects[:groups]:
        for name, phrase in prepositions:
            others = [p for _, p in prepositions if p != phrase]
            captions = [f"A {first.replace('-', ' ')} {p} a {second}" for p in (phrase, *others)]
            records.append({"image_path": f"data/{folder}/{first}_{name}_{second}.jpeg", "caption_options": captions})
    return records


def qa_records(kind: str, two: bool, n: int) -> list[list]:
    """[image_id, true caption, false caption] records; COCO ids are ints, GQA ids strings."""
    records = []
    for i in range(n):
        image_id = 139 + 11 * i if kind == "coco" else str(2354786 + 7 * i)
        if not two:
            choices = COCO_ONE if kind == "coco" else GQA_ONE
            where = choices[i % len(choices)]
            opposite = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}[where]
            records.append([image_id, f"A photo of a dog on the {where}", f"A photo of a dog on the {opposite}"])
        else:
            true, false = (COCO_TWO if kind == "coco" else GQA_TWO)[i % 4]
            records.append([image_id, f"A photo of a dog {true} a person", f"A photo of a dog {false} a person"])
    return records


def write_whatsup(root: Path, groups: int = 2, per_qa: int = 4, subsets: tuple[str, ...] | None = None,
                  size: int = 32) -> Path:
    """Writes <root>/whatsup/ (the reference's data/ folder) with real photographs."""
    folder = root / "whatsup"
    folder.mkdir(parents=True, exist_ok=True)
    wanted = subsets or ("controlled-a", "controlled-b", "coco-spatial-one", "coco-spatial-two",
                         "gqa-spatial-one", "gqa-spatial-two")
    index = 0
    for subset, letter, annotation in (("controlled-a", "a", "controlled_images_dataset.json"),
                                       ("controlled-b", "b", "controlled_clevr_dataset.json")):
        if subset not in wanted:
            continue
        records = controlled_records(letter, groups)
        (folder / annotation).write_text(json.dumps(records))
        for record in records:
            path = folder / record["image_path"].removeprefix("data/")
            path.parent.mkdir(parents=True, exist_ok=True)
            photo(index, size).save(path, format="JPEG", quality=90)
            index += 1
    for subset, kind, two, annotation, images in (
            ("coco-spatial-one", "coco", False, "coco_qa_one_obj.json", "val2017"),
            ("coco-spatial-two", "coco", True, "coco_qa_two_obj.json", "val2017"),
            ("gqa-spatial-one", "gqa", False, "vg_qa_one_obj.json", "vg_images"),
            ("gqa-spatial-two", "gqa", True, "vg_qa_two_obj.json", "vg_images")):
        if subset not in wanted:
            continue
        records = qa_records(kind, two, per_qa)
        (folder / annotation).write_text(json.dumps(records))
        (folder / images).mkdir(exist_ok=True)
        for record in records:
            name = f"{str(record[0]).zfill(12)}.jpg" if kind == "coco" else f"{record[0]}.jpg"
            if not (folder / images / name).exists():
                photo(index, size).save(folder / images / name, quality=90)
                index += 1
    return folder


def write(root: Path, n: int) -> None:
    write_whatsup(root, groups=1, per_qa=max(2, n // 2))
