"""Random training patches with foreground over-sampling (as nnU-Net does)."""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np


def pad_to(image: np.ndarray, label: np.ndarray, size: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """Pad (C, X, Y, Z) image and (X, Y, Z) label at the end so every side is at least ``size``."""
    pad = [(0, max(0, s - d)) for s, d in zip(size, label.shape)]
    if any(p[1] for p in pad):
        image = np.pad(image, [(0, 0), *pad], mode="edge")
        label = np.pad(label, pad)
    return image, label


def random_patch(image: np.ndarray, label: np.ndarray, size: Sequence[int], rng: np.random.Generator,
                 foreground_prob: float = 0.33) -> Tuple[np.ndarray, np.ndarray]:
    """One patch of ``size``: with ``foreground_prob`` centred on a random voxel of a random present class."""
    image, label = pad_to(image, label, size)
    shape = np.array(label.shape)
    size = np.array(size)
    if rng.random() < foreground_prob:
        classes = [c for c in np.unique(label) if c != 0]
        if classes:
            idx = np.argwhere(label == rng.choice(classes))
            centre = idx[rng.integers(len(idx))]
            start = np.clip(centre - size // 2, 0, shape - size)
        else:
            start = np.array([rng.integers(0, s - p + 1) for s, p in zip(shape, size)])
    else:
        start = np.array([rng.integers(0, s - p + 1) for s, p in zip(shape, size)])
    sl = tuple(slice(int(a), int(a + p)) for a, p in zip(start, size))
    return image[(slice(None), *sl)], label[sl]
