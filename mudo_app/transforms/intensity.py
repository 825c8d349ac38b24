"""Student input normalisation (one place, used by training and inference alike)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class StudentInput:
    """CT: clipped to ``ct_window`` HU and scaled to about [-1, 1]; PET: ``log(1 + SUV)``."""

    ct_window: tuple = (-1000.0, 1000.0)

    def __call__(self, ct: np.ndarray, pet: np.ndarray) -> np.ndarray:
        """``ct``, ``pet``: (X, Y, Z) on one grid -> float32 (2, X, Y, Z)."""
        if ct.shape != pet.shape:
            raise ValueError(f"CT {ct.shape} and PET {pet.shape} must have one shape")
        lo, hi = self.ct_window
        c = (np.clip(ct, lo, hi) - (lo + hi) / 2) / ((hi - lo) / 2)
        p = np.log1p(np.clip(pet, 0, None))
        return np.stack([c, p]).astype(np.float32)
