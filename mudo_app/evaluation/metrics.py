"""Overlap metrics on label maps (no HD95 here yet: see the MuDuo-engine issue)."""

from __future__ import annotations

from typing import Dict, Iterable

import numpy as np


def dice_per_class(gt: np.ndarray, pred: np.ndarray, classes: Iterable[int]) -> Dict[int, float]:
    """Dice of each class present in ``gt`` or ``pred``; a class absent from both is left out.

    A class present in ``gt`` and missed entirely in ``pred`` scores 0 (and vice versa).
    """
    if gt.shape != pred.shape:
        raise ValueError(f"gt {gt.shape} and pred {pred.shape} must have one shape")
    out = {}
    for c in classes:
        g, p = gt == c, pred == c
        denom = int(g.sum()) + int(p.sum())
        if denom:
            out[int(c)] = 2.0 * int((g & p).sum()) / denom
    return out
