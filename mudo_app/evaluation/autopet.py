"""autoPET challenge lesion metrics, as the challenge's evaluation code defines them.

Binary masks; connected components with 18-connectivity. A predicted component that touches no
ground-truth voxel is a false positive (all its voxels count); a ground-truth component that no
predicted voxel touches is a false negative. Volumes in ml from the voxel size (mm) of the header.
Dice is over the whole volume; with an empty ground truth and an empty prediction it is undefined (NaN).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from mudo_app.evaluation.metrics import binary_dice

CONNECTIVITY_18 = ndimage.generate_binary_structure(3, 2)


def _unmatched_voxels(components_of: np.ndarray, other: np.ndarray) -> int:
    """Voxels of the 18-connected components of ``components_of`` that do not touch ``other``."""
    comps, n = ndimage.label(components_of, structure=CONNECTIVITY_18)
    if n == 0:
        return 0
    touched = np.zeros(n + 1, bool)
    touched[np.unique(comps[other & components_of])] = True
    sizes = np.bincount(comps.ravel(), minlength=n + 1)
    return int(sizes[1:][~touched[1:]].sum())


def autopet_metrics(gt: np.ndarray, pred: np.ndarray, spacing_mm: Sequence[float]) -> dict[str, float]:
    """``{"dice", "fp_volume_ml", "fn_volume_ml"}`` for binary masks on one grid."""
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} must have one shape")
    g, p = gt.astype(bool), pred.astype(bool)
    voxel_ml = float(np.prod(spacing_mm)) / 1000.0
    return {
        "dice": binary_dice(g, p),  # NaN for a case without lesions where none is predicted
        "fp_volume_ml": _unmatched_voxels(p, g) * voxel_ml,
        "fn_volume_ml": _unmatched_voxels(g, p) * voxel_ml,
    }
