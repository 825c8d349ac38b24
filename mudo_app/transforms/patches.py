"""Random training patches with foreground over-sampling (as nnU-Net does)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pad_to(image: np.ndarray, label: np.ndarray, size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Pad (C, X, Y, Z) image and (X, Y, Z) label at the end so every side is at least ``size``."""
    pad = [(0, max(0, s - d)) for s, d in zip(size, label.shape)]
    if any(p[1] for p in pad):
        image = np.pad(image, [(0, 0), *pad], mode="edge")
        label = np.pad(label, pad)
    return image, label


def class_voxels(label: np.ndarray) -> dict[int, np.ndarray]:
    """Voxel indices (N, 3) of each non-zero class present, ascending by class: compute once per case."""
    return {int(c): np.argwhere(label == c) for c in np.unique(label) if c != 0}


def random_patch(
    image: np.ndarray,
    label: np.ndarray,
    size: Sequence[int],
    rng: np.random.Generator,
    foreground_prob: float = 0.33,
    voxels: dict[int, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One patch of ``size``: with ``foreground_prob`` centred on a random voxel of a random present class.

    ``voxels``: :func:`class_voxels` of ``label``, precomputed so that no patch rescans the volume.
    """
    voxels = class_voxels(label) if voxels is None else voxels
    image, label = pad_to(image, label, size)  # padding at the end keeps voxel indices valid
    shape = np.array(label.shape)
    sides = np.array(size)
    if rng.random() < foreground_prob:
        classes = list(voxels)
        if classes:
            idx = voxels[int(rng.choice(classes))]
            centre = idx[rng.integers(len(idx))]
            start = np.clip(centre - sides // 2, 0, shape - sides)
        else:
            start = np.array([rng.integers(0, s - p + 1) for s, p in zip(shape, sides)])
    else:
        start = np.array([rng.integers(0, s - p + 1) for s, p in zip(shape, sides)])
    sl = tuple(slice(int(a), int(a + p)) for a, p in zip(start, sides))
    return image[(slice(None), *sl)], label[sl]
