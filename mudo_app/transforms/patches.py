"""Random training patches with foreground over-sampling (as nnU-Net does)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np


class PatchSource(Protocol):
    """A labelled case that cuts random training patches (in memory: :class:`ArrayCase`; on disk:
    :class:`mudo_app.train.data.StoredCase`); both make the draws of :func:`draw_start`."""

    def random_patch(
        self, size: Sequence[int], rng: np.random.Generator, foreground_prob: float
    ) -> tuple[np.ndarray, np.ndarray]: ...


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


def draw_start(
    shape: Sequence[int],
    size: Sequence[int],
    rng: np.random.Generator,
    foreground_prob: float,
    class_counts: Sequence[tuple[int, int]],
    voxel_at: Callable[[int, int], np.ndarray],
) -> np.ndarray:
    """The start voxel (3,) of a random patch of ``size`` in a volume of ``shape`` (already padded to
    at least ``size``): with ``foreground_prob`` centred on a random voxel of a random present class.

    ``class_counts``: ``(class, number of voxels)`` of the present non-zero classes, ascending;
    ``voxel_at(class, r)``: that class's ``r``-th voxel index (3,), in :func:`class_voxels` order. Only
    the draws are made here, so the volume itself may stay on disk (:mod:`mudo_app.train.data`).
    """
    shape_a, sides = np.array(shape), np.array(size)
    if rng.random() < foreground_prob and class_counts:
        classes = [c for c, _ in class_counts]
        c = int(rng.choice(classes))
        centre = voxel_at(c, int(rng.integers(dict(class_counts)[c])))
        return np.clip(centre - sides // 2, 0, shape_a - sides)
    return np.array([rng.integers(0, s - p + 1) for s, p in zip(shape_a, sides)])


def random_patch(
    image: np.ndarray,
    label: np.ndarray,
    size: Sequence[int],
    rng: np.random.Generator,
    foreground_prob: float = 0.33,
    voxels: dict[int, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One patch of ``size`` (:func:`draw_start`) of an image and label held in memory.

    ``voxels``: :func:`class_voxels` of ``label``, precomputed so that no patch rescans the volume.
    """
    voxels = class_voxels(label) if voxels is None else voxels
    image, label = pad_to(image, label, size)  # padding at the end keeps voxel indices valid
    counts = [(c, len(v)) for c, v in voxels.items()]
    start = draw_start(label.shape, size, rng, foreground_prob, counts, lambda c, r: voxels[c][r])
    sl = tuple(slice(int(a), int(a + p)) for a, p in zip(start, size))
    return image[(slice(None), *sl)], label[sl]


class ArrayCase:
    """An image (C, X, Y, Z) and label (X, Y, Z) held in memory, as a :class:`PatchSource`."""

    def __init__(self, image: np.ndarray, label: np.ndarray):
        self.image, self.label = image, label
        self.voxels = class_voxels(label)  # once per case: no patch rescans the volume

    def random_patch(
        self, size: Sequence[int], rng: np.random.Generator, foreground_prob: float
    ) -> tuple[np.ndarray, np.ndarray]:
        return random_patch(self.image, self.label, size, rng, foreground_prob, self.voxels)
