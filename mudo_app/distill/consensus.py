"""The pieces of one MuDuo consistency term, as the method describes them (MUDUO_METHOD.md).

Shapes: teacher probabilities and student probabilities of one class are (B, X, Y, Z) tensors for
the B unlabelled samples of a batch; ``valid`` (B,) says whether the PET prompt network found the
class in that sample (a sample without a valid prompt has no PET teacher output worth trusting).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from mudo_app.errors import InputError

FILTERS = ("top_fraction", "threshold", "none")
TEACHERS = ("both", "ct", "pet")


@dataclass(frozen=True)
class ConsensusSettings:
    """Switches for the paper's ablations.

    ``filter``: ``top_fraction`` keeps the best ``keep_fraction`` of samples by soft IoU (at least
    one), ``threshold`` keeps samples with IoU > ``iou_threshold``, ``none`` keeps every sample;
    ``teachers``: ``both`` (random-alpha fusion), ``ct`` or ``pet`` (one teacher alone).

    These fields are declared here only: :class:`mudo_app.train.config.TrainConfig` inherits them (a
    training config is flat), and its ``consensus()`` hands exactly these to the consistency term.
    A bad value raises :class:`InputError` (a ``ValueError``) naming the field.
    """

    filter: str = "top_fraction"
    keep_fraction: float = 0.5
    iou_threshold: float = 0.5
    teachers: str = "both"

    def __post_init__(self) -> None:
        self.check_consensus()

    def check_consensus(self) -> None:
        """Raise :class:`InputError` naming the first field with a bad value."""
        if self.filter not in FILTERS:
            raise InputError(f"config field 'filter': must be one of {FILTERS}, got {self.filter!r}")
        if self.teachers not in TEACHERS:
            raise InputError(f"config field 'teachers': must be one of {TEACHERS}, got {self.teachers!r}")
        if not 0 < self.keep_fraction <= 1:  # also refuses NaN
            raise InputError(f"config field 'keep_fraction': must be in (0, 1], got {self.keep_fraction}")
        if not 0 <= self.iou_threshold <= 1:
            raise InputError(f"config field 'iou_threshold': must be in [0, 1], got {self.iou_threshold}")


def soft_iou(p_ct: torch.Tensor, p_pet: torch.Tensor) -> torch.Tensor:
    """(B,) soft IoU = sum(a b) / (sum a + sum b - sum(a b)) per sample; 0 when both are empty."""
    dims = tuple(range(1, p_ct.ndim))
    inter = (p_ct * p_pet).sum(dims)
    union = p_ct.sum(dims) + p_pet.sum(dims) - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(union))


def select(iou: torch.Tensor, valid: torch.Tensor, settings: ConsensusSettings) -> torch.Tensor:
    """(B,) bool: the samples whose pseudo-labels are used. Samples without a valid prompt rank last."""
    b = iou.shape[0]
    if settings.filter == "none":
        return torch.ones(b, dtype=torch.bool)
    if settings.filter == "threshold":
        return valid & (iou > settings.iou_threshold)
    keep = max(1, int(math.floor(settings.keep_fraction * b)))
    score = torch.where(valid, iou, iou - 2.0)  # invalid below every valid IoU in [0, 1], ordered by IoU
    order = torch.argsort(score, descending=True, stable=True)
    out = torch.zeros(b, dtype=torch.bool)
    out[order[:keep]] = True
    return out


def fuse(
    p_ct: torch.Tensor,
    p_pet: torch.Tensor,
    settings: ConsensusSettings,
    rng: np.random.Generator | None = None,
    alpha: np.ndarray | None = None,
) -> torch.Tensor:
    """Binary pseudo-labels (B, ...) float: ``(alpha p_ct + (1 - alpha) p_pet) > 0.5``, alpha ~ U(0, 1)
    per sample (``both``; or the given (B,) ``alpha``), 1 (``ct``) or 0 (``pet``)."""
    b = p_ct.shape[0]
    if settings.teachers == "both":
        if alpha is None:
            alpha = (rng or np.random.default_rng()).uniform(0.0, 1.0, size=b)
        weight = torch.as_tensor(np.asarray(alpha, np.float64)).to(p_ct)
    else:
        weight = torch.full((b,), 1.0 if settings.teachers == "ct" else 0.0, dtype=p_ct.dtype, device=p_ct.device)
    weight = weight.reshape(b, *([1] * (p_ct.ndim - 1)))
    return ((weight * p_ct + (1 - weight) * p_pet) > 0.5).to(p_ct.dtype)


def soft_dice_loss(student: torch.Tensor, target: torch.Tensor, kept: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Mean over kept samples of 1 - soft Dice(student probability, pseudo-label); 0 if none kept."""
    if not bool(kept.any()):
        return student.sum() * 0.0
    return (1 - soft_dice(student[kept], target[kept], eps)).mean()


def soft_dice(student: torch.Tensor, target: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(B,) soft Dice of each sample: (2 sum(s t) + eps) / (sum s + sum t + eps)."""
    dims = tuple(range(1, student.ndim))
    return (2 * (student * target).sum(dims) + eps) / (student.sum(dims) + target.sum(dims) + eps)


def consistency_weight(iteration: int, total: int, maximum: float = 0.1) -> float:
    """lambda(t) = maximum * exp(-5 (1 - t / T)^2), clipped to t <= T: reaches ``maximum`` at t = T."""
    if total <= 0:
        raise ValueError(f"total iterations must be positive, got {total}")
    phase = 1.0 - min(max(iteration, 0), total) / total
    return float(maximum * math.exp(-5.0 * phase * phase))


def point_prompts(region: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray | None:
    """K positive points (K, 3) in ``region`` (the prompt network's argmax == c): K = 1 is the
    centroid (rounded), K > 1 random region voxels; ``None`` when the region is empty (no valid prompt)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    idx = np.argwhere(region)
    if len(idx) == 0:
        return None
    if k == 1:
        return np.rint(idx.mean(0))[None].astype(np.int64)
    return idx[rng.choice(len(idx), size=k, replace=len(idx) < k)]
