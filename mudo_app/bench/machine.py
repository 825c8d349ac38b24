"""A one-line description of the machine a benchmark ran on."""

from __future__ import annotations

import os
import platform

import torch


def describe(device: str = "cpu") -> str:
    threads = torch.get_num_threads()
    text = f"{platform.machine()}, {os.cpu_count()} CPU cores ({threads} torch threads), torch {torch.__version__}"
    if device.startswith("cuda") and torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text
