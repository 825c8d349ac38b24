"""Prompt-free whole-volume prediction with a student: output on exactly the input grid.

Sliding windows with Gaussian blending (MONAI's importance map; the argmax of the weighted sum needs
no normalisation), processed one layer of windows along k at a time: only one layer's depth of
14-channel logits is held, so a whole-body 2 x 400 x 400 x 326 case holds 0.6 GB of logits instead
of the 2.9 GB (plus a count map) a full-volume sliding window takes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.data.utils import compute_importance_map
from tqdm.auto import tqdm

from mudo_app.errors import InputError
from mudo_app.io.cases import CaseFiles, CaseReader
from mudo_app.io.volume import Volume, ct_on_pet_grid, save_volume
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


BATCH_VOXELS = 4 * 64**3  # windows per forward pass: 4 of 64^3 (20 % faster than one at a time on 2 cores)


def _pad_edge_(x: torch.Tensor, shape: Sequence[int]) -> None:
    """Fill ``x[s_i:, ...]`` etc. beyond ``shape`` with edge values, axis after axis (``np.pad`` mode
    ``edge``); ``x`` is (X, Y, Z, channels) and holds data in ``[:s_i, :s_j, :s_k]``."""
    for axis, size in enumerate(shape):
        if x.shape[axis] > size:
            x.narrow(axis, size, x.shape[axis] - size).copy_(x.narrow(axis, size - 1, 1))


@torch.no_grad()
def predict_arrays(
    model: torch.nn.Module,
    prep: StudentInput,
    ct: np.ndarray,
    pet: np.ndarray,
    roi: Sequence[int] = (96, 96, 96),
    overlap: float = 0.25,
    precision: str = "fp32",
    progress: bool = False,
) -> np.ndarray:
    """Sliding-window argmax label (X, Y, Z) uint8 for CT and PET arrays already on one grid.

    ``ct``, ``pet``: (X, Y, Z) arrays indexed ``[i, j, k]``, any memory order. ``precision``: ``fp32``,
    ``bf16`` (autocast; logits are blended in fp32) or ``auto`` (bf16 where the device has native
    bf16). Windows run on the model's device (CPU or GPU), several per forward pass
    (:data:`BATCH_VOXELS`), and are blended there. ``progress``: a bar over the windows.

    The preprocessed volume is held channels-last, (X, Y, Z, 2), so that a window is already in the
    network's channels-last layout; the accumulator is channels-last too, (X, Y, roi_k, classes),
    which is how the network's output lies in memory.
    """
    device = next(model.parameters()).device
    bf16 = resolve_precision(precision, device) == "bf16"
    model = model.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]  # 1.7x faster on CPU
    shape = tuple(int(s) for s in ct.shape)
    full = tuple(max(s, int(r)) for s, r in zip(shape, roi))  # pad at the end (edge values), crop back
    x = torch.empty((*full, 2))
    prep.tensor(ct, pet, out=x[: shape[0], : shape[1], : shape[2]].permute(3, 0, 1, 2))
    _pad_edge_(x, shape)
    starts = [window_starts(full[a], roi[a], overlap) for a in range(3)]
    weight = compute_importance_map(tuple(roi), mode="gaussian", sigma_scale=0.125, device=device).float()
    weight = weight.clamp(min=1e-3)[..., None]
    batch = max(1, BATCH_VOXELS // int(np.prod(roi)))
    layer = [(i0, j0) for i0 in starts[0] for j0 in starts[1]]
    out = np.zeros(full, np.uint8)
    bar = tqdm(total=len(layer) * len(starts[2]), unit="window", leave=False, disable=not progress)
    # Buffers reused for every batch and layer: fresh ones of this size would be new pages each time.
    acc: torch.Tensor | None = None  # (i, j, k - k0, class) over one layer of windows, k in [k0, k0 + roi_k)
    logits: torch.Tensor | None = None  # (B, i, j, k, class) fp32, one batch of window outputs
    for n, k0 in enumerate(starts[2]):
        for b0 in range(0, len(layer), batch):
            where = layer[b0 : b0 + batch]
            windows = torch.stack([x[i : i + roi[0], j : j + roi[1], k0 : k0 + roi[2]] for i, j in where])
            windows = windows.permute(0, 4, 1, 2, 3).to(device)  # (B, 2, ...) with channels-last strides
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                answer = model(windows).permute(0, 2, 3, 4, 1)  # a view: the output is channels-last
            if logits is None or logits.shape[-1] != answer.shape[-1]:
                logits = torch.empty((batch, *answer.shape[1:]), device=device)
                acc = torch.zeros((*full[:2], roi[2], answer.shape[-1]), device=device)
            assert acc is not None
            logits[: len(where)].copy_(answer)
            for w, (i, j) in enumerate(where):
                acc[i : i + roi[0], j : j + roi[1]].addcmul_(logits[w], weight)
            bar.update(len(where))
        assert acc is not None  # every layer holds at least one window
        nxt = starts[2][n + 1] if n + 1 < len(starts[2]) else k0 + roi[2]
        done = nxt - k0  # layers before the next window layer receive nothing more
        # max's indices: the first maximal class, as argmax, and faster over a short last axis
        out[..., k0:nxt] = acc[:, :, :done].max(-1).indices.to(torch.uint8).cpu().numpy()
        rest = roi[2] - done
        if rest > 0:  # the overlap moves to the front (a copy of its own when source and target overlap)
            tail = acc[:, :, done:]
            acc[:, :, :rest] = tail if done >= rest else tail.clone()
        acc[:, :, rest:] = 0
    bar.close()
    return out[: shape[0], : shape[1], : shape[2]]


def predict_volume(
    model: torch.nn.Module,
    prep: StudentInput,
    ct: Volume,
    pet: Volume,
    roi=(96, 96, 96),
    overlap: float = 0.25,
    precision: str = "fp32",
    progress: bool = False,
) -> Volume:
    """Label map (uint8, 0..13) on the PET grid (the case grid) with the PET's affine."""
    original_shape = ct.shape
    ct, moved = ct_on_pet_grid(ct, pet)
    if moved:
        logger.warning(f"CT {original_shape} was not on the PET grid {pet.shape}; resampled the CT onto the PET grid")
    label = predict_arrays(model, prep, ct.array, pet.array, roi, overlap, precision, progress)
    return Volume(label, pet.affine.copy())


def predict_cases(
    model: torch.nn.Module,
    prep: StudentInput,
    reader: CaseReader,
    output_for: Callable[[CaseFiles], Path],
    roi: Sequence[int],
    overlap: float = 0.25,
    precision: str = "fp32",
    progress: bool = True,
) -> list[tuple[str, str]]:
    """Predict every case ``reader`` yields (read one ahead) and write its label to ``output_for(case)``
    (atomically: a skipped or interrupted case leaves no file). A bad case (unreadable, missing a file)
    is logged and skipped; the others go on. Returns ``[(case id, why skipped)]``."""
    skipped: list[tuple[str, str]] = []
    bar = tqdm(total=len(reader.cases), unit="case", disable=not progress)
    for files, got in reader:
        bar.set_postfix_str(files.case_id)
        if isinstance(got, InputError):
            skipped.append((files.case_id, str(got)))
            logger.warning(f"skipped {got}")
        else:
            ct, pet = got
            label = predict_volume(model, prep, ct, pet, roi, overlap, precision, progress)
            save_volume(label, output_for(files), dtype=np.uint8)
        bar.update(1)
    bar.close()
    return skipped
