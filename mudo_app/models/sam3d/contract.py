"""Input contracts of the foundation models (frozen dataclasses, one per model) and the crop geometry.

The one place that converts between voxel indices of the user's volume, world coordinates and voxel
indices of the model's ``crop``^3 input. Axis order everywhere: the volume's own ``[i, j, k]`` (as
stored in the file); the crop keeps the volume's axis directions, so crop index ``(a, b, c)`` is the
tensor index ``(D, H, W)`` the model sees, and point prompts are given in that order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from mudo_app.io.volume import Volume


@dataclass(frozen=True)
class InputContract:
    """How a foundation model wants its input.

    ``spacing_mm``: isotropic resampling; ``crop``: cube side in voxels; ``clip``: intensity window
    applied before normalisation (SAM-Med3D clips CT to [-1000, 1000] HU); normalisation is a z-score
    over the crop's voxels > 0 (the published ``ZNormalization(masking_method=x > 0)``); ``fill`` is the
    raw value used outside the volume.
    """

    name: str
    modality: str  # "CT" or "PET"
    spacing_mm: float = 1.5
    crop: int = 128
    clip: tuple[float, float] | None = None
    fill: float = 0.0

    def normalise(self, crop: NDArray[Any]) -> NDArray[Any]:
        """:meth:`normalise_tensor` of a numpy crop."""
        return self.normalise_tensor(torch.from_numpy(np.asarray(crop, np.float32))).numpy()

    def normalise_tensor(self, crop: torch.Tensor) -> torch.Tensor:
        """The model's input from a raw crop (float32, on its device): clipped, then z-scored over the
        voxels > 0 (population standard deviation)."""
        x = crop.float()
        if self.clip is not None:
            x = x.clamp(*self.clip)
        fg = x[x > 0]
        if fg.numel() > 1:
            std = fg.std(correction=0)
            if float(std) > 0:
                x = (x - fg.mean()) / std
        return x


SAM_MED3D_CT = InputContract("sam_med3d_ct", "CT", clip=(-1000.0, 1000.0), fill=-1000.0)
SEGANYPET_PET = InputContract("seganypet_pet", "PET", fill=0.0)
# Stand-ins were trained on 2 mm crops of the synthetic phantoms (see sample-datasets/README.md).
STANDIN_CT = InputContract("standin_ct", "CT", spacing_mm=2.0, clip=(-1000.0, 1000.0), fill=-1000.0)
STANDIN_PET = InputContract("standin_pet", "PET", spacing_mm=2.0, fill=0.0)


def _lerp_axis(values: torch.Tensor, coords: NDArray[Any], axis: int, device: torch.device | str) -> torch.Tensor:
    """Linear interpolation of ``values`` along ``axis`` at float positions ``coords`` (voxels of that
    axis; positions outside [0, n - 1] are clamped, the caller masks them)."""
    size = values.shape[axis]
    idx = np.clip(np.floor(coords), 0, max(size - 2, 0)).astype(np.int64)
    weight = np.clip(coords - idx, 0.0, 1.0) if size > 1 else np.zeros_like(coords)
    a = values.index_select(axis, torch.from_numpy(idx).to(device))
    b = values.index_select(axis, torch.from_numpy(np.minimum(idx + 1, size - 1)).to(device))
    w = torch.from_numpy(weight.astype(np.float32)).to(device).reshape([-1 if d == axis else 1 for d in range(3)])
    return a + (b - a) * w


class CropGrid:
    """A ``size``^3 grid of ``spacing`` mm centred on a world point, axes parallel to the volume's."""

    def __init__(self, volume_affine: NDArray[Any], centre_world: NDArray[Any], spacing: float, size: int):
        directions = volume_affine[:3, :3] / np.linalg.norm(volume_affine[:3, :3], axis=0)
        self.size = int(size)
        self.affine = np.eye(4)
        self.affine[:3, :3] = directions * spacing
        self.affine[:3, 3] = np.asarray(centre_world, float) - self.affine[:3, :3] @ np.full(3, (size - 1) / 2)
        self.centre_world = np.asarray(centre_world, float)

    def world_to_crop(self, world: NDArray[Any]) -> NDArray[Any]:
        """(N, 3) world mm -> (N, 3) crop voxel coordinates (float)."""
        w = np.c_[np.asarray(world, float), np.ones(len(world))]
        return (np.linalg.inv(self.affine) @ w.T).T[:, :3]

    def contains(self, crop_coords: NDArray[Any], margin: float = 0.0) -> bool:
        c = np.asarray(crop_coords)
        return bool(np.all(c >= margin) and np.all(c <= self.size - 1 - margin))

    def sample(self, volume: Volume, fill: float) -> NDArray[Any]:
        """The volume resampled (trilinear) onto this crop: (size, size, size) float32."""
        return self.sample_tensor(volume, fill).cpu().numpy()

    def sample_tensor(self, volume: Volume, fill: float, device: torch.device | str = "cpu") -> torch.Tensor:
        """The volume resampled (trilinear) onto this crop on ``device``: (size, size, size) float32.

        Only the box of volume voxels the crop reaches is read (a memory-mapped volume stays on disk
        elsewhere). A crop voxel outside the volume (beyond voxel 0 or n - 1 on an axis) is ``fill``,
        inside it is trilinear: SciPy's ``map_coordinates(order=1, mode="constant")``, in float32.
        The crop's axes are the volume's (:class:`CropGrid`), so the interpolation is separable: three
        1-D linear interpolations, one per axis.
        """
        mapping = np.linalg.inv(volume.affine) @ self.affine  # crop voxel -> volume voxel: diagonal
        shape = np.array(volume.shape)
        axis = np.arange(self.size, dtype=np.float64)
        coords = [mapping[r, r] * axis + mapping[r, 3] for r in range(3)]  # volume voxels along each axis
        lo = [int(np.clip(np.floor(c.min()), 0, n - 1)) for c, n in zip(coords, shape)]
        hi = [int(np.clip(np.ceil(c.max()) + 1, a + 1, n)) for c, a, n in zip(coords, lo, shape)]
        box = volume.array[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        out = torch.from_numpy(np.ascontiguousarray(box, np.float32)).to(device)
        inside = torch.ones((self.size,) * 3, dtype=torch.bool, device=device)
        for r in range(3):
            ok = torch.from_numpy((coords[r] >= 0) & (coords[r] <= shape[r] - 1)).to(device)
            inside &= ok.reshape([-1 if a == r else 1 for a in range(3)])
            out = _lerp_axis(out, coords[r] - lo[r], r, device)
        return torch.where(inside, out, torch.full_like(out, fill))

    def to_volume_grid(
        self, crop_values: torch.Tensor, volume_shape: Sequence[int], volume_affine: NDArray[Any]
    ) -> NDArray[Any]:
        """Map (size^3) crop values back onto the volume grid (trilinear; 0 outside the crop).

        Only the box of volume voxels the crop covers is computed; the result has ``volume_shape``.
        """
        out = np.zeros(volume_shape, np.float32)
        corners = np.array(
            [[a, b, c] for a in (0, self.size - 1) for b in (0, self.size - 1) for c in (0, self.size - 1)]
        )
        world = (self.affine @ np.c_[corners, np.ones(8)].T).T
        vox = (np.linalg.inv(volume_affine) @ world.T).T[:, :3]
        lo = np.maximum(np.floor(vox.min(0)).astype(int), 0)
        hi = np.minimum(np.ceil(vox.max(0)).astype(int) + 1, volume_shape)
        if np.any(hi <= lo):
            return out
        axes = [torch.arange(int(lo[a]), int(hi[a]), dtype=torch.float64) for a in range(3)]
        gi, gj, gk = torch.meshgrid(*axes, indexing="ij")
        m = torch.from_numpy(np.linalg.inv(self.affine) @ volume_affine)  # volume voxel -> crop voxel
        pts = [m[r, 0] * gi + m[r, 1] * gj + m[r, 2] * gk + m[r, 3] for r in range(3)]
        # grid_sample wants (x, y, z) = (W, H, D) order, normalised to [-1, 1] with align_corners=True
        scale = 2.0 / (self.size - 1)
        grid = torch.stack([pts[2] * scale - 1, pts[1] * scale - 1, pts[0] * scale - 1], dim=-1).float()
        vals = F.grid_sample(
            crop_values.reshape(1, 1, *(self.size,) * 3).float(),
            grid[None],
            mode="bilinear",
            padding_mode="zeros",
            align_corners=True,
        )
        out[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = vals[0, 0].numpy()
        return out
