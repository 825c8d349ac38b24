"""Frozen teachers on student patches: one encoder pass per patch position, ever (embedding cache).

Geometry. A student patch is ``P = (Pi, Pj, Pk)`` voxels of the case grid (spacing ``s`` mm per axis,
axis order ``[i, j, k]`` of the case). A teacher sees a ``C``^3 crop at ``t`` mm (its input contract)
centred on the same world point, with the same axis directions, and answers with ``L = C / 4``
low-resolution logits at ``4 t`` mm. Both frames are axis-aligned, so patch voxel ``p`` sits at crop
low-res coordinate ``(p - (P - 1) / 2) * s / (4 t) + (L - 1) / 2`` on every axis: one fixed pair of
sampling grids per case spacing maps student probabilities to mask prompts and teacher logits back.
With the stand-ins (128^3 at 2 mm) and 64^3 patches at 4 mm both boxes are exactly 256 mm.

Unlabelled patches are drawn from a fixed grid of positions per volume (:func:`patch_starts`), so a
teacher's image embedding of a position is computed once and reused for the rest of the run.
Geometric augmentation is applied to the student's input and undone on its output (see
:mod:`mudo_app.transforms.augment`), so teachers always work in the un-augmented frame.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mudo_app.distill.embedding_cache import EmbeddingCache
from mudo_app.io.volume import Volume
from mudo_app.models.sam3d.contract import CropGrid
from mudo_app.models.teachers import Teacher


def patch_starts(shape: Sequence[int], patch: Sequence[int]) -> np.ndarray:
    """(N, 3) start voxels of a fixed grid of patches covering ``shape`` with stride at most P / 2.

    Volumes smaller than the patch on an axis get the single start 0 (the caller pads at the end).
    """
    axes = []
    for dim, p in zip(shape, patch):
        room = max(int(dim) - int(p), 0)
        n = int(np.ceil(room / (p / 2))) + 1 if room else 1
        axes.append(np.unique(np.round(np.linspace(0, room, n)).astype(int)))
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)


def patch_centre_world(affine: np.ndarray, start: Sequence[int], patch: Sequence[int]) -> np.ndarray:
    """World (mm) position of the centre of the patch starting at voxel ``start``."""
    centre = np.asarray(start, float) + (np.asarray(patch, float) - 1) / 2
    return (affine @ np.r_[centre, 1.0])[:3]


def _norm(idx: torch.Tensor, size: int) -> torch.Tensor:
    """Voxel index -> grid_sample coordinate with align_corners=True."""
    return 2 * idx / max(size - 1, 1) - 1


class PatchFrame:
    """The fixed sampling grids between a student patch and a teacher's low-resolution frame."""

    def __init__(
        self,
        patch: Sequence[int],
        spacing: Sequence[float],
        crop_spacing: float,
        crop: int,
        device: torch.device = torch.device("cpu"),
    ):
        self.patch = tuple(int(p) for p in patch)
        self.spacing = np.asarray(spacing, float)
        self.low = crop // 4
        self.low_spacing = 4.0 * crop_spacing
        self.crop_spacing = crop_spacing
        self.crop = crop
        # same box (the stand-ins' case): plain resizing is the same mapping, and 5x faster than grid_sample
        self.aligned = bool(np.allclose(np.asarray(self.patch) * self.spacing, crop * crop_spacing, atol=1e-6))
        # patch voxel -> low-res crop coordinate, per axis
        to_low = [
            (torch.arange(p, dtype=torch.float64) - (p - 1) / 2) * s / self.low_spacing + (self.low - 1) / 2
            for p, s in zip(self.patch, self.spacing)
        ]
        self.inside = torch.ones(self.patch)
        for axis, c in enumerate(to_low):
            shape = [1, 1, 1]
            shape[axis] = -1
            self.inside = self.inside * ((c >= -0.5) & (c <= self.low - 0.5)).float().reshape(shape)
        self.low_from_patch_grid = self._grid([_norm(c, self.low) for c in to_low])
        # low-res crop voxel -> patch coordinate, per axis
        to_patch = [
            (torch.arange(self.low, dtype=torch.float64) - (self.low - 1) / 2) * self.low_spacing / s + (p - 1) / 2
            for p, s in zip(self.patch, self.spacing)
        ]
        self.patch_from_low_grid = self._grid([_norm(c, p) for c, p in zip(to_patch, self.patch)])
        self.inside, self.low_from_patch_grid, self.patch_from_low_grid = (
            t.to(device) for t in (self.inside, self.low_from_patch_grid, self.patch_from_low_grid)
        )

    @staticmethod
    def _grid(axes: list[torch.Tensor]) -> torch.Tensor:
        gi, gj, gk = torch.meshgrid(*axes, indexing="ij")
        return torch.stack([gk, gj, gi], -1)[None].float()  # grid_sample wants (x, y, z) = (k, j, i)

    def to_low(self, values: torch.Tensor) -> torch.Tensor:
        """(N, Pi, Pj, Pk) patch values -> (N, 1, L, L, L) in the teacher's low-res frame (0 outside)."""
        n = values.shape[0]
        if self.aligned:
            return F.interpolate(values[:, None].float(), size=(self.low,) * 3, mode="trilinear", align_corners=False)
        return F.grid_sample(
            values[:, None].float(),
            self.patch_from_low_grid.expand(n, -1, -1, -1, -1),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=True,
        )

    def from_low(self, logits: torch.Tensor) -> torch.Tensor:
        """(N, 1, L, L, L) teacher logits -> (N, Pi, Pj, Pk) probabilities (0 where the crop does not reach)."""
        n = logits.shape[0]
        if self.aligned:
            return torch.sigmoid(F.interpolate(logits.float(), size=self.patch, mode="trilinear", align_corners=False))[
                :, 0
            ]
        up = F.grid_sample(
            logits.float(),
            self.low_from_patch_grid.expand(n, -1, -1, -1, -1),
            mode="bilinear",
            padding_mode="border",
            align_corners=True,
        )
        return torch.sigmoid(up[:, 0]) * self.inside

    def point_to_crop(self, points: np.ndarray) -> np.ndarray:
        """(K, 3) patch voxel indices -> (K, 3) voxel coordinates of the teacher's ``crop``^3 input."""
        p = np.asarray(self.patch, float)
        return (np.asarray(points, float) - (p - 1) / 2) * self.spacing / self.crop_spacing + (self.crop - 1) / 2


class TeacherBank:
    """A frozen teacher answering prompts on student patches; embeddings cached per patch position.

    ``cache``: where image embeddings are kept (:class:`EmbeddingCache`, bounded, fp16; several banks
    may share one, their keys differ); ``None`` re-encodes on every call (what the reference does;
    kept to measure the saving). Everything is computed on the teacher model's device; crops are
    sampled on the CPU. Counters ``encoder_calls`` / ``decoder_calls`` (decoder calls count prompts)
    feed the FLOPs report.
    """

    def __init__(self, teacher: Teacher, patch: Sequence[int], cache: EmbeddingCache | None = None):
        self.teacher = teacher
        self.patch = tuple(patch)
        self.cache = cache
        self._frames: dict[tuple[float, ...], PatchFrame] = {}
        self.encoder_calls = 0
        self.decoder_calls = 0
        self.device = next(teacher.model.parameters()).device
        if cache is not None:
            cache.check_fits(int(np.prod(teacher.model.image_encoder.embedding_shape)))

    def frame(self, spacing: Sequence[float]) -> PatchFrame:
        key = tuple(round(float(s), 6) for s in spacing)
        if key not in self._frames:
            c = self.teacher.contract
            self._frames[key] = PatchFrame(self.patch, key, c.spacing_mm, c.crop, self.device)
        return self._frames[key]

    @torch.no_grad()
    def embedding(self, key: Hashable, volume: Volume | Callable[[], Volume], centre_world: np.ndarray) -> torch.Tensor:
        """(1, D, 8, 8, 8) image embedding of the crop centred on ``centre_world`` (``volume``: this
        teacher's modality, raw HU or SUV, or a function that opens it, called only when the crop is
        needed); computed again only when the cache does not hold ``key``."""
        if self.cache is not None:
            cached = self.cache.get(key)
            if cached is not None:
                return cached
        if not isinstance(volume, Volume):
            volume = volume()
        c = self.teacher.contract
        crop = CropGrid(volume.affine, centre_world, c.spacing_mm, c.crop)
        image = c.normalise_tensor(crop.sample_tensor(volume, c.fill, self.device))[None, None]
        emb = self.teacher.model.image_encoder(image)
        self.encoder_calls += 1
        if self.cache is not None:
            self.cache.put(key, emb)
            emb = emb.to(self.cache.dtype).float()  # what a later hit returns: one answer either way
        return emb

    @torch.no_grad()
    def from_masks(self, emb: torch.Tensor, frame: PatchFrame, masks: torch.Tensor) -> torch.Tensor:
        """Mask prompts only: (N, Pi, Pj, Pk) probabilities in [0, 1] -> (N, Pi, Pj, Pk) teacher probabilities."""
        logits, _ = self.teacher.model.decode(emb, points=None, mask=frame.to_low(masks.detach()))
        self.decoder_calls += masks.shape[0]
        return frame.from_low(logits)

    @torch.no_grad()
    def from_points(self, emb: torch.Tensor, frame: PatchFrame, points: Sequence[np.ndarray]) -> torch.Tensor:
        """Positive point prompts: N arrays (K, 3) of patch voxel indices (equal K) -> (N, Pi, Pj, Pk)."""
        coords = torch.from_numpy(np.stack([frame.point_to_crop(p) for p in points])).float().to(self.device)
        labels = torch.ones(coords.shape[:2], dtype=torch.int64, device=self.device)
        logits, _ = self.teacher.model.decode(emb, points=(coords, labels), mask=None)
        self.decoder_calls += len(points)
        return frame.from_low(logits)
