"""Safe, strict checkpoint reading shared by every model (3D SAM teachers, students).

Files are read with ``torch.load(weights_only=True)`` and an allow-list of what official training
checkpoints hold besides tensors; a file that would need code execution to unpickle is refused.
"""

from __future__ import annotations

import argparse
import collections
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from mudo_app.errors import InputError

# What an official training checkpoint may hold besides tensors (SAM-Med3D saves argparse args,
# optimiser state, loss lists...). Nothing else is ever unpickled.
_SAFE_GLOBALS = [
    argparse.Namespace,
    collections.OrderedDict,
    np.dtype,
    np.ndarray,
    np.core.multiarray._reconstruct,  # type: ignore[attr-defined]
    np.core.multiarray.scalar,  # type: ignore[attr-defined]
]
_SAFE_GLOBALS += [type(np.dtype(t)) for t in (np.float32, np.float64, np.int64, np.int32, np.bool_)]


def read_checkpoint(path: str | os.PathLike[str]) -> Any:
    """The object saved in ``path``; :class:`InputError` for a missing, truncated or unsafe file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"checkpoint {path} cannot be loaded safely (truncated, not a PyTorch file, or it "
            f"needs code execution to unpickle): {first}"
        ) from exc


def state_dict_from(obj: Any, source: str) -> Mapping[str, torch.Tensor]:
    """A bare state dict, or the one a training checkpoint holds under ``model_state_dict``."""
    if isinstance(obj, Mapping) and "model_state_dict" in obj:
        obj = obj["model_state_dict"]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(f"{source} holds no state dict (a mapping of names to tensors), got {type(obj).__name__}")
    return obj


def read_state_dict(path: str | os.PathLike[str]) -> Mapping[str, torch.Tensor]:
    """Read a bare state dict or a training checkpoint holding one under ``model_state_dict``."""
    return state_dict_from(read_checkpoint(path), f"checkpoint {path}")


def load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load ``state`` into ``model`` strictly; a mismatch names missing, unexpected and mis-shaped keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    misshaped = sorted(
        f"{k}: {tuple(state[k].shape)} != {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(state[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or misshaped:

        def _fmt(name: str, items: list[str]) -> str:
            return f"{len(items)} {name} ({', '.join(items[:5])}{', ...' if len(items) > 5 else ''})" if items else ""

        parts = [
            p for p in (_fmt("missing", missing), _fmt("unexpected", unexpected), _fmt("mis-shaped", misshaped)) if p
        ]
        raise InputError(f"{source} does not fit this architecture: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)
