"""Prompt-free whole-volume prediction with a student: output on exactly the input grid.

Sliding windows with Gaussian blending: every voxel gets the weighted mean of the windows covering
it (:func:`axis_weights`, the product of per-axis Gaussians normalised over the windows, so no
normalisation pass). For a student that ends in a transposed convolution the windows blend the
features before it, on its half-resolution grid, and that layer (the head, ~half of the network's
cost when run per window) runs once over the volume. Windows are processed one layer along k at a
time: a whole-body 2 x 400 x 400 x 326 case holds 0.2 GB of blended features instead of the 2.9 GB
of logits (plus a count map) a full-volume sliding window takes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mudo_app.errors import InputError
from mudo_app.io.cases import CaseFiles, CaseReader
from mudo_app.io.volume import Volume, ct_on_pet_grid, save_volume
from mudo_app.models.student import split_head
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


def _along_k(head: torch.nn.ConvTranspose3d | None) -> tuple[int, int, int]:
    """The head's stride, kernel size and padding along k; (1, 1, 0) without a head."""
    if head is None:
        return 1, 1, 0
    assert not isinstance(head.padding, str)
    return int(head.stride[2]), int(head.kernel_size[2]), int(head.padding[2])


def _inputs_of(o: int, head: torch.nn.ConvTranspose3d | None) -> tuple[int, int]:
    """First and last feature index along k (unclipped) that output index ``o`` receives: a transposed
    convolution of stride s, kernel n and padding p writes feature i to outputs ``s * i - p + t``, t in
    [0, n). Without a head the output is the feature itself."""
    s, n, p = _along_k(head)
    return -(-(o + p - n + 1) // s), (o + p) // s


HEAD_SLICES = 48  # output slices along k per head call, (X, Y, 48, classes) logits at a time: one call
# per layer of 64^3 windows at 0.25 overlap; a thinner band costs more per slice (2x at 8 slices)


def axis_weights(size: int, starts: Sequence[int], n: int, sigma_scale: float = 0.125) -> torch.Tensor:
    """Gaussian blending weights of windows of ``n`` voxels at ``starts`` along an axis of ``size``:
    (len(starts), n), each window's Gaussian (sigma ``sigma_scale * n``, centred) divided by the sum
    over the windows that cover the voxel, so that at every voxel of the axis they sum to 1.

    Windows lie on a grid (every start along one axis with every start along the others), so the
    products of these per-axis weights, ``w_i[x] * w_j[y] * w_k[z]``, also sum to 1 at every voxel: the
    blend is a weighted mean with no normalisation pass (MONAI's Gaussian importance map is the same
    product of 1-D Gaussians, applied unnormalised).
    """
    t = torch.arange(n, dtype=torch.float64) - (n - 1) / 2
    gauss = torch.exp(-0.5 * (t / (sigma_scale * n)) ** 2)
    total = torch.zeros(size, dtype=torch.float64)
    for s in starts:
        total[s : s + n] += gauss
    return torch.stack([gauss / total[s : s + n] for s in starts]).float()


class _Blend:
    """Weighted mean of window outputs over a band of slices along k, on the features' grid.

    ``acc`` (x, y, k - base, channel) holds k in [base, base + depth). Buffers are allocated once and
    reused: fresh ones of this size would be new pages for every layer of windows.
    """

    def __init__(
        self,
        head: torch.nn.ConvTranspose3d | None,
        grid: Sequence[int],
        depth: int,
        channels: int,
        device: torch.device,
        bf16: bool,
    ):
        self.head, self.grid, self.base, self.bf16 = head, grid, 0, bf16
        self.acc = torch.zeros((*grid[:2], depth, channels), device=device)
        # the head's input band, in its compute dtype (an autocast cast of a channels-last input costs
        # more than this copy); flat, so that a band of any depth is contiguous
        dtype = torch.bfloat16 if bf16 else torch.float32
        self.band = torch.empty(self.acc.numel() if head is not None else 0, dtype=dtype, device=device)

    def add(self, feats: torch.Tensor, i: int, j: int, k: int, weight: torch.Tensor) -> None:
        """Add ``feats * weight`` (x, y, k, channel) for a window starting at feature voxel (i, j, k)."""
        k -= self.base
        assert 0 <= k and k + feats.shape[2] <= self.acc.shape[2], "window outside the band"
        self.acc[i : i + feats.shape[0], j : j + feats.shape[1], k : k + feats.shape[2]].addcmul_(feats, weight)

    def labels(self, o0: int, o1: int, size: Sequence[int]) -> torch.Tensor:
        """Argmax labels (X, Y, o1 - o0) uint8 of output slices [o0, o1), whose features are all final."""
        lo = max(0, _inputs_of(o0, self.head)[0])
        hi = min(self.grid[2] - 1, _inputs_of(o1 - 1, self.head)[1])
        if self.head is None:
            logits = self.acc[:, :, lo - self.base : hi - self.base + 1]
        else:
            shape = (*self.grid[:2], hi - lo + 1, self.acc.shape[3])
            feats = self.band[: int(np.prod(shape))].view(shape)
            feats.copy_(self.acc[:, :, lo - self.base : hi - self.base + 1])
            feats = feats.permute(3, 0, 1, 2)[None]  # (1, channel, x, y, k), channels-last
            with torch.autocast(feats.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                logits = self.head(feats)[0].permute(1, 2, 3, 0)  # output index o lies at o - s * lo
            s = _along_k(self.head)[0]
            logits = logits[: size[0], : size[1], o0 - s * lo : o1 - s * lo]
        # max's indices: the first maximal class, as argmax, and faster over a short last axis
        return logits.max(-1).indices.to(torch.uint8)

    def drop_before(self, k: int) -> None:
        """Forget slices before k: the kept ones move to the front (a copy when the two overlap)."""
        shift, depth = k - self.base, self.acc.shape[2]
        if shift <= 0:
            return
        if shift >= depth:
            self.acc.zero_()
        else:
            rest = depth - shift
            tail = self.acc[:, :, shift:]
            self.acc[:, :, :rest] = tail if shift >= rest else tail.clone()
            self.acc[:, :, rest:] = 0
        self.base = k


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
    ``bf16`` (autocast; window outputs are blended in fp32) or ``auto`` (bf16 where the device has
    native bf16). Windows run on the model's device (CPU or GPU), several per forward pass
    (:data:`BATCH_VOXELS`), and are blended there. ``progress``: a bar over the windows.

    When the network ends in a transposed convolution (:func:`split_head`: the registered students
    without residual units) the windows blend the body's features on its coarser grid and the head
    runs once over the volume instead of once per overlapping window (2.25x the volume with 64^3
    windows at 0.25 overlap). Window starts are then multiples of the head's stride and the volume is
    padded to one. Otherwise the windows blend the logits themselves.

    Windows are processed one layer along k at a time; the preprocessed volume is held channels-last,
    (X, Y, Z, 2), so that a window is already in the network's channels-last layout, and so is the
    blend (:class:`_Blend`), which is how the network's output lies in memory.
    """
    device = next(model.parameters()).device
    bf16 = resolve_precision(precision, device) == "bf16"
    model = model.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]  # 1.7x faster on CPU
    body, head = split_head(model)
    step = tuple(int(s) for s in head.stride) if head is not None else (1, 1, 1)
    roi = tuple(int(r) for r in roi)
    if any(r % s for r, s in zip(roi, step)):
        raise ValueError(f"roi {roi} must be a multiple of the network's last stride {step}")
    shape = tuple(int(s) for s in ct.shape)
    # pad at the end (edge values) to at least a window and a multiple of the stride; crop back
    full = tuple(-(-max(s, r) // f) * f for s, r, f in zip(shape, roi, step))
    grid = tuple(f // s for f, s in zip(full, step))  # the features' grid
    froi = tuple(r // s for r, s in zip(roi, step))  # a window on the features' grid
    x = torch.empty((*full, 2))
    prep.tensor(ct, pet, out=x[: shape[0], : shape[1], : shape[2]].permute(3, 0, 1, 2))
    _pad_edge_(x, shape)
    starts = [window_starts(grid[a], froi[a], overlap) for a in range(3)]  # on the features' grid
    weights = [axis_weights(grid[a], starts[a], froi[a]).to(device) for a in range(3)]
    batch = max(1, BATCH_VOXELS // int(np.prod(roi)))
    layer = [(a, b) for a in range(len(starts[0])) for b in range(len(starts[1]))]  # window indices along i, j
    _, kernel, padding = _along_k(head)
    depth = froi[2] + (kernel if head is not None else 0)  # a layer of windows and the head's halo
    out = np.zeros(full, np.uint8)
    bar = tqdm(total=len(layer) * len(starts[2]), unit="window", leave=False, disable=not progress)
    blend: _Blend | None = None
    emitted = 0  # output slices along k before this one are written
    for n, k0 in enumerate(starts[2]):
        for b0 in range(0, len(layer), batch):
            where = layer[b0 : b0 + batch]
            corners = [(starts[0][a] * step[0], starts[1][b] * step[1], k0 * step[2]) for a, b in where]  # input grid
            windows = torch.stack([x[a : a + roi[0], b : b + roi[1], c : c + roi[2]] for a, b, c in corners])
            windows = windows.permute(0, 4, 1, 2, 3).to(device)  # (B, 2, ...) with channels-last strides
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                answer = body(windows).permute(0, 2, 3, 4, 1)  # a view: the output is channels-last
            if tuple(answer.shape[1:4]) != froi:
                raise ValueError(f"the network maps a {roi} window to {tuple(answer.shape[1:4])}, not {froi}")
            if blend is None:
                blend = _Blend(head, grid, depth, answer.shape[-1], device, bf16)
            for w, (a, b) in enumerate(where):  # a bf16 answer is blended in fp32 (type promotion)
                weight = weights[0][a][:, None, None] * weights[1][b][None, :, None] * weights[2][n][None, None, :]
                blend.add(answer[w], starts[0][a], starts[1][b], k0, weight[..., None])
            bar.update(len(where))
        assert blend is not None  # every layer holds at least one window
        # output slices that receive nothing from the next layer of windows are final
        end = full[2] if n + 1 == len(starts[2]) else step[2] * starts[2][n + 1] - padding
        for o0 in range(emitted, end, HEAD_SLICES):
            o1 = min(end, o0 + HEAD_SLICES)
            out[..., o0:o1] = blend.labels(o0, o1, full).cpu().numpy()
        emitted = end
        blend.drop_before(max(0, _inputs_of(end, head)[0]))  # the first feature a later output needs
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
    (atomically: a skipped or interrupted case leaves no file). A case's label is written in a
    background thread while the next case is predicted; every write has ended when this returns. A bad
    case (unreadable, missing a file) is logged and skipped; the others go on. Returns ``[(case id, why
    skipped)]``; a failed write raises."""
    skipped: list[tuple[str, str]] = []
    bar = tqdm(total=len(reader.cases), unit="case", disable=not progress)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="label-writer") as writer:
        writing: Future[Path] | None = None
        for files, got in reader:
            bar.set_postfix_str(files.case_id)
            if isinstance(got, InputError):
                skipped.append((files.case_id, str(got)))
                logger.warning(f"skipped {got}")
            else:
                ct, pet = got
                label = predict_volume(model, prep, ct, pet, roi, overlap, precision, progress)
                if writing is not None:
                    writing.result()  # one label waits at most: a failed write stops here
                writing = writer.submit(save_volume, label, output_for(files), dtype=np.uint8)
            bar.update(1)
        if writing is not None:
            writing.result()
    bar.close()
    return skipped
