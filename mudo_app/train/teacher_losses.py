"""The losses of stand-in teacher pre-training (:func:`mudo_app.train.teachers.pretrain_teacher`).

Overlap counts on the crop grid from a coarse prediction (:func:`full_grid_overlap`), SAM's loss for
the multimask candidates (:func:`candidate_losses`), and the auxiliary dense segmentation of an image
embedding (:class:`DenseHead`, :func:`dense_loss`, :func:`class_fractions`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import nn

from mudo_app.labels import NUM_CLASSES
from mudo_app.models.sam3d.mask_decoder import output_upscaling


def full_grid_overlap(coarse: torch.Tensor, targets: torch.Tensor, pool: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Intersection and union (voxel counts, (B,) float) on the crop grid of a binary prediction given
    on the loss grid, without upsampling it.

    ``coarse``: (B, 1, L, L, L) 0/1, upsampled by ``pool`` (nearest) to the crop grid; ``targets``:
    (B, 1, L, L, L) the binary crop-grid targets average-pooled by ``pool``. A coarse voxel covers
    ``pool^3`` crop voxels, ``pool^3 * target`` of them in the object, so the counts are exact
    (multiples of ``1 / pool^3`` add up exactly in float32 for crops up to 2^21 voxels). The union is
    at least 1.
    """
    cells = float(pool**3)
    inter = (coarse * targets).flatten(1).sum(1) * cells
    union = (coarse.flatten(1).sum(1) + targets.flatten(1).sum(1)) * cells - inter
    return inter, union.clamp(min=1)


def candidate_losses(
    candidates: torch.Tensor, targets: torch.Tensor, pool: int, iou_pred: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM's loss for an ambiguous prompt: per session only the best of its M candidate masks is trained
    (the lowest Dice + BCE), the IoU head on every candidate.

    Args:
        candidates: (B, M, L, L, L) logits on the loss grid.
        targets: (B, 1, L, L, L) soft targets on the loss grid (the crop-grid targets average-pooled by
            ``pool``, :func:`full_grid_overlap`).
        pool: crop voxels per loss-grid voxel along an axis.
        iou_pred: (B, M) the decoder's IoU estimates of the candidates.

    Returns:
        (the loss: the mean over sessions of the lowest candidate loss plus the MSE of the IoU estimates
        against the candidates' IoU on the crop grid, the candidates' binary predictions (B, M, L, L, L)).
    """
    b, m = candidates.shape[:2]
    flat = candidates.reshape(b * m, 1, *candidates.shape[2:])
    flat_targets = targets.repeat_interleave(m, dim=0)
    dice = DiceLoss(sigmoid=True, reduction="none")(flat, flat_targets).reshape(b, m)
    bce = F.binary_cross_entropy_with_logits(flat, flat_targets, reduction="none").flatten(1).mean(1).reshape(b, m)
    coarse = (candidates.detach() > 0).float()
    inter, union = full_grid_overlap(coarse.reshape(b * m, 1, *candidates.shape[2:]), flat_targets, pool)
    iou_loss = F.mse_loss(iou_pred, (inter / union).reshape(b, m))
    return (dice + bce).min(dim=1).values.mean() + iou_loss, coarse


class DenseHead(nn.Module):
    """A training-only head that segments every class from a 3D SAM image embedding (:func:`dense_loss`).

    (B, C, G, G, G) embedding -> (B, classes, 4G, 4G, 4G) logits, the mask decoder's output grid: the
    decoder's own upscaling (:func:`output_upscaling`, C -> C/8 channels), then a 1^3 convolution to the
    classes.

    Args:
        channels: the embedding's channels (``Sam3DConfig.out_chans``), a multiple of 8.
        classes: output classes (background included).
    """

    def __init__(self, channels: int, classes: int = NUM_CLASSES):
        super().__init__()
        if channels < 8 or channels % 8:
            raise ValueError(f"channels must be a positive multiple of 8, got {channels}")
        self.layers = nn.Sequential(*output_upscaling(channels), nn.Conv3d(channels // 8, classes, kernel_size=1))

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.layers(embedding)


def dense_loss(logits: torch.Tensor, classes: torch.Tensor, classes_count: int = NUM_CLASSES) -> torch.Tensor:
    """Soft cross-entropy + soft Dice (softmax, every class, mean over classes and batch) of a dense
    prediction against label maps on a finer grid.

    Args:
        logits: (B, classes_count, L, L, L) on the coarse grid.
        classes: (B, S, S, S) integer label maps, S a multiple of L; each coarse voxel's target is the
            fraction of its (S / L)^3 fine voxels in each class.
        classes_count: the number of classes (logit channels).
    """
    if logits.shape[1] != classes_count:
        raise ValueError(f"logits must have {classes_count} channels, got {logits.shape[1]}")
    pool = classes.shape[-1] // logits.shape[-1]
    if pool < 1 or classes.shape[-1] != pool * logits.shape[-1]:
        raise ValueError(f"label grid {tuple(classes.shape[1:])} is not a multiple of {tuple(logits.shape[2:])}")
    soft = class_fractions(classes, logits.shape[-1], classes_count)
    return F.cross_entropy(logits, soft) + DiceLoss(softmax=True)(logits, soft)


def class_fractions(classes: torch.Tensor, size: int, classes_count: int) -> torch.Tensor:
    """(B, S, S, S) integer label maps -> (B, classes_count, L, L, L) float32, L = ``size``: per coarse
    voxel, the fraction of its (S / L)^3 fine voxels in each class (the average-pooled one-hot map,
    counted with one ``bincount`` instead of a 14-fold one-hot copy)."""
    b, s = classes.shape[0], classes.shape[-1]
    p = s // size
    cells = size**3
    blocks = classes.long().reshape(b, size, p, size, p, size, p).permute(0, 1, 3, 5, 2, 4, 6).reshape(b, cells, -1)
    key = (torch.arange(b).view(b, 1, 1) * classes_count + blocks) * cells + torch.arange(cells).view(1, cells, 1)
    counts = torch.bincount(key.flatten(), minlength=b * classes_count * cells)
    return (counts.float() / p**3).view(b, classes_count, size, size, size)
