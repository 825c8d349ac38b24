"""Process-group set-up for ``torchrun``: the same trainer runs single-process or under DDP."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from mudo_app.distill.step import Shard


def shard_from_env() -> Shard:
    """Join the process group ``torchrun`` describes (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...);
    gloo on CPU, nccl when CUDA is available. Without ``WORLD_SIZE`` > 1: a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Shard()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Shard(dist.get_rank(), dist.get_world_size())


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
