"""Torch helpers every plug-in shares: where to run, in which precision, and how to name weights.

``resolve_device`` is the one place a ``--device`` value becomes a torch device, for evaluation
and training alike; under a distributed launch ``auto`` and ``cuda`` mean this rank's own GPU.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import AbstractContextManager, nullcontext

import torch

from harness import distributed
from harness.errors import HarnessError

PRECISIONS = ("auto", "fp32", "fp16", "bf16")


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` = CUDA when available, else the CPU; ``cuda`` under a launcher = cuda:LOCAL_RANK.
    A device torch cannot use here is refused with what to pass instead."""
    if isinstance(device, torch.device):
        device = str(device)
    rank_gpu = distributed.world()[1] > 1 and device in ("auto", "cuda") and torch.cuda.is_available()
    if rank_gpu:
        return torch.device(f"cuda:{os.environ.get('LOCAL_RANK', '0')}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise HarnessError(f"--device {device!r} is not a torch device (try auto, cpu, cuda, cuda:1)") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise HarnessError(f"--device {device!r} asked for CUDA, but torch sees no GPU here; use --device cpu")
    return resolved


def device_description(device: torch.device) -> str:
    """What result rows record: ``cpu``, or ``cuda:<GPU name>``."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return device.type


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype of a precision setting: mixed precision on GPU by default (bf16 where
    supported), full fp32 on the CPU; None means no autocast."""
    if precision not in PRECISIONS:
        raise HarnessError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """torch.autocast for ``dtype``, or nothing when ``dtype`` is None."""
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def precision_label(dtype: torch.dtype | None) -> str:
    """How a fingerprint names the precision: ``fp32``, ``amp-bfloat16``, ``amp-float16``."""
    return str(dtype).replace("torch.", "amp-") if dtype is not None else "fp32"


def weights_hash(module: torch.nn.Module) -> str:
    """A hash of every parameter and buffer (names, dtypes and bytes)."""
    h = hashlib.blake2b(digest_size=12)
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
