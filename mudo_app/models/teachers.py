"""The two frozen teachers: SAM-Med3D for CT, SegAnyPET for PET, or this project's stand-ins.

Official weights cannot be downloaded on the machines this project is built on, so the default
teachers are small **stand-ins** of the same architecture trained by ``muduo pretrain-teachers`` on
synthetic data (shipped as package data, ``mudo_app/assets/teachers/``; see :mod:`mudo_app.resources`).
Giving the path of an official checkpoint (``sam_med3d_turbo.pth``, ``seganypet_v1.pth``...) replaces a stand-in.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mudo_app.errors import InputError
from mudo_app.io.atomic import atomic_write
from mudo_app.models.loading import load_strict, read_checkpoint, state_dict_from
from mudo_app.models.sam3d import (
    SAM_MED3D_CT,
    SEGANYPET_PET,
    STANDIN_CT,
    STANDIN_PET,
    InputContract,
    Sam3D,
    build_sam3d,
)
from mudo_app.resources import standin_teacher_dir

MODALITIES = {
    "CT": ("sam_med3d_ct", SAM_MED3D_CT, STANDIN_CT, "standin_ct.pt"),
    "PET": ("seganypet_pet", SEGANYPET_PET, STANDIN_PET, "standin_pet.pt"),
}


@dataclass
class Teacher:
    """A frozen 3D SAM with its input contract and where it came from.

    ``one_click_multimask``: the model was trained to answer one click with its multimask candidates
    (a stand-in trained with ``muduo pretrain-teachers --multimask``; official checkpoints answer with
    the single output, as SAM-Med3D's own click inference does): give it to
    :class:`~mudo_app.models.sam3d.Sam3DPredictor`.
    """

    name: str  # "sam_med3d_ct" or "seganypet_pet"
    modality: str
    model: Sam3D
    contract: InputContract
    checkpoint: str
    standin: bool
    one_click_multimask: bool = False

    def describe(self) -> str:
        kind = "STAND-IN (trained on synthetic data by this project)" if self.standin else "official checkpoint"
        return f"{self.name}: {kind}, {self.checkpoint}"


def save_standin(
    path: str | os.PathLike[str], model: Sam3D, config: str, modality: str, provenance: dict[str, Any]
) -> None:
    """Write a stand-in teacher (fp16 weights + what rebuilds it) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "model_state_dict": {
            k: v.detach().half() if v.is_floating_point() else v for k, v in model.state_dict().items()
        },
        "standin": True,
        "architecture": config,
        "modality": modality,
        "provenance": provenance,
    }
    with atomic_write(path) as tmp:
        torch.save(payload, tmp)


def load_teacher(
    modality: str, checkpoint: str | os.PathLike[str] | None = None, device: str | torch.device = "cpu"
) -> Teacher:
    """The frozen teacher for ``modality`` ("CT" or "PET").

    ``checkpoint`` None: the shipped stand-in. A stand-in file (written by ``save_standin``) rebuilds its
    own small architecture; any other file is loaded strictly as the official ``vit_b_ori``.
    """
    modality = modality.upper()
    if modality not in MODALITIES:
        raise InputError(f"teacher modality must be CT or PET, got {modality!r}")
    name, official_contract, standin_contract, default_file = MODALITIES[modality]
    path = Path(checkpoint) if checkpoint is not None else standin_teacher_dir() / default_file
    if not path.is_file():
        hint = " (run `muduo pretrain-teachers` to rebuild the stand-ins)" if checkpoint is None else ""
        raise InputError(f"{modality} teacher checkpoint not found: {path}{hint}")
    ckpt = read_checkpoint(path)  # read once, whichever kind it is
    standin = isinstance(ckpt, dict) and bool(ckpt.get("standin"))
    if standin:
        if ckpt.get("modality") != modality:
            raise InputError(f"{path} is a {ckpt.get('modality')} stand-in, not a {modality} teacher")
        model = build_sam3d(ckpt["architecture"])
        state = {k: v.float() for k, v in state_dict_from(ckpt, f"stand-in {path}").items()}
        contract = standin_contract
    else:
        model = build_sam3d("vit_b_ori")
        state = dict(state_dict_from(ckpt, f"checkpoint {path}"))
        contract = official_contract
    load_strict(model, state, f"checkpoint {path}")
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    multimask = standin and bool(ckpt.get("provenance", {}).get("settings", {}).get("multimask", False))
    return Teacher(name, modality, model, contract, str(path), standin, multimask)
