"""The reference augmentation (random flips, random 90-degree rotation in the axial plane), invertible.

Tensors are (..., Pi, Pj, Pk) in the case's axis order; the axial plane is (i, j) (k runs head-feet
in the synthetic and autoPET volumes). ``apply`` then ``invert`` is the identity, which lets MuDuo
compare an augmented student with teachers that work in the un-augmented frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class FlipRot:
    flips: tuple[bool, bool, bool] = (False, False, False)
    quarter_turns: int = 0  # rot90 in the (i, j) plane

    @staticmethod
    def draw(rng: np.random.Generator, square_axial: bool = True) -> FlipRot:
        """A random transform; rotation only when the patch's i and j sides are equal."""
        fi, fj, fk = (bool(f) for f in rng.random(3) < 0.5)
        flips = (fi, fj, fk)
        turns = int(rng.integers(4))
        return FlipRot(flips, turns if square_axial else 0)

    def _flip_dims(self, ndim: int):
        return [ndim - 3 + a for a, f in enumerate(self.flips) if f]

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        dims = self._flip_dims(x.ndim)
        if dims:
            x = torch.flip(x, dims)
        if self.quarter_turns:
            x = torch.rot90(x, self.quarter_turns, (x.ndim - 3, x.ndim - 2))
        return x

    def invert(self, x: torch.Tensor) -> torch.Tensor:
        if self.quarter_turns:
            x = torch.rot90(x, -self.quarter_turns, (x.ndim - 3, x.ndim - 2))
        dims = self._flip_dims(x.ndim)
        if dims:
            x = torch.flip(x, dims)
        return x
