"""Prompt-free whole-volume prediction with a student: output on exactly the input grid.

Sliding windows with Gaussian blending (MONAI's importance map; the argmax of the weighted sum needs
no normalisation), processed one layer of windows along k at a time: only one layer's depth of
14-channel logits is held, so a whole-body 2 x 400 x 400 x 326 case holds 1.2 GB of logits instead
of the 2.9 GB (plus a count map) a full-volume sliding window takes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from monai.data.utils import compute_importance_map

from mudo_app.io.volume import Volume, ct_on_pet_grid
from mudo_app.runtime.devices import resolve_precision
from mudo_app.transforms.intensity import StudentInput

logger = logging.getLogger(__name__)


def window_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Starts of windows of ``roi`` voxels covering ``size`` with at least ``overlap`` overlap, evenly
    spread, the last flush with the end (one start 0 when the window covers the axis)."""
    if size <= roi:
        return [0]
    step = max(1, int(roi * (1 - overlap)))
    n = int(np.ceil((size - roi) / step)) + 1
    return sorted(set(int(round(v)) for v in np.linspace(0, size - roi, n)))


@torch.no_grad()
def predict_arrays(
    model: torch.nn.Module,
    prep: StudentInput,
    ct: np.ndarray,
    pet: np.ndarray,
    roi: Sequence[int] = (96, 96, 96),
    overlap: float = 0.25,
    precision: str = "fp32",
) -> np.ndarray:
    """Sliding-window argmax label (X, Y, Z) uint8 for CT and PET arrays already on one grid.

    ``precision``: ``fp32``, ``bf16`` (autocast; logits are blended in fp32) or ``auto`` (bf16 where
    the device has native bf16). Windows run on the model's device (CPU or GPU); blending is on the CPU.
    """
    device = next(model.parameters()).device
    bf16 = resolve_precision(precision, device) == "bf16"
    model = model.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]  # 1.7x faster on CPU
    x = torch.from_numpy(prep(ct, pet))
    shape = x.shape[1:]
    pad = [max(0, r - s) for r, s in zip(roi, shape)]
    if any(pad):  # pad at the end (edge values), crop the result back
        x = torch.from_numpy(np.pad(x.numpy(), [(0, 0)] + [(0, p) for p in pad], mode="edge"))
    full = x.shape[1:]
    starts = [window_starts(full[a], roi[a], overlap) for a in range(3)]
    weight = compute_importance_map(tuple(roi), mode="gaussian", sigma_scale=0.125, device="cpu").float()
    weight = weight.clamp(min=1e-3)[..., None]
    out = np.zeros(full, np.uint8)
    # channels-last accumulator (i, j, k, class) over k in [k0, k0 + roi_k): one layer of windows
    acc = None
    for n, k0 in enumerate(starts[2]):
        for i0 in starts[0]:
            for j0 in starts[1]:
                window = x[None, :, i0 : i0 + roi[0], j0 : j0 + roi[1], k0 : k0 + roi[2]].to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    logits = model(window.contiguous(memory_format=torch.channels_last_3d))[0]
                logits = logits.permute(1, 2, 3, 0).cpu()  # a view on CPU: the output is channels-last already
                if acc is None:
                    acc = torch.zeros((*full[:2], roi[2], logits.shape[-1]))
                assert acc is not None
                acc[i0 : i0 + roi[0], j0 : j0 + roi[1]].addcmul_(logits.float(), weight)
        assert acc is not None  # every layer holds at least one window
        nxt = starts[2][n + 1] if n + 1 < len(starts[2]) else k0 + roi[2]
        done = nxt - k0  # layers before the next window layer receive nothing more
        out[..., k0:nxt] = acc[:, :, :done].argmax(-1).numpy()
        rest = roi[2] - done
        acc[:, :, :rest] = acc[:, :, done:].clone()
        acc[:, :, rest:] = 0
    return out[: shape[0], : shape[1], : shape[2]]


def predict_volume(
    model: torch.nn.Module,
    prep: StudentInput,
    ct: Volume,
    pet: Volume,
    roi=(96, 96, 96),
    overlap: float = 0.25,
    precision: str = "fp32",
) -> Volume:
    """Label map (uint8, 0..13) on the PET grid (the case grid) with the PET's affine."""
    original_shape = ct.shape
    ct, moved = ct_on_pet_grid(ct, pet)
    if moved:
        logger.warning(f"CT {original_shape} was not on the PET grid {pet.shape}; resampled the CT onto the PET grid")
    return Volume(predict_arrays(model, prep, ct.array, pet.array, roi, overlap, precision), pet.affine.copy())
