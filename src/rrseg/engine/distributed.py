"""Distributed helpers: torchrun environment, process group, rank-0-only work.

``torchrun --nproc_per_node=N -m rrseg train CFG`` sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR /
MASTER_PORT; multi-node runs add ``--nnodes``, ``--node_rank`` and ``--rdzv_endpoint`` as usual. NCCL is
used on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

from rrseg.errors import RRSegError

__all__ = ["DistInfo", "barrier", "cleanup", "on_main", "pick_device", "setup"]

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(request: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: this process's GPU when there is one, else the CPU; ``cpu`` / ``cuda``: that one."""
    use_cuda = torch.cuda.is_available() if request == "auto" else request.startswith("cuda")
    return torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")


def setup(device: str = "auto") -> DistInfo:
    """Initialise the process group when launched by torchrun; pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local)
    use_cuda = dev.type == "cuda"
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo", rank=rank, world_size=world, timeout=timedelta(minutes=30)
        )
    return DistInfo(rank, world, local, dev)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and return its result on every rank. An RRSegError raised there is raised
    on every rank, so that no rank is left waiting at the next collective while rank 0 stops."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return fn()
    box: list = [(None, None)]
    if dist.get_rank() == 0:
        try:
            box = [(fn(), None)]
        except RRSegError as e:
            box = [(None, e)]
    dist.broadcast_object_list(box, src=0)
    result, error = box[0]
    if error is not None:
        raise error
    return result
