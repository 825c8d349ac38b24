"""Simulated clicks (SAM-Med3D style): the first inside the object, later ones in the error region.

All coordinates are voxel indices of the array they are computed on, in its own axis order.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _box(mask: np.ndarray):
    """(slices of the bounding box of ``mask``, its start index)."""
    idx = np.argwhere(mask)
    lo, hi = idx.min(0), idx.max(0) + 1
    return tuple(slice(a, b) for a, b in zip(lo, hi)), lo


def _deepest(mask: np.ndarray) -> np.ndarray:
    """The voxel of ``mask`` farthest from its border (ties: the first in C order).

    Computed on the mask's bounding box padded by one background voxel: the nearest background voxel
    of any object voxel lies within that shell, so the result equals the whole-volume one.
    """
    box, lo = _box(mask)
    sub = mask[box]
    dist = ndimage.distance_transform_edt(np.pad(sub, 1))[1:-1, 1:-1, 1:-1]
    return lo + np.array(np.unravel_index(int(np.argmax(dist)), sub.shape))


def _random_voxel(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A voxel index of ``mask`` drawn uniformly: the ``rng.integers(n)``-th of its n voxels in C order
    (as ``np.argwhere`` lists them, without building that (n, 3) list)."""
    flat = np.flatnonzero(mask)
    return np.array(np.unravel_index(int(flat[rng.integers(len(flat))]), mask.shape))


def first_click(target: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """A positive click: a random object voxel (``rng``), else the object's deepest voxel."""
    if not target.any():
        raise ValueError("target is empty: no voxel to click")
    if rng is None:
        return _deepest(target)
    return _random_voxel(target, rng)


def next_click(
    target: np.ndarray, pred: np.ndarray, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, int] | None:
    """A click correcting ``pred``: in the larger of false negatives (label 1) / false positives (0).

    Deterministic (``rng`` None): the deepest voxel of the largest error component, as evaluation
    protocols do. Random: a random voxel of the chosen error set. ``None`` when there is no error.
    """
    fn, fp = target & ~pred, pred & ~target
    n_fn, n_fp = int(fn.sum()), int(fp.sum())
    if n_fn == 0 and n_fp == 0:
        return None
    err, label = (fn, 1) if n_fn >= n_fp else (fp, 0)
    if rng is not None:
        return _random_voxel(err, rng), label
    box, lo = _box(err)  # components never leave the error's bounding box
    comps, n = ndimage.label(err[box])
    sizes = ndimage.sum(err[box], comps, index=np.arange(1, n + 1))
    return lo + _deepest(comps == (int(np.argmax(sizes)) + 1)), label
