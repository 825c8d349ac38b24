"""Process-group set-up for ``torchrun``: the same trainer runs single-process or under DDP."""

from __future__ import annotations

import os

import torch.distributed as dist

from mudo_app.distill.step import Shard


def shard_from_env() -> Shard:
    """Join the process group ``torchrun`` describes (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...).

    The trainer computes on the CPU, so the backend is gloo (nccl needs CUDA tensors; GPU training is
    not implemented yet). Without ``WORLD_SIZE`` > 1: a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Shard()
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return Shard(dist.get_rank(), dist.get_world_size())


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
