"""Data-parallel training with PyTorch's DistributedDataParallel, launched by torchrun.

    torchrun --nproc-per-node 8 -m ldct_bench train --method founddiff --profile paper

Every rank draws the same global batch (the patch sampler's seed is shared) and trains on
its own slice of it; DDP averages the gradients, so one step on N processes is one step on
the global batch in one process. Rank 0 alone validates, logs and writes checkpoints; the
others wait for it at a barrier. Without torchrun (WORLD_SIZE unset) everything here is a no-op.
What a method itself needs under DDP (`bare`, `average_gradients`) is in the method toolkit.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


def from_env() -> World:
    """This process's place in the group torchrun describes in the environment (one process without torchrun)."""
    return World(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
                 int(os.environ.get("LOCAL_RANK", "0")))


def world(device: str = "cpu") -> World:
    """from_env(), with the process group initialised on first use (gloo on CPU, nccl on CUDA)."""
    w = from_env()
    if w.active and not dist.is_initialized():
        if str(device).startswith("cuda"):
            torch.cuda.set_device(w.local_rank)
        dist.init_process_group("nccl" if str(device).startswith("cuda") else "gloo")
    return w


def local_device(spec: str) -> str:
    """Under torchrun each rank takes the GPU of its local rank."""
    w = from_env()
    return f"cuda:{w.local_rank}" if w.active and spec == "cuda" else spec


def shard(batch: dict[str, torch.Tensor], w: World) -> dict[str, torch.Tensor]:
    """This rank's contiguous slice of the global batch."""
    if not w.active:
        return batch
    n = len(next(iter(batch.values())))
    if n % w.size:
        raise ValueError(f"batch size {n} does not split over {w.size} processes; choose a multiple of {w.size}.")
    k = n // w.size
    return {key: v[w.rank * k:(w.rank + 1) * k] for key, v in batch.items()}


@contextmanager
def data_parallel(method, stage: str, w: World):
    """Wrap the networks `method` trains in `stage` in DDP for the duration, then put the bare ones back."""
    if not w.active:
        yield
        return
    names = method.trained_modules(stage)
    bare = {n: getattr(method, n) for n in names}
    ids = [method.device.index] if method.device.type == "cuda" else None
    for n, m in bare.items():
        # buffers are not broadcast: rank 0 validates alone, and a forward pass there must need no partner
        setattr(method, n, DistributedDataParallel(m, device_ids=ids, broadcast_buffers=False,
                                                   find_unused_parameters=True))
    try:
        yield
    finally:
        for n, m in bare.items():
            setattr(method, n, m)


def barrier(w: World) -> None:
    if w.active:
        dist.barrier()


def agree(flag: bool, w: World) -> bool:
    """Rank 0's decision, on every rank (stopping on a time budget must happen everywhere at once)."""
    if not w.active:
        return flag
    t = torch.tensor([int(flag)], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.broadcast(t, 0)
    return bool(t.item())
