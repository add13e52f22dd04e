"""`harness score` and `from harness import score`: images x texts for any scorer, on the toy models."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from factories import photo
from typer.testing import CliRunner

from harness import scoring
from harness.cli import app
from harness.errors import HarnessError, ImageDecodeError, MissingDataError
from harness.registry import SCORERS

cli = CliRunner()
TEXTS = ["a dog on a couch", "a couch on a dog", "a red circle"]


@pytest.fixture
def images(tmp_path):
    paths = []
    for k in range(2):
        paths.append(tmp_path / f"photo {k}.png")
        photo(k, 48).save(paths[-1])
    return paths


@pytest.fixture(autouse=True)
def _fresh_cache():
    scoring.clear_cache()
    yield
    scoring.clear_cache()


def test_importing_harness_and_score_loads_no_numpy_or_torch():
    code = ("import sys, harness; from harness import score; "
            "print('HEAVY', [m for m in ('torch', 'numpy', 'PIL', 'open_clip') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out


def test_score_gives_an_images_by_texts_array_from_paths_and_pil_images(images):
    from PIL import Image

    from harness import score

    matrix = score([images[0], str(images[1])], TEXTS)
    assert isinstance(matrix, np.ndarray) and matrix.shape == (2, 3) and np.isfinite(matrix).all()
    with Image.open(images[1]) as opened:
        as_pil = score([opened], TEXTS)
    # CLIP scores each pair on its own: one image alone gives its row of the matrix
    assert np.allclose(as_pil, matrix[1:], atol=1e-6)
    assert np.allclose(score(images[0], "a red circle"), matrix[:1, 2:], atol=1e-6)  # one of each: 1 x 1


def test_the_scorer_is_built_once_per_configuration(images, monkeypatch):
    import models.clip

    loads = []
    real = models.clip.load_open_clip
    monkeypatch.setattr(models.clip, "load_open_clip", lambda *a, **k: loads.append(a) or real(*a, **k))
    first = scoring.score(images, TEXTS, options={"batch_size": 8})
    again = scoring.score(images[:1], TEXTS[:1], options={"batch_size": "8"})  # the same option, as a string
    assert len(loads) == 1
    assert np.allclose(again, first[:1, :1], atol=1e-6)
    scoring.score(images, TEXTS, options={"batch_size": 4})  # another configuration: another scorer
    scoring.score(images, TEXTS, options={"batch_size": 8})  # the first is still kept
    assert len(loads) == 2


@pytest.mark.parametrize("name", SCORERS.names())
def test_every_registered_scorer_scores_pairs_with_its_default_model(name, images):
    if SCORERS.get(name).default_model is None:
        pytest.skip(f"scorer {name} has no default model to load without --model")
    options = {"timesteps": 2} if name == "diffusion" else None
    matrix = scoring.score(images, TEXTS[:2], scorer=name, options=options)
    assert matrix.shape == (2, 2) and np.isfinite(matrix).all()
    assert np.array_equal(scoring.score(images, TEXTS[:2], scorer=name, options=options), matrix)  # seeded


def test_harness_score_prints_a_table_and_json(images):
    args = ["score", str(images[0]), str(images[1]), "-t", TEXTS[0], "--text", TEXTS[1]]
    table = cli.invoke(app, args)
    assert table.exit_code == 0, table.output
    assert "clip scores, model toy:clip on cpu" in table.output
    assert TEXTS[0] in table.output and str(images[1]) in table.output

    result = cli.invoke(app, [*args, "--json", "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["scorer"] == "clip" and data["model"] == "toy:clip" and data["device"] == "cpu"
    assert data["images"] == [str(p) for p in images] and data["texts"] == TEXTS[:2]
    assert np.allclose(data["scores"], scoring.score(images, TEXTS[:2]), atol=1e-6)


@pytest.mark.parametrize("case, message", [
    ("missing", "error: image file '{missing}' not found"),
    ("not an image", "error: cannot decode image '{text}': UnidentifiedImageError"),
    ("truncated", "error: cannot decode image '{truncated}'"),
    ("no texts", "error: no texts given: pass at least one text"),
    ("bad option", "error: --opt nope: not an option of scorer clip"),
    ("bad scorer", "error: unknown scorer 'clpi'. Did you mean 'clip'?"),
])
def test_bad_input_exits_2_with_a_message_and_no_traceback(images, tmp_path, case, message):
    paths = {"missing": tmp_path / "gone.png", "text": tmp_path / "notes.png", "truncated": tmp_path / "cut.png"}
    paths["text"].write_text("not an image")
    paths["truncated"].write_bytes(images[0].read_bytes()[:200])
    image = {"missing": paths["missing"], "not an image": paths["text"], "truncated": paths["truncated"]}.get(
        case, images[0])
    extra = {"no texts": [], "bad option": ["--opt", "nope=1"], "bad scorer": ["--scorer", "clpi"]}.get(case, [])
    texts = [] if case == "no texts" else ["-t", "a dog"]
    result = cli.invoke(app, ["score", str(image), *texts, *extra])
    assert result.exit_code == 2, result.output
    assert message.format(**paths) in result.output
    assert "Traceback" not in result.output


def test_the_python_api_raises_harness_errors_before_loading_weights(images, tmp_path, monkeypatch):
    import models.clip

    monkeypatch.setattr(models.clip, "load_open_clip", lambda *a, **k: pytest.fail("weights loaded"))
    with pytest.raises(HarnessError, match="no texts given"):
        scoring.score(images, [])
    with pytest.raises(HarnessError, match="no images given"):
        scoring.score([], TEXTS)
    with pytest.raises(HarnessError, match="text 1 is a int"):
        scoring.score(images, ["a", 3])
    with pytest.raises(MissingDataError, match="image file .*gone.png' not found"):
        scoring.score([images[0], tmp_path / "gone.png"], TEXTS)
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ImageDecodeError, match="bad.jpg"):
        scoring.score(tmp_path / "bad.jpg", TEXTS)
