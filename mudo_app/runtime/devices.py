"""Device and numeric-precision choices, shared by training, prediction, the CLI and the server.

The accepted names are defined once, in :mod:`mudo_app.runtime.choices` (``DEVICES``,
``PRECISIONS``); every option and config field that takes one refers to them.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from mudo_app.errors import InputError
from mudo_app.runtime.choices import DEVICES, PRECISIONS


def resolve_device(name: str, what: str = "config field 'device'") -> torch.device:
    """The device this process computes on.

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


def cpu_has_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX): there bf16 convolutions are ~3.5x faster."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device = torch.device("cpu")) -> str:
    """``auto`` -> ``bf16`` where ``device`` computes bf16 natively (a bf16-capable GPU, or a CPU with
    AVX512-BF16 / AMX), else ``fp32``; ``fp32`` and ``bf16`` are returned as they are."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        native = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_bf16()
        return "bf16" if native else "fp32"
    return precision
