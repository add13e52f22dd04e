"""Score your own pairs: images x texts -> a matrix, for any registered scorer (``harness score``,
``from harness import score``).

The shape of the call follows t2v_metrics (github.com/linzhiqiu/t2v_metrics, ``t2v_metrics/score.py``,
``Score.forward``): images and texts may each be one value or a list, and the result holds
``scores[i][j]`` for image i and text j. Here the scorer is any plug-in, built with the same
names and options as ``harness run``, and the pairs go through the scorer contract like a
benchmark item: every image passes ``image_transform`` and ``add_images``, then all of them and
all texts form one Item for ``score``. (So the diffusion scorer, as on a Winoground item,
subtracts each image's empty-prompt error when there are several images; ``uncond=off`` keeps
raw errors.)

Built scorers are kept in a small cache keyed by the scorer's name and resolved configuration,
so repeated calls in a notebook load the weights once; ``clear_cache()`` frees them.

Importing this module is cheap: numpy, torch and the plug-ins load on the first call.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from harness.errors import HarnessError, ImageDecodeError, MissingDataError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from harness.api import Scorer

ImageInput = Union[str, os.PathLike, "Image.Image"]

CACHE_SIZE = 2  # built scorers kept at once: each holds a model's weights (on the GPU, perhaps)
_cache: OrderedDict[str, Scorer] = OrderedDict()


def clear_cache() -> None:
    """Forget every built scorer (frees their weights once nothing else holds them)."""
    _cache.clear()


def get_scorer(
    scorer: str = "clip",
    model: str | None = None,
    pretrained: str | None = None,
    device: str = "auto",
    seed: int = 0,
    options: dict[str, Any] | None = None,
) -> Scorer:
    """A registered scorer built as ``harness run`` builds it (no ``model``: the scorer's
    ``default_model``), or the same object again when the name and resolved configuration match
    an earlier call. Options are validated before anything loads."""
    from harness import hub
    from harness.api import ScorerConfig
    from harness.devices import resolve_device
    from harness.registry import SCORERS

    scorer_cls = SCORERS.get(scorer)
    resolved = scorer_cls.resolve_options(options)
    if model is None:
        model = scorer_cls.default_model
        if model is None:
            raise HarnessError(f"scorer {scorer!r} has no default model; pass --model")
    config = ScorerConfig(model=model, pretrained=pretrained, device=str(resolve_device(device)), seed=seed,
                          options=resolved)
    key = json.dumps([scorer, model, pretrained, config.device, seed, resolved], sort_keys=True, default=str)
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key]
    with hub.local_only():  # weights come from local files and caches only, as in a run
        built = scorer_cls(config)
    _cache[key] = built
    while len(_cache) > CACHE_SIZE:
        _cache.popitem(last=False)
    return built


def score_pairs(scorer: Scorer, images: Sequence[ImageInput], texts: Sequence[str], workers: int = 0) -> np.ndarray:
    """The len(images) x len(texts) matrix of a built scorer, through the scorer contract."""
    from harness.api import Item
    from harness.images import stream_images
    from harness.runner import _check_scores

    images, texts = check_inputs(images, texts)
    refs = [str(k) for k in range(len(images))]
    shown = [_show(image) for image in images]
    # truth is required by Item but unused here: no metric is computed
    item = Item(id="pairs", images=tuple(refs), texts=tuple(texts), truth=(0,) * len(refs))
    scorer.prepare("matrix")  # every pair is wanted, not only each image's best text
    scorer.clear_images()
    stream = stream_images(refs, _Loader(images), scorer.image_transform(), scorer.image_batch_size, workers,
                           describe_ref=lambda ref: repr(shown[int(ref)]), on_error="Nothing was scored.")
    try:
        for batch in stream:
            scorer.add_images(*batch)
        matrices = scorer.score([item])
        _check_scores([item], matrices, scorer)
    finally:
        stream.close()
        scorer.clear_images()  # refs are per call: the next call's "0" is another image
    return matrices[0]


class _Loader:
    """Ref (the image's position) -> RGB image; a plain object, so worker processes can take it."""

    def __init__(self, images: Sequence[ImageInput]) -> None:
        self.images = list(images)

    def __call__(self, ref: str) -> Image.Image:
        from harness.images import decode_image

        image = self.images[int(ref)]
        if not isinstance(image, (str, os.PathLike)):
            return image.convert("RGB")
        return decode_image(Path(image).expanduser(), str(image)).convert("RGB")


def score(
    images: ImageInput | Sequence[ImageInput],
    texts: str | Sequence[str],
    scorer: str = "clip",
    model: str | None = None,
    pretrained: str | None = None,
    device: str = "auto",
    seed: int = 0,
    options: dict[str, Any] | None = None,
    workers: int = 0,
) -> np.ndarray:
    """Score every image against every text: an images x texts numpy array (higher = better match).

    ``images``: paths or PIL images (or one of them); ``texts``: strings (or one). ``scorer``,
    ``model``, ``pretrained``, ``device``, ``seed`` and ``options`` (the scorer's declared options,
    e.g. ``{"batch_size": 32}``) mean what they mean for ``harness run``; without ``model`` the
    scorer's own default is used (the toy models for the built-in scorers). The scorer is built
    on the first call and kept for later calls with the same configuration.

    >>> from harness import score
    >>> score(["dog.jpg", "cat.jpg"], ["a dog", "a cat"])          # doctest: +SKIP
    array([[0.29, 0.21], [0.20, 0.30]], dtype=float32)
    """
    images, texts = check_inputs(images, texts)  # before any weights load
    built = get_scorer(scorer, model=model, pretrained=pretrained, device=device, seed=seed, options=options)
    return score_pairs(built, images, texts, workers=workers)


def check_inputs(images: Any, texts: Any) -> tuple[list[Any], list[str]]:
    """Lists of images and texts, refused with a message when empty, of the wrong type, or naming
    a file that is not there."""
    from PIL import Image

    if isinstance(images, (str, os.PathLike, Image.Image)):
        images = [images]
    if isinstance(texts, str):
        texts = [texts]
    images, texts = list(images), list(texts)
    if not images:
        raise HarnessError("no images given: pass at least one image path (or PIL image)")
    if not texts:
        raise HarnessError("no texts given: pass at least one text (harness score IMAGE -t TEXT)")
    for k, text in enumerate(texts):
        if not isinstance(text, str):
            raise HarnessError(f"text {k} is a {type(text).__name__}, not a string: {text!r}")
    for k, image in enumerate(images):
        if isinstance(image, Image.Image):
            continue
        if not isinstance(image, (str, os.PathLike)):
            raise HarnessError(f"image {k} is a {type(image).__name__}; pass a file path or a PIL image")
        path = Path(image).expanduser()
        if not path.is_file():
            where = "is a folder, not an image file" if path.is_dir() else "not found"
            raise MissingDataError(f"image file {str(image)!r} {where} (looked at {path.resolve()})")
        _check_readable(path, str(image))
    return images, texts


def _check_readable(path: Path, shown: str) -> None:
    """Refuse a file that is not an image before any weights load. This reads the header and, for
    formats that have them, checks the checksums; a file damaged further in fails when it is
    decoded for scoring, with the same kind of message."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.verify()
    except Exception as err:
        raise ImageDecodeError(f"cannot decode image {shown!r}: {type(err).__name__}: {err}. Nothing was "
                               "scored.") from None


def _show(image: Any) -> str:
    if isinstance(image, (str, os.PathLike)):
        return str(image)
    return f"<PIL image {image.size[0]}x{image.size[1]} {image.mode}>"


def image_labels(images: Sequence[ImageInput]) -> list[str]:
    """How a table or JSON output names each image: its path as given, or a PIL image's size."""
    return [_show(image) for image in images]
