"""Process groups: the same trainer runs single-process or under
``torchrun --nproc_per_node N`` (DDP: gloo on CPU, nccl on GPU, one GPU per process)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Shard:
    """This process's part of a global batch of n samples: the block ``[rank * n / world, (rank + 1) * n / world)``."""

    rank: int = 0
    world: int = 1

    def take(self, n: int) -> slice:
        if n % self.world:
            raise ValueError(f"a global batch of {n} cannot be split over {self.world} processes")
        per = n // self.world
        return slice(self.rank * per, (self.rank + 1) * per)

    def gather(self, local: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's ``local`` along dim 0, in rank order."""
        if self.world == 1:
            return local
        parts = [torch.empty_like(local) for _ in range(self.world)]
        dist.all_gather(parts, local.contiguous())
        return torch.cat(parts)


def launched_by_torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def shard_from_env(device: torch.device = torch.device("cpu")) -> Shard:
    """Join the process group ``torchrun`` describes (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...):
    nccl when training on CUDA, gloo on CPU. Not launched by torchrun: a single process, no group."""
    if not launched_by_torchrun():
        return Shard()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
    return Shard(dist.get_rank(), dist.get_world_size())


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
