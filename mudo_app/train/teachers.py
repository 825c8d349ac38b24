"""Pre-training of the stand-in teachers (their losses: :mod:`mudo_app.train.teacher_losses`; their evaluation:
:mod:`mudo_app.train.teacher_eval`).

Training is SAM-Med3D-style interactive: per object, the first click lies in the object, each later
click in the current error region, and the previous low-resolution logits are fed back as the mask
prompt. As SAM trains on many masks per image, one crop may carry several objects
(``objects_per_crop``): each its own click session on the crop's one embedding, so the decoder learns
which structure a click belongs to from every encoder pass. ``mask_rounds`` more rounds per step give
a mask prompt *alone* (no clicks), as MuDuo prompts the CT teacher with the student's softmax: the
object's soft low-resolution mask, shifted, scaled and noised like an imperfect student's
(:func:`imperfect_mask`). Crops follow the teacher's input contract (2 mm, 128^3 for the stand-ins);
CT teachers see CT only, PET teachers PET only.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from scipy import ndimage
from tqdm.auto import tqdm

from mudo_app.evaluation.autopet import CONNECTIVITY_18
from mudo_app.io.datastore import Case
from mudo_app.io.volume import Volume, resample_to_grid
from mudo_app.labels import LESION
from mudo_app.models.sam3d import CropGrid, InputContract, Sam3D, build_sam3d
from mudo_app.prompts.clicks import first_click, next_click
from mudo_app.train import teacher_state
from mudo_app.train.teacher_losses import DenseHead, candidate_losses, dense_loss, full_grid_overlap
from mudo_app.train.teacher_state import dense_stage_path
from mudo_app.transforms.patches import class_voxels


@dataclass(frozen=True)
class TeacherPretrainSettings:
    """One stand-in teacher's training recipe.

    ``lesion_share``: the fraction of training objects that are single lesions (18-connected components
    of label 13; the rest are organs, a present class drawn uniformly), so that lesions, small and rare,
    get their share of crops. ``loss_size``: the side (voxels) of the grid the loss is computed on (the
    crop's 128^3 at 2 mm, average-pooled; 64 = 4 mm, the corpus's typical acquisition grid), so that
    most of a step is not spent upsampling logits. ``checkpoint_every``: iterations between resumable
    training states (:func:`pretrain_teacher` ``state_path``). ``objects_per_crop``: click sessions per
    crop, the picked object and others the crop holds (:func:`sample_crop`); 1 is the picked
    object alone, as the first stand-ins were trained. ``multimask``: the one-click step also trains the
    decoder's three multimask candidates as SAM does (:func:`candidate_losses`: the best candidate per
    session, the IoU head on all), and the second click and mask prompt come from the candidate with the
    highest predicted IoU, as :meth:`Sam3DPredictor.predict` picks it; the single output (index 0) is
    trained on every step as before. False: the candidates stay untrained, as in the first stand-ins.
    ``dense_weight``: weight of the dense loss (:func:`dense_loss` of a training-only :class:`DenseHead` on
    each crop's embedding, every class of the crop's label map) added to the click losses.
    ``dense_pretrain_iterations``: a first stage of that many steps training the image encoder and the
    head on the dense loss alone (no prompts, no decoder; its own AdamW at ``dense_pretrain_lr`` with a
    warm-up cosine schedule), before the ``iterations`` click steps; 0: none.
    """

    modality: str  # "CT" or "PET"
    architecture: str = "standin_small"
    iterations: int = 600
    batch_size: int = 2
    clicks: int = 3
    lr: float = 4e-4
    seed: int = 0
    centre_jitter_mm: float = 12.0  # std of the crop centre around the picked object voxel
    mask_rounds: int = 1  # mask-only prompt rounds per step (0: clicks only, as the first stand-ins)
    lesion_share: float = 0.25
    loss_size: int = 64
    checkpoint_every: int = 250
    objects_per_crop: int = 1
    multimask: bool = False
    dense_weight: float = 0.0
    dense_pretrain_iterations: int = 0
    dense_pretrain_lr: float = 1e-3

    def __post_init__(self) -> None:
        if self.modality not in ("CT", "PET"):
            raise ValueError(f"modality must be 'CT' or 'PET', got {self.modality!r}")
        for name in ("iterations", "batch_size", "clicks", "checkpoint_every", "objects_per_crop"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.lesion_share <= 1:
            raise ValueError(f"lesion_share must lie in [0, 1], got {self.lesion_share}")
        if not (self.dense_weight >= 0 and math.isfinite(self.dense_weight)):
            raise ValueError(f"dense_weight must be a finite number >= 0, got {self.dense_weight}")
        if self.dense_pretrain_iterations < 0:
            raise ValueError(f"dense_pretrain_iterations must be >= 0, got {self.dense_pretrain_iterations}")
        if not (self.dense_pretrain_lr > 0 and math.isfinite(self.dense_pretrain_lr)):
            raise ValueError(f"dense_pretrain_lr must be a finite number > 0, got {self.dense_pretrain_lr}")
        if self.loss_size < 8 or 128 % self.loss_size:
            raise ValueError(f"loss_size must divide the 128-voxel crop (8..128), got {self.loss_size}")


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


def modality_volume(case: Case, modality: str) -> Volume:
    """The case's CT (``"CT"``) or PET (``"PET"``): what a teacher of that modality sees."""
    return case.ct if modality == "CT" else case.pet


LESION_OBJECT_BASE = 100  # object ids of lesion components: 100, 101, ... (organs keep their class id)


def object_map(label: np.ndarray) -> np.ndarray:
    """(X, Y, Z) int16 map of click objects: each organ class keeps its id, lesion component k (an
    18-connected component of label 13, in scan order) gets ``LESION_OBJECT_BASE + k``."""
    out = label.astype(np.int16)
    comps, n = ndimage.label(label == LESION, structure=CONNECTIVITY_18)
    out[comps > 0] = LESION_OBJECT_BASE + comps[comps > 0] - 1
    return out


def object_classes(ids: np.ndarray) -> np.ndarray:
    """Object ids (:func:`object_map`, any shape) -> the product's class ids, uint8: a lesion component's
    id becomes :data:`~mudo_app.labels.LESION`, an organ keeps its own."""
    return np.where(ids >= LESION_OBJECT_BASE, LESION, ids).astype(np.uint8)


class TrainingObjects:
    """The click objects of one labelled case (:func:`object_map`), each with its voxel indices."""

    def __init__(self, case: Case):
        self.map = Volume(object_map(case.require_label().array), case.require_label().affine)
        self.voxels = {k: v.astype(np.int16) for k, v in class_voxels(self.map.array).items()}
        self.organs = [k for k in self.voxels if k < LESION_OBJECT_BASE]
        self.lesions = [k for k in self.voxels if k >= LESION_OBJECT_BASE]

    def pick(self, rng: np.random.Generator, lesion_share: float) -> int:
        """An object id: a lesion with probability ``lesion_share`` (when the case has one), else an
        organ (uniform over the present ones; a lesion when the case has no organ)."""
        lesion = bool(self.lesions) and (not self.organs or rng.random() < lesion_share)
        pool = self.lesions if lesion else self.organs
        return int(pool[int(rng.integers(len(pool)))])


MIN_OBJECT_VOXELS = 27  # an object must hold this many voxels of the crop (2 mm: 0.2 ml) to be clicked


def sample_crop(
    case: Case,
    modality: str,
    contract: InputContract,
    rng: np.random.Generator,
    jitter_mm: float = 12.0,
    objects: TrainingObjects | None = None,
    lesion_share: float = 0.25,
    count: int = 1,
) -> tuple[np.ndarray, list[np.ndarray], list[int], np.ndarray]:
    """A training crop around a random object and ``count`` click targets in it.

    Returns ``(normalised image (S, S, S), [binary target (S, S, S)] * count, [class id] * count, label
    map (S, S, S) uint8)``, all on the crop grid in its own axis order; the label map holds the product's
    class ids (:mod:`mudo_app.labels`; 0 outside the case). The first target is the picked object (one
    organ, or one lesion component) the crop is centred near; the others are further objects of the crop
    with at least :data:`MIN_OBJECT_VOXELS` voxels in it, drawn without replacement; when the crop holds
    too few, the picked object is repeated (another session: another first click). ``objects``: the case's
    :class:`TrainingObjects`, computed once per case. The draws for ``count`` 1 come first, so a crop
    and its first target do not depend on ``count``.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    objects = TrainingObjects(case) if objects is None else objects
    obj = objects.pick(rng, lesion_share)
    idx = objects.voxels[obj]
    vox = idx[rng.integers(len(idx))].astype(np.float64)
    world = (objects.map.affine @ [*vox, 1])[:3] + rng.normal(scale=jitter_mm, size=3)
    crop = CropGrid(objects.map.affine, world, contract.spacing_mm, contract.crop)
    image = contract.normalise(crop.sample(modality_volume(case, modality), contract.fill))
    on_crop = resample_to_grid(objects.map, (crop.size,) * 3, crop.affine, order=0).array
    ids = [obj]
    if count > 1:
        sizes = np.bincount(on_crop.ravel())  # object ids >= 0; outside the case is 0 (the fill)
        others = [int(k) for k in np.flatnonzero(sizes >= MIN_OBJECT_VOXELS) if k not in (0, obj)]
        take = min(count - 1, len(others))
        ids += [others[int(i)] for i in rng.choice(len(others), size=take, replace=False)] if take else []
        ids += [obj] * (count - len(ids))
    targets = [on_crop == k for k in ids]
    return image, targets, object_classes(np.array(ids)).tolist(), object_classes(on_crop)


def _clicks_tensor(clicks: list[list[tuple]]):
    coords = torch.tensor([[c for c, _ in row] for row in clicks], dtype=torch.float32)
    labels = torch.tensor([[lab for _, lab in row] for row in clicks], dtype=torch.int64)
    return coords, labels


def warmup_cosine(total: int, warmup_fraction: float = 0.05):
    """The learning-rate factor per step: linear warm-up over ``warmup_fraction`` of ``total`` steps
    (at least one), then cosine decay to 0 at ``total``."""
    warm = max(1, int(round(warmup_fraction * total)))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    return factor


def _optimiser_step(loss: torch.Tensor, params, opt, sched) -> None:
    """Back-propagate ``loss``, clip the gradient norm of ``params`` to 1, step the optimiser and schedule."""
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    sched.step()


def _sample_batch(cases, objects, contract, settings, rng, count: int) -> list:
    """``settings.batch_size`` crops (:func:`sample_crop`), each of a uniformly drawn case."""
    crops = []
    for _ in range(settings.batch_size):
        i = int(rng.integers(len(cases)))
        crops.append(
            sample_crop(
                cases[i],
                settings.modality,
                contract,
                rng,
                settings.centre_jitter_mm,
                objects[i],
                settings.lesion_share,
                count,
            )
        )
    return crops


def _dense_stage(model, head, cases, objects, contract, settings, rng, state_file, state, progress) -> float:
    """The dense pre-training stage (``settings.dense_pretrain_iterations`` steps of the image encoder and
    ``head`` on :func:`dense_loss` alone), resumed from ``state`` when it is this stage's; returns the
    training seconds so far (all sessions)."""
    total = settings.dense_pretrain_iterations
    params = list(model.image_encoder.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=settings.dense_pretrain_lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(total))
    start, earlier_seconds = (
        (0, 0.0) if state is None else teacher_state.restore_state(state, model, head, opt, sched, rng)
    )
    t0 = time.perf_counter()
    bar = tqdm(
        range(start, total),
        initial=start,
        total=total,
        desc=f"stand-in {settings.modality} teacher, dense pre-training",
        unit="it",
        disable=not progress,
    )
    for it in bar:
        crops = _sample_batch(cases, objects, contract, settings, rng, 1)
        images = torch.from_numpy(np.stack([c[0] for c in crops]))[:, None]
        label_maps = torch.from_numpy(np.stack([c[3] for c in crops]))
        loss = dense_loss(head(model.image_encoder(images)), label_maps)
        _optimiser_step(loss, params, opt, sched)
        bar.set_postfix(loss=f"{loss.detach().item():.3f}")
        done = it + 1
        if state_file is not None and (done % settings.checkpoint_every == 0 or done == total):
            seconds = earlier_seconds + time.perf_counter() - t0
            if done == total:  # first: a run stopped between the two writes redoes the last step
                kept = dense_stage_path(state_file)
                teacher_state.save_state(kept, "dense", done, seconds, model, head, opt, sched, rng, settings)
            teacher_state.save_state(state_file, "dense", done, seconds, model, head, opt, sched, rng, settings)
    return earlier_seconds + time.perf_counter() - t0


def pretrain_teacher(
    cases: Sequence[Case],
    contract: InputContract,
    settings: TeacherPretrainSettings,
    progress: bool = True,
    state_path: str | os.PathLike[str] | None = None,
) -> Sam3D:
    """Train a stand-in teacher from scratch on labelled ``cases``; returns it in eval mode.

    Args:
        cases: labelled training cases (the foundation corpus).
        contract: the teacher's input contract (crop spacing, size, normalisation).
        settings: the recipe.
        progress: show a progress bar.
        state_path: where a resumable training state is written every ``settings.checkpoint_every``
            iterations. When the file exists the run continues from it (it must come from the same
            settings), drawing the same crops and clicks as an uninterrupted run; a state of the dense
            pre-training stage resumes that stage, then the click stage follows. The state at the end of
            the dense stage is also kept in :func:`dense_stage_path`.
    """
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    model = build_sam3d(settings.architecture).train()
    dense = settings.dense_weight > 0 or settings.dense_pretrain_iterations > 0
    head = DenseHead(model.config.out_chans).train() if dense else None
    state_file = None if state_path is None else Path(state_path)
    state = teacher_state.load_state(state_file, settings)
    objects = [TrainingObjects(c) for c in cases]
    earlier_seconds = 0.0
    if settings.dense_pretrain_iterations > 0 and (state is None or state["stage"] == "dense"):
        earlier_seconds = _dense_stage(
            model, head, cases, objects, contract, settings, rng, state_file, state, progress
        )
        state = None  # the click stage starts afresh from the pre-trained encoder
    params = list(model.parameters()) + ([] if head is None or settings.dense_weight == 0 else list(head.parameters()))
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(settings.iterations))
    start = 0
    if state is not None:
        start, earlier_seconds = teacher_state.restore_state(state, model, head, opt, sched, rng)
    t0 = time.perf_counter()
    dice = DiceLoss(sigmoid=True)
    size = (settings.loss_size,) * 3
    pool = contract.crop // settings.loss_size
    bar = tqdm(
        range(start, settings.iterations),
        initial=start,
        total=settings.iterations,
        desc=f"stand-in {settings.modality} teacher",
        unit="it",
        disable=not progress,
    )
    for it in bar:
        crops = _sample_batch(cases, objects, contract, settings, rng, settings.objects_per_crop)
        images = torch.from_numpy(np.stack([c[0] for c in crops]))[:, None]
        targets_np = [t for c in crops for t in c[1]]  # crop-major: sessions of crop b at b * K ...
        full = torch.from_numpy(np.stack(targets_np)).float()[:, None]
        targets = F.avg_pool3d(full, pool) if pool > 1 else full  # soft targets on the loss grid
        # one embedding per crop, shared by its sessions
        crop_emb = model.image_encoder(images)
        emb = crop_emb.repeat_interleave(settings.objects_per_crop, dim=0)
        clicks = [[(tuple(first_click(t, rng).tolist()), 1)] for t in targets_np]
        mask_prompt, loss = None, torch.zeros(())
        if settings.dense_weight > 0 and head is not None:
            label_maps = torch.from_numpy(np.stack([c[3] for c in crops]))
            loss = settings.dense_weight * dense_loss(head(crop_emb), label_maps)
        for step in range(settings.clicks):
            multimask = settings.multimask and step == 0
            if multimask:  # one click: the single output (index 0) and the three candidates
                every, every_iou = model.decode_all(emb, points=_clicks_tensor(clicks), mask=mask_prompt)
                logits, iou = every[:, :1], every_iou[:, :1]
            else:
                logits, iou = model.decode(emb, points=_clicks_tensor(clicks), mask=mask_prompt)
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
        _optimiser_step(loss, params, opt, sched)
        bar.set_postfix(loss=f"{loss.detach().item() / (settings.clicks + settings.mask_rounds):.3f}")
        done = it + 1
        if state_file is not None and (done % settings.checkpoint_every == 0 or done == settings.iterations):
            seconds = earlier_seconds + time.perf_counter() - t0
            teacher_state.save_state(state_file, "clicks", done, seconds, model, head, opt, sched, rng, settings)
    return model.eval()
