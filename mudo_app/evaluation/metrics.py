"""Per-class metrics on label maps: Dice, HD95 and ASD in mm (MONAI), RAVD; misses counted apart."""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import numpy as np


def binary_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice ``2 |A & B| / (|A| + |B|)`` of two masks of one shape (non-zero voxels count as inside).

    The one convention for empty masks in this project: one mask empty and the other not scores 0.0;
    **both empty is undefined and returns NaN** (there is nothing to score). Callers say what NaN means
    for them: a class absent from both is left out of per-class tables; two teachers that both find
    nothing agree.
    """
    if a.shape != b.shape:
        raise ValueError(f"masks {a.shape} and {b.shape} must have one shape")
    a, b = a.astype(bool, copy=False), b.astype(bool, copy=False)
    total = int(a.sum()) + int(b.sum())
    return 2.0 * int((a & b).sum()) / total if total else float("nan")


def predicted_as(gt: np.ndarray, pred: np.ndarray, cls: int, num_classes: int = 14) -> np.ndarray:
    """Voxel counts ``(num_classes,)``: what ``pred`` calls the voxels that ``gt`` labels ``cls``.

    Entry ``k`` counts the voxels with ``gt == cls`` and ``pred == k`` (entry ``cls`` is the true
    positives). Sums over several cases say where a class's missed voxels go (e.g. lesion voxels
    predicted as the neighbouring organ, or as background).
    """
    if gt.shape != pred.shape:
        raise ValueError(f"labels {gt.shape} and {pred.shape} must have one shape")
    return np.bincount(pred[gt == cls].ravel().astype(np.int64), minlength=num_classes)[:num_classes]


def dice_per_class(gt: np.ndarray, pred: np.ndarray, classes: Iterable[int]) -> dict[int, float]:
    """Dice of each class present in ``gt`` or ``pred``; a class absent from both is left out.

    A class present in ``gt`` and missed entirely in ``pred`` scores 0 (and vice versa).
    """
    if gt.shape != pred.shape:
        raise ValueError(f"gt {gt.shape} and pred {pred.shape} must have one shape")
    out = {}
    for c in classes:
        dice = binary_dice(gt == c, pred == c)
        if not np.isnan(dice):
            out[int(c)] = dice
    return out


def mean_dice(gt: np.ndarray, pred: np.ndarray, classes: Iterable[int] = range(1, 14)) -> float:
    """Mean Dice over ``classes``, a class absent from both counting as 0 (the benchmark's convention)."""
    classes = list(classes)
    dice = dice_per_class(gt, pred, classes)
    return float(np.mean([dice.get(int(c), 0.0) for c in classes]))


def _surface_distances(g: np.ndarray, p: np.ndarray, spacing) -> tuple:
    """(HD95, ASD) in mm between two non-empty masks, with MONAI, on their joint bounding box."""
    import torch
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    idx = np.argwhere(g | p)
    lo = np.maximum(idx.min(0) - 1, 0)
    hi = idx.max(0) + 2
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    gt_t = torch.from_numpy(np.ascontiguousarray(g[box]))[None, None].float()
    pr_t = torch.from_numpy(np.ascontiguousarray(p[box]))[None, None].float()
    sp = [float(s) for s in spacing]
    with warnings.catch_warnings():  # MONAI's own deprecation notice about an internal argument
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
        hd95 = compute_hausdorff_distance(pr_t, gt_t, include_background=True, percentile=95, spacing=sp)
        asd = compute_average_surface_distance(pr_t, gt_t, include_background=True, symmetric=True, spacing=sp)
    return float(hd95.item()), float(asd.item())


def class_metrics(gt: np.ndarray, pred: np.ndarray, spacing, classes: Iterable[int]) -> dict[int, dict]:
    """Per class: Dice, HD95 and ASD (mm), RAVD, and ``status`` found / missed / hallucinated.

    A class absent from both is left out. A structure missed entirely (in ``gt``, not in ``pred``)
    or hallucinated (the reverse) scores Dice 0 and has no surface distance (NaN), never HD95 = 0;
    callers count these separately.
    """
    if gt.shape != pred.shape:
        raise ValueError(f"gt {gt.shape} and pred {pred.shape} must have one shape")
    out = {}
    for c in classes:
        g, p = gt == c, pred == c
        ng, np_ = int(g.sum()), int(p.sum())
        if ng == 0 and np_ == 0:
            continue
        if np_ == 0 or ng == 0:
            out[int(c)] = {
                "status": "missed" if np_ == 0 else "hallucinated",
                "dice": 0.0,
                "hd95_mm": float("nan"),
                "asd_mm": float("nan"),
                "ravd": -1.0 if np_ == 0 else float("nan"),
            }
            continue
        hd95, asd = _surface_distances(g, p, spacing)
        out[int(c)] = {
            "status": "found",
            "dice": binary_dice(g, p),
            "hd95_mm": hd95,
            "asd_mm": asd,
            "ravd": (np_ - ng) / ng,
        }
    return out
