"""Student input normalisation (one place, used by training and inference alike)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class StudentInput:
    """CT: clipped to ``ct_window`` HU and scaled to about [-1, 1]; PET: ``log(1 + SUV)``, SUV < 0 -> 0.

    Computed in float32 with torch's element-wise kernels, in place (vectorised and on every torch
    thread): a whole-body case takes a fraction of a second.
    """

    ct_window: tuple = (-1000.0, 1000.0)

    def __call__(self, ct: np.ndarray, pet: np.ndarray) -> np.ndarray:
        """``ct``, ``pet``: (X, Y, Z) on one grid, any memory order -> float32 (2, X, Y, Z), C order."""
        return self.tensor(ct, pet).numpy()

    def tensor(self, ct: np.ndarray, pet: np.ndarray, out: torch.Tensor | None = None) -> torch.Tensor:
        """Like calling it, as a torch tensor; written into ``out`` when given (any float32 (2, X, Y, Z)
        tensor, e.g. a channels-last view of an (X, Y, Z, 2) buffer)."""
        if ct.shape != pet.shape:
            raise ValueError(f"CT {ct.shape} and PET {pet.shape} must have one shape")
        if out is None:
            out = torch.empty((2, *ct.shape), dtype=torch.float32)
        elif tuple(out.shape) != (2, *ct.shape) or out.dtype != torch.float32:
            raise ValueError(f"out must be float32 {(2, *ct.shape)}, got {out.dtype} {tuple(out.shape)}")
        lo, hi = (float(v) for v in self.ct_window)
        c, p = out[0], out[1]
        torch.clamp(_float32(ct), lo, hi, out=c)
        c.sub_((lo + hi) / 2).div_((hi - lo) / 2)
        torch.clamp(_float32(pet), min=0.0, out=p)
        p.log1p_()
        return out


def _float32(array: np.ndarray) -> torch.Tensor:
    """A float32 torch view of ``array`` (a copy only when it is another type)."""
    return torch.from_numpy(np.asarray(array, dtype=np.float32))
