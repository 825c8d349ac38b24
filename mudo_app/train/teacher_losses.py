"""The losses of stand-in teacher pre-training (:func:`mudo_app.train.teachers.pretrain_teacher`).

Overlap counts on the crop grid from a coarse prediction (:func:`full_grid_overlap`), SAM's loss for
the multimask candidates (:func:`candidate_losses`), and the auxiliary dense segmentation of an image
embedding (:class:`DenseHead`, :func:`dense_loss`, :func:`class_fractions`); the losses of one step's
simulated click sessions and mask prompts (:func:`click_loss`, with :func:`imperfect_mask`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import nn

from mudo_app.labels import NUM_CLASSES
from mudo_app.models.sam3d.mask_decoder import output_upscaling
from mudo_app.prompts.clicks import first_click, next_click


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


def imperfect_mask(targets: torch.Tensor, rng: np.random.Generator, max_shift: int = 2) -> torch.Tensor:
    """(B, 1, S, S, S) binary targets -> (B, 1, S/4, S/4, S/4) probabilities like a student's softmax:
    the soft mask at the decoder's resolution, rolled by up to ``max_shift`` low-res voxels per axis,
    scaled by U(0.5, 1) and given uniform noise of amplitude U(0, 0.3), clipped to [0, 1]."""
    soft = F.avg_pool3d(targets, 4)
    out = []
    for b in range(soft.shape[0]):
        shift = [int(v) for v in rng.integers(-max_shift, max_shift + 1, size=3)]
        m = torch.roll(soft[b], shifts=shift, dims=(1, 2, 3)) * float(rng.uniform(0.5, 1.0))
        noise = torch.from_numpy(rng.random(m.shape, dtype=np.float32)) * float(rng.uniform(0.0, 0.3))
        out.append((m + noise).clamp(0, 1))
    return torch.stack(out)


def clicks_tensor(clicks: list[list[tuple]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per session, its clicks ``[((i, j, k), label), ...]`` -> (N, P, 3) float coordinates, (N, P) labels."""
    coords = torch.tensor([[c for c, _ in row] for row in clicks], dtype=torch.float32)
    labels = torch.tensor([[lab for _, lab in row] for row in clicks], dtype=torch.int64)
    return coords, labels


def click_loss(model, emb, targets_np, settings, rng, dice) -> torch.Tensor:
    """The click and mask-prompt losses of one step: ``settings.clicks`` simulated clicks per session
    (the previous logits fed back as the mask prompt), then ``settings.mask_rounds`` imperfect mask
    prompts alone, each scored by Dice + cross-entropy on the ``settings.loss_size``^3 grid (clicks also by
    the IoU head's squared error against the crop-grid IoU; with ``settings.multimask`` the one-click step
    also by :func:`candidate_losses`). ``emb``: (N, C, e, e, e) the embedding of each session's crop;
    ``targets_np``: N binary (S, S, S) targets on the crop grid, in the same order; ``settings``: the
    recipe (:class:`~mudo_app.train.teachers.TeacherPretrainSettings`); ``rng`` draws the clicks and the
    imperfect masks; ``dice``: ``monai.losses.DiceLoss(sigmoid=True)``."""
    size = (settings.loss_size,) * 3
    pool = targets_np[0].shape[0] // settings.loss_size
    full = torch.from_numpy(np.stack(targets_np)).float()[:, None]
    targets = F.avg_pool3d(full, pool) if pool > 1 else full  # soft targets on the loss grid
    clicks = [[(tuple(first_click(t, rng).tolist()), 1)] for t in targets_np]
    mask_prompt, loss = None, torch.zeros(())
    for step in range(settings.clicks):
        multimask = settings.multimask and step == 0
        if multimask:  # one click: the single output (index 0) and the three candidates
            every, every_iou = model.decode_all(emb, points=clicks_tensor(clicks), mask=mask_prompt)
            logits, iou = every[:, :1], every_iou[:, :1]
        else:
            logits, iou = model.decode(emb, points=clicks_tensor(clicks), mask=mask_prompt)
        up = F.interpolate(logits, size=size, mode="trilinear", align_corners=False)
        coarse = (up.detach() > 0).float()  # the prediction on the loss grid, nearest-upsampled below
        inter, union = full_grid_overlap(coarse, targets, pool)
        loss = (
            loss
            + dice(up, targets)
            + F.binary_cross_entropy_with_logits(up, targets)
            + F.mse_loss(iou[:, 0], inter / union)
        )
        mask_prompt = logits.detach()
        if multimask:
            cand = F.interpolate(every[:, 1:], size=size, mode="trilinear", align_corners=False)
            cand_loss, cand_coarse = candidate_losses(cand, targets, pool, every_iou[:, 1:])
            loss = loss + cand_loss
            best = every_iou[:, 1:].detach().argmax(1)  # as at inference: the highest predicted IoU
            rows = torch.arange(len(best))
            mask_prompt = every[rows, 1 + best, None].detach()
            coarse = cand_coarse[rows, best, None]
        if step + 1 < settings.clicks:
            pred = F.interpolate(coarse, scale_factor=pool, mode="nearest") > 0.5
            for b, t in enumerate(targets_np):
                nxt = next_click(t, pred[b, 0].numpy(), rng)
                clicks[b].append((tuple(nxt[0].tolist()), nxt[1]) if nxt else ((0, 0, 0), -1))
    for _ in range(settings.mask_rounds):
        logits, _ = model.decode(emb, points=None, mask=imperfect_mask(full, rng))
        up = F.interpolate(logits, size=size, mode="trilinear", align_corners=False)
        loss = loss + dice(up, targets) + F.binary_cross_entropy_with_logits(up, targets)
    return loss
