"""Device and process-group set-up: the same trainer runs on CPU or GPU, single-process or under
``torchrun --nproc_per_node N`` (DDP: gloo on CPU, nccl on GPU, one GPU per process)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from mudo_app.distill.step import Shard
from mudo_app.errors import InputError
from mudo_app.train.config import DEVICES


def resolve_device(name: str, what: str = "config field 'device'") -> torch.device:
    """The device this process trains on.

    ``cpu``; ``cuda`` (GPU ``LOCAL_RANK`` under ``torchrun``, else GPU 0; made the current device so
    nccl and CUDA allocations go to it); ``auto``: ``cuda`` when PyTorch sees a GPU, else ``cpu``.
    Asking for ``cuda`` without one, or for more processes than visible GPUs, raises :class:`InputError`
    naming ``what`` (the option the name came from).
    """
    if name not in DEVICES:
        raise InputError(f"{what} must be one of {DEVICES}, got {name!r}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise InputError(
            f"{what} is 'cuda' but PyTorch sees no CUDA GPU (torch {torch.__version__}); use 'cpu' or 'auto'"
        )
    local = int(os.environ.get("LOCAL_RANK", "0"))
    visible = torch.cuda.device_count()
    if local >= visible:
        raise InputError(
            f"process with LOCAL_RANK {local} needs GPU {local} but {visible} are visible: "
            f"run torchrun with --nproc_per_node at most {visible}, or device 'cpu'"
        )
    device = torch.device("cuda", local)
    torch.cuda.set_device(device)
    return device


def launched_by_torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def shard_from_env(device: torch.device = torch.device("cpu")) -> Shard:
    """Join the process group ``torchrun`` describes (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...):
    nccl when training on CUDA, gloo on CPU. Not launched by torchrun: a single process, no group."""
    if not launched_by_torchrun():
        return Shard()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend, **kwargs)
    return Shard(dist.get_rank(), dist.get_world_size())


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
