"""Prompt-free whole-volume prediction with a student: output on exactly the input grid."""

from __future__ import annotations

import sys

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from mudo_app.io.volume import Volume, ct_on_pet_grid
from mudo_app.transforms.intensity import StudentInput

@torch.no_grad()
def predict_arrays(model: torch.nn.Module, prep: StudentInput, ct: np.ndarray, pet: np.ndarray,
                   roi=(96, 96, 96), overlap: float = 0.25) -> np.ndarray:
    """Sliding-window argmax label (X, Y, Z) uint8 for CT and PET arrays already on one grid."""
    x = torch.from_numpy(prep(ct, pet))[None]
    logits = sliding_window_inference(x, roi, sw_batch_size=1, predictor=model, overlap=overlap, mode="gaussian")
    return logits.argmax(1)[0].numpy().astype(np.uint8)


def predict_volume(model: torch.nn.Module, prep: StudentInput, ct: Volume, pet: Volume,
                   roi=(96, 96, 96), overlap: float = 0.25) -> Volume:
    """Label map (uint8, 0..13) on the PET grid (the case grid) with the PET's affine."""
    original_shape = ct.shape
    ct, moved = ct_on_pet_grid(ct, pet)
    if moved:
        print(f"warning: CT {original_shape} was not on the PET grid {pet.shape}; resampled the CT onto the PET grid",
              file=sys.stderr)
    return Volume(predict_arrays(model, prep, ct.array, pet.array, roi, overlap), pet.affine.copy())
