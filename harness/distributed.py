"""Several processes, one result: the little the runner needs from torch.distributed.

`torchrun --nproc_per_node N -m harness run ...` and `accelerate launch -m harness run ...` both
start N copies with RANK, WORLD_SIZE, LOCAL_RANK and MASTER_ADDR/PORT in the environment. Each
copy scores its share of the items into the common score store; rank 0 then computes the metrics
from the store and writes the result rows. A single process needs none of this.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size): (0, 1) outside a distributed launch."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env(device: str) -> tuple[int, int]:
    """Join the process group a launcher described in the environment, if any.

    NCCL when this rank will use a GPU, gloo otherwise (CPU processes, as in the tests).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return world()
    if not dist.is_initialized():
        gpu = torch.cuda.is_available() and not device.startswith("cpu")
        if gpu:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if gpu else "gloo")
    return world()


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def broadcast(value: Any) -> Any:
    """Rank 0's value, on every rank."""
    if world()[1] == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
