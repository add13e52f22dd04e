"""CLIP scorer: cosine similarity of L2-normalised open_clip image and text embeddings.

Models are named the open_clip way: an architecture plus ``--pretrained`` (a tag from the local
cache, or a weights file: .pt, .pth, .bin, .safetensors), ``local-dir:/path`` (a folder with
``open_clip_config.json`` and weights) or ``hf-hub:org/repo`` (from the local Hugging Face
cache; set ``HF_HUB_OFFLINE=1`` to never touch the network).

open_clip only warns when weights trained with QuickGELU are loaded into a GELU architecture (or
the reverse), and the numbers are then silently wrong. This scorer works out which activation the
weights were trained with, builds the model with it, and says so when that differs from the
architecture's default.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from harness.api import Item, Prompts, Scorer, ScorerConfig, Text
from harness.devices import (
    PRECISIONS, autocast, autocast_dtype, device_description, precision_label, resolve_device, weights_hash,
)
from harness.errors import CheckpointMismatchError, HarnessError, MissingWeightsError, UnknownNameError
from harness.options import Bool, Choice, Int, Option
from harness.registry import unknown_name_message
from harness.results import portable_model_name
from models import toy_models

log = logging.getLogger("harness")

WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
LOCAL_DIR = "local-dir:"
HF_HUB = "hf-hub:"


def _is_torchscript_archive(path: Path) -> bool:
    """OpenAI released CLIP as TorchScript archives (code/ and constants.pkl inside the zip)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in z.namelist())


def _known_file_quick_gelu(filename: str) -> bool | None:
    """QuickGELU of a weights file named like one in open_clip's pretrained table (e.g. ViT-B-32.pt)."""
    import open_clip

    for arch, tag in open_clip.list_pretrained():
        cfg = open_clip.get_pretrained_cfg(arch, tag)
        url_name = os.path.basename(cfg.get("url", ""))
        if url_name and url_name == filename:
            return bool(cfg.get("quick_gelu", False))
    return None


def expected_quick_gelu(arch: str, pretrained: str | None) -> tuple[bool | None, str]:
    """(QuickGELU the weights were trained with, or None if unknown; how we know)."""
    import open_clip

    if pretrained is None:
        return None, "no weights"
    path = Path(pretrained).expanduser()
    if path.is_file():
        if _is_torchscript_archive(path):
            return True, f"{path.name} is a TorchScript archive, OpenAI's release format (trained with QuickGELU)"
        known = _known_file_quick_gelu(path.name)
        if known is not None:
            return known, f"{path.name} is named like open_clip's release file of that name"
        return None, f"{path.name} carries no activation information"
    cfg = open_clip.get_pretrained_cfg(arch, pretrained)
    if cfg:
        return bool(cfg.get("quick_gelu", False)), f"open_clip's pretrained table for {arch}/{pretrained}"
    return None, "unknown tag"


class ClipScorer(Scorer):
    """Cosine similarity of normalised open_clip embeddings. Options: ``harness ls clip``.

    Text-query items (SugarCrepe++'s text-only task) get the cosine similarity of the normalised
    text embeddings, from the same text cache."""

    family = "clip"
    default_model = "toy:clip"
    embeds = True  # retrieval ranks by one matrix product of the cached embeddings (embed_images/texts)
    compares_texts = True  # text-query items: cosine of the normalised text embeddings
    OPTIONS = (
        Option("batch_size", Int(1), 64, "images or texts per forward pass"),
        Option("quick_gelu", Bool(), None, "build the model with QuickGELU (true) or GELU (false); default: what "
                                           "the weights were trained with, where that is known"),
        Option("precision", Choice(*PRECISIONS), "auto", "auto (bf16/fp16 autocast on GPU, fp32 on CPU), fp32, "
                                                         "fp16, bf16"),
    )

    def __init__(self, config: ScorerConfig) -> None:
        super().__init__(config)
        self.batch_size = self.options["batch_size"]
        self.device = resolve_device(config.device)
        self.amp_dtype = autocast_dtype(self.device, self.options["precision"])
        self.model, self.preprocess, self.tokenizer, self.quick_gelu, self._weights_label = load_open_clip(
            config.model, config.pretrained, self.options["quick_gelu"]
        )
        self._weights = weights_hash(self.model)
        self._trim = _trimmable(self.model)
        self.model.to(self.device).eval()
        self._image_cache: dict[str, torch.Tensor] = {}
        self._text_cache: dict[str, torch.Tensor] = {}
        self._ensemble_cache: dict[Prompts, torch.Tensor] = {}
        self._matrix_cache: dict[int, tuple[tuple[Text, ...], tuple[torch.Tensor, torch.Tensor]]] = {}

    @classmethod
    def download(cls, spec: str) -> list[str]:
        """``ARCH:TAG`` (open_clip's pretrained table, e.g. ViT-B-32:openai) or ``hf-hub:org/repo``."""
        import open_clip

        from harness import hub

        if spec.startswith(HF_HUB):
            return hub.download_model_repo(spec[len(HF_HUB):])
        arch, _, tag = spec.partition(":")
        cfg = open_clip.get_pretrained_cfg(arch.replace("/", "-"), tag)
        if not cfg:
            tags = open_clip.list_pretrained_tags_by_model(arch.replace("/", "-"))
            raise UnknownNameError(f"no pretrained weights {tag!r} for {arch!r} in open_clip's table; write "
                                   f"clip:ARCH:TAG, with one of {', '.join(tags) or '(no tags for this architecture)'}")
        with hub.online():
            path = open_clip.pretrained.download_pretrained(cfg)
        return [f"{arch} {tag} -> {path}"]

    # -- identity ---------------------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "model": self.config.model,
            "pretrained": self._weights_label,
            "weights": self._weights,
            "quick_gelu": self.quick_gelu,
            "preprocess": _preprocess_cfg(self.model),
            "text_positions": "trimmed" if self._trim else "full",  # equal up to float rounding
            "precision": precision_label(self.amp_dtype),
        }

    def describe(self) -> dict[str, str]:
        return {"model": portable_model_name(self.config.model, self._weights),
                "pretrained": portable_model_name(self._weights_label, self._weights) if self._weights_label else ""}

    @property
    def device_name(self) -> str:
        return device_description(self.device)

    # -- encoding ---------------------------------------------------------------------------
    def _autocast(self):
        return autocast(self.device, self.amp_dtype)

    def image_transform(self) -> Callable[[Any], torch.Tensor]:
        return self.preprocess

    def add_images(self, refs: Sequence[str], pixels: torch.Tensor) -> None:
        with torch.inference_mode(), self._autocast():
            features = self.model.encode_image(pixels.to(self.device, non_blocking=True))
        features = F.normalize(features.float(), dim=-1).cpu()
        for ref, f in zip(refs, features):
            self._image_cache[ref] = f

    def has_image(self, ref: str) -> bool:
        return ref in self._image_cache

    def clear_images(self) -> None:
        self._image_cache.clear()

    def encode_texts(self, texts: Sequence[str]) -> None:
        """Encode the texts not yet cached, in batches of ``batch_size``.

        Where the text tower allows it (see ``_trimmable``), texts are batched by token length and
        each batch is cut after its longest text: a caption of 12 tokens then costs 12 positions
        instead of the 77 of the context, with the same embedding.
        """
        new = list(dict.fromkeys(t for t in texts if t not in self._text_cache))
        if not new:
            return
        tokens = self.tokenizer(new)
        if self._trim:
            order = torch.argsort(_last_token_position(self.model, tokens), stable=True).tolist()
            new, tokens = [new[i] for i in order], tokens[order]
        for start in range(0, len(new), self.batch_size):
            batch = tokens[start:start + self.batch_size].to(self.device)
            with torch.inference_mode(), self._autocast():
                features = _encode_text_trimmed(self.model, batch) if self._trim else self.model.encode_text(batch)
            features = F.normalize(features.float(), dim=-1).cpu()
            for text, f in zip(new[start:start + self.batch_size], features):
                self._text_cache[text] = f

    def _embedding(self, text: Text) -> torch.Tensor:
        if isinstance(text, str):
            return self._text_cache[text]
        if text not in self._ensemble_cache:
            # the CLIP zero-shot protocol: normalised mean of normalised prompt embeddings
            mean = torch.stack([self._text_cache[t] for t in text.texts]).mean(dim=0)
            self._ensemble_cache[text] = F.normalize(mean, dim=-1)
        return self._ensemble_cache[text]

    def _text_matrix(self, texts: tuple[Text, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """The embeddings of an item's distinct candidates, and for each candidate the row of its
        embedding. Kept per tuple object when it is large and shared (a zero-shot classifier),
        rebuilt otherwise (a pair of captions is cheap to stack)."""
        if len(texts) > 16:
            cached = self._matrix_cache.get(id(texts))
            if cached is not None and cached[0] is texts:
                return cached[1]
        distinct = list(dict.fromkeys(texts))
        where = {t: k for k, t in enumerate(distinct)}
        built = (torch.stack([self._embedding(t) for t in distinct]), torch.tensor([where[t] for t in texts]))
        if len(texts) > 16:
            self._matrix_cache[id(texts)] = (texts, built)
        return built

    def score(self, items: Sequence[Item]) -> list[np.ndarray]:
        seen: set[int] = set()
        strings: list[str] = []
        for item in items:
            if id(item.texts) in seen:
                continue
            seen.add(id(item.texts))
            for t in item.texts:
                strings.extend([t] if isinstance(t, str) else t.texts)
        strings.extend(q for item in items for q in item.query_texts)
        self.encode_texts(strings)
        out = []
        for item in items:
            if item.query_texts:  # text-to-text: the rows are the query texts' embeddings
                rows = torch.stack([self._text_cache[q] for q in item.query_texts])
            else:
                rows = torch.stack([self._image_cache[r] for r in item.images])
            # each distinct text is scored once and its column copied: identical candidates get
            # bit-identical scores, so a duplicate of the right caption always ties (and counts as wrong)
            distinct, column = self._text_matrix(item.texts)
            out.append((rows @ distinct.T)[:, column].numpy())
        return out

    # -- embeddings (the dual-encoder capability of the Scorer contract) ---------------------------
    def embed_images(self, refs: Sequence[str]) -> np.ndarray:
        """The cached normalised embeddings of images already added, in the order of ``refs``."""
        return torch.stack([self._image_cache[r] for r in refs]).numpy()

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Normalised text embeddings, encoded once and cached like ``score``'s."""
        self.encode_texts(texts)
        return torch.stack([self._text_cache[t] for t in texts]).numpy()


def _trimmable(model: torch.nn.Module) -> bool:
    """True for open_clip's CLIP class with a causal text mask, pooled at the end-of-text token:
    then the pooled embedding depends only on the tokens up to that one, and the padding after it
    can be cut. Other text towers (Hugging Face ones, SigLIP's) are run as open_clip runs them."""
    import open_clip

    if type(model) is not open_clip.CLIP or model.text_pool_type not in ("argmax", "eos"):
        return False
    mask = model.attn_mask
    if mask is None or mask.shape != (model.context_length, model.context_length):
        return False
    upper = torch.triu(torch.ones_like(mask, dtype=torch.bool), diagonal=1)
    return bool(torch.isneginf(mask[upper]).all() and (mask[~upper] == 0).all())


def _last_token_position(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Per text, the position of the token the text tower pools (its end-of-text token)."""
    if model.text_pool_type == "eos":
        return (tokens == model.text_eos_id).int().argmax(dim=-1)
    return tokens.argmax(dim=-1)  # the end-of-text token has the highest id


def _encode_text_trimmed(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """open_clip's CLIP.encode_text on the positions up to the batch's last pooled token."""
    from open_clip.transformer import text_global_pool

    length = int(_last_token_position(model, tokens).max()) + 1
    tokens = tokens[:, :length]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype) + model.positional_embedding[:length].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = text_global_pool(model.ln_final(x), tokens, model.text_pool_type, eos_token_id=model.text_eos_id)
    if model.text_projection is None:
        return x
    return model.text_projection(x) if isinstance(model.text_projection, torch.nn.Linear) else x @ model.text_projection


def _preprocess_cfg(model: torch.nn.Module) -> dict[str, Any]:
    """Image size, mean/std, interpolation and resize mode: they change scores as much as weights do."""
    import open_clip

    cfg = open_clip.get_model_preprocess_cfg(model)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(cfg.items())}


def load_open_clip(
    model: str, pretrained: str | None, quick_gelu: bool | None = None
) -> tuple[torch.nn.Module, Callable, Callable, bool, str]:
    """Load an open_clip model on the CPU: (model, eval transform, tokenizer, quick_gelu, weights label).

    ``quick_gelu`` None means: use what the weights were trained with, when that is known.
    """
    import open_clip

    if toy_models.is_toy(model):
        model = LOCAL_DIR + str(toy_models.toy_folder(model))
    elif not model.startswith((LOCAL_DIR, HF_HUB)) and Path(model).expanduser().is_dir():
        # a plain folder: accept it when it is an open_clip model folder, rather than reading it as
        # an architecture name
        folder = Path(model).expanduser()
        if not (folder / "open_clip_config.json").is_file():
            raise MissingWeightsError(
                f"--model {model} is a folder, but not an open_clip model folder: it has no open_clip_config.json. "
                "Pass an architecture name (ViT-B-32) with --pretrained, local-dir:/path for a folder with "
                "open_clip_config.json and weights, or hf-hub:org/repo.")
        model = LOCAL_DIR + str(folder)
    if model.startswith((LOCAL_DIR, HF_HUB)):
        if pretrained:
            raise HarnessError(
                f"--pretrained {pretrained!r} cannot be combined with --model {model!r}: "
                "a local-dir:/hf-hub: model carries its own weights. Drop --pretrained."
            )
        if model.startswith(LOCAL_DIR):
            folder = Path(model[len(LOCAL_DIR):]).expanduser().resolve()
            _check_local_dir(folder)
            model = LOCAL_DIR + str(folder)
        # the folder's or repo's own config says which activation its weights use
        kwargs: dict[str, Any] = {} if quick_gelu is None else {"quick_gelu": quick_gelu}
        created = _create(model, None, kwargs, model)
        label = ""
        actual = _model_quick_gelu(created[0])
    else:
        arch = model.replace("/", "-")
        available = open_clip.list_models()
        if arch not in available:
            raise UnknownNameError(
                unknown_name_message("open_clip architecture", arch, _closest(arch, available))
                + " (open_clip.list_models() lists all; or use local-dir:/path or hf-hub:org/repo)"
            )
        if not pretrained:
            tags = open_clip.list_pretrained_tags_by_model(arch)
            raise HarnessError(
                f"--pretrained is required with --model {arch}: a tag ({', '.join(tags) or 'none known'}) "
                "or a weights file (.pt, .pth, .bin, .safetensors). Random weights are not evaluated."
            )
        pretrained = _resolve_pretrained(arch, pretrained)
        trained, how = expected_quick_gelu(arch, pretrained)
        arch_default = bool(open_clip.get_model_config(arch).get("quick_gelu", False))
        actual = arch_default
        if quick_gelu is not None:
            actual = quick_gelu
            if trained is not None and trained != quick_gelu:
                log.warning("quick_gelu=%s as you set, although %s says the weights were trained with "
                            "quick_gelu=%s", quick_gelu, how, trained)
        elif trained is not None and trained != arch_default:
            actual = trained
            log.warning(
                "QuickGELU fixed: %s uses %s by default, but the weights were trained with %s (%s); "
                "building the model with %s. Say --opt quick_gelu=%s to override.",
                arch, _act(arch_default), _act(trained), how, _act(trained), str(arch_default).lower(),
            )
        created = _create(arch, pretrained, {"quick_gelu": actual}, f"{arch} with {pretrained}")
        label = pretrained
    net, preprocess, tokenizer = created
    return net, preprocess, tokenizer, actual, label


def _act(quick: bool) -> str:
    return "QuickGELU" if quick else "GELU"


def _closest(name: str, options: list[str]) -> list[str]:
    import difflib

    return difflib.get_close_matches(name, options, n=8, cutoff=0.3) or options[:8]


def _model_quick_gelu(net: torch.nn.Module) -> bool:
    from open_clip.transformer import QuickGELU

    return any(isinstance(m, QuickGELU) for m in net.modules())


def _check_local_dir(folder: Path) -> None:
    if not folder.is_dir():
        raise MissingWeightsError(f"model folder {folder} does not exist (from --model local-dir:{folder})")
    if not (folder / "open_clip_config.json").is_file():
        raise MissingWeightsError(
            f"{folder} has no open_clip_config.json; a local-dir: model needs it beside its weights "
            "(open_clip writes both with open_clip.push_to_hf_hub's save helpers, and `harness finetune` too)"
        )
    if not any(p.suffix in WEIGHT_SUFFIXES for p in folder.iterdir()):
        raise MissingWeightsError(
            f"{folder} has open_clip_config.json but no weights file ({', '.join(WEIGHT_SUFFIXES)}); "
            "open_clip would silently use random weights, so this is refused"
        )


def _resolve_pretrained(arch: str, pretrained: str) -> str:
    """A known tag stays a tag; anything else must be an existing weights file."""
    import open_clip

    if open_clip.get_pretrained_cfg(arch, pretrained):
        return pretrained
    path = Path(pretrained).expanduser()
    if path.is_file():
        if path.suffix not in WEIGHT_SUFFIXES:
            raise HarnessError(f"--pretrained {path} has suffix {path.suffix!r}; expected one of {WEIGHT_SUFFIXES}")
        return str(path.resolve())
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if os.sep in pretrained or path.suffix in WEIGHT_SUFFIXES:
        raise MissingWeightsError(f"--pretrained file {path} does not exist")
    raise UnknownNameError(unknown_name_message(f"pretrained tag for {arch}", pretrained, tags)
                           + " Or pass a weights file path.")


def _cache_hint(arch: str | None, pretrained: str | None, model: str) -> str:
    """Where open_clip looks for weights of a tag or hub repo, for error messages."""
    import open_clip
    from huggingface_hub import constants

    hub = constants.HF_HUB_CACHE
    if model.startswith(HF_HUB):
        repo = model[len(HF_HUB):]
        return (f"looked for hub repo {repo} in the Hugging Face cache {hub} (HF_HUB_CACHE). Download it once "
                f"where there is network (`huggingface-cli download {repo}`), or copy the folder and use "
                "--model local-dir:/path")
    cfg = open_clip.get_pretrained_cfg(arch, pretrained) if arch and pretrained else {}
    where = []
    if cfg.get("hf_hub"):
        where.append(f"hub repo {os.path.split(cfg['hf_hub'])[0]} in {hub}")
    if cfg.get("url"):
        where.append(f"{os.path.expanduser('~/.cache/clip')}/{os.path.basename(cfg['url'])}")
    return (f"looked for {arch}/{pretrained} weights at: {'; '.join(where) or 'nowhere known'}. Cache them once where "
            f"there is network (python -c \"import open_clip; open_clip.create_model('{arch}', "
            f"pretrained='{pretrained}')\"), or pass a file: --pretrained /path/to/weights.safetensors")


def _create(name: str, pretrained: str | None, kwargs: dict[str, Any], what: str):
    import open_clip

    try:
        with warnings.catch_warnings():
            # We check the activation ourselves (see load_open_clip); open_clip's check runs
            # before our override and would warn about a mismatch that no longer exists.
            warnings.filterwarnings("ignore", message="QuickGELU mismatch")
            net, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained, device="cpu",
                                                                       **kwargs)
            tokenizer = open_clip.get_tokenizer(name)
    except pickle.UnpicklingError as err:
        # torch.load(weights_only=True) refused a pickle that asks for more than tensors: never
        # load such a file (it could run code); say which file and why
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointMismatchError(
            f"refused to load {pretrained or name}: it is not a plain weights file (torch's safe loader says: "
            f"{first[:200]}). A pickle that needs more than tensors can run code while it loads. Use the "
            "official weights, or convert trusted weights to .safetensors.") from None
    except (RuntimeError, AssertionError, KeyError) as err:
        # open_clip reports a checkpoint that does not fit as a load_state_dict RuntimeError, or as
        # an AssertionError/KeyError from its position-embedding resizing; a failed download as a
        # RuntimeError that says so.
        text = str(err) or type(err).__name__
        download = isinstance(err, RuntimeError) and ("download" in text.lower() or "hub" in text.lower())
        if download:
            arch = None if name.startswith((LOCAL_DIR, HF_HUB)) else name
            raise MissingWeightsError(f"cannot load {what} offline: {_cache_hint(arch, pretrained, name)}") from err
        if isinstance(err, RuntimeError) and not ("state_dict" in text or "size mismatch" in text):
            raise
        lines = [line.strip() for line in text.splitlines() if line.strip()][:6]
        raise CheckpointMismatchError(
            f"the weights do not fit {what}: " + " | ".join(lines)
            + " ... Pass the architecture these weights were trained with (--model), or the right file."
        ) from err
    except (OSError, ValueError) as err:
        arch = None if name.startswith((LOCAL_DIR, HF_HUB)) else name
        if name.startswith(HF_HUB) or (pretrained and not Path(pretrained).is_file()):
            raise MissingWeightsError(f"cannot load {what} offline: {_cache_hint(arch, pretrained, name)}") from err
        raise HarnessError(f"cannot load {what}: {type(err).__name__}: {err}") from err
    return net, preprocess, tokenizer


def save_local_dir(folder: Path, model: torch.nn.Module, model_cfg: dict[str, Any], half: bool = False) -> Path:
    """Write an open_clip ``local-dir:`` folder: ``open_clip_config.json`` (the model config and the
    model's preprocessing) and ``open_clip_model.safetensors`` (fp16 when ``half``). Each file is
    replaced atomically, so a crash never leaves a half-written model."""
    import open_clip
    from safetensors.torch import save_file

    from harness.files import atomic_write, atomic_write_text

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    atomic_write(folder / "open_clip_model.safetensors", lambda path: save_file(state, str(path)))
    preprocess = {k: list(v) if isinstance(v, tuple) else v
                  for k, v in open_clip.get_model_preprocess_cfg(model).items()}
    atomic_write_text(folder / "open_clip_config.json",
                      json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess}, indent=2) + "\n")
    return folder
