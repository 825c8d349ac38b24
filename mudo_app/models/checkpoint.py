"""Student checkpoints that carry what rebuilds them (nnU-Net style): one builder for train and infer.

A checkpoint is a dict saved with ``torch.save`` and read with ``weights_only=True``::

    {"format": "muduo-student/1",
     "architecture": {"name": "unet_small", "kwargs": {...}},   # -> build_student(name, **kwargs)
     "labels": {"background": 0, "liver": 1, ...},              # the label map it predicts
     "preprocessing": {"ct_window": [-1000.0, 1000.0]},         # -> StudentInput(**preprocessing)
     "provenance": {...},                                       # data, seed, iterations, metrics
     "state_dict": {...}}
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mudo_app.errors import InputError
from mudo_app.io.atomic import atomic_write
from mudo_app.labels import label_names
from mudo_app.models.loading import load_strict, read_checkpoint
from mudo_app.models.student import build_student
from mudo_app.transforms.intensity import StudentInput

FORMAT = "muduo-student/1"


def save_student(
    path: str | os.PathLike[str],
    model: torch.nn.Module,
    name: str,
    kwargs: dict[str, Any] | None = None,
    preprocessing: StudentInput | None = None,
    provenance: dict[str, Any] | None = None,
    half: bool = False,
) -> Path:
    """Publish a student checkpoint atomically (temporary file in the same folder, then rename).

    ``half``: floating-point weights stored as fp16 (half the file; :func:`load_student` loads them into
    the fp32 network)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prep = preprocessing or StudentInput()
    payload = {
        "format": FORMAT,
        "architecture": {"name": name, "kwargs": dict(kwargs or {})},
        "labels": label_names(),
        "preprocessing": {"ct_window": [float(v) for v in prep.ct_window]},
        "provenance": dict(provenance or {}),
        "state_dict": {
            k: v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu()
            for k, v in model.state_dict().items()
        },
    }  # loadable anywhere
    with atomic_write(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_student(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, StudentInput, dict[str, Any]]:
    """(model in eval mode, its input normalisation, the checkpoint's metadata); strict, no code execution."""
    path = Path(path)
    ckpt = read_checkpoint(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise InputError(f"{path} is not a MuDuo student checkpoint (format {FORMAT!r} expected)")
    if ckpt.get("labels") != label_names():
        raise InputError(f"{path} predicts another label map: {ckpt.get('labels')}")
    arch = ckpt["architecture"]
    try:
        model = build_student(arch["name"], **arch["kwargs"])
    except (ValueError, TypeError) as exc:
        raise InputError(f"{path}: cannot rebuild architecture {arch}: {exc}") from exc
    load_strict(model, ckpt["state_dict"], f"student checkpoint {path}")
    prep = StudentInput(ct_window=tuple(ckpt["preprocessing"]["ct_window"]))
    meta = {k: ckpt[k] for k in ("architecture", "labels", "preprocessing", "provenance")}
    return model.to(device).eval(), prep, meta


def publish_student(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Replace the served student ``target`` by the checkpoint ``source``, atomically.

    ``source`` is first loaded with the safe, strict loader (:func:`load_student`): a file that is not a
    loadable MuDuo student raises :class:`InputError` and ``target`` is left as it was. Readers of
    ``target`` see the old file or the new one, never a partial copy.
    """
    load_student(source)
    target = Path(target)
    with atomic_write(target) as tmp:
        shutil.copyfile(source, tmp)
    return target


def training_patch(meta: dict[str, Any], default: Sequence[int] = (64, 64, 64)) -> tuple[int, int, int]:
    """The patch size the student was trained on (its provenance), which is also the sliding-window
    size to infer with: instance-normalised networks see other statistics in larger windows."""
    patch = meta.get("provenance", {}).get("config", {}).get("patch")
    i, j, k = (int(p) for p in (patch or default))
    return i, j, k
