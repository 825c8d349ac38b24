"""Pre-training of the stand-in teachers (their losses: :mod:`mudo_app.train.teacher_losses`; their evaluation:
:mod:`mudo_app.train.teacher_eval`).

Training is SAM-Med3D-style interactive: per object, the first click lies in the object, each later
click in the current error region, and the previous low-resolution logits are fed back as the mask
prompt. As SAM trains on many masks per image, one crop may carry several objects
(``objects_per_crop``): each its own click session on the crop's one embedding, so the decoder learns
which structure a click belongs to from every encoder pass. ``mask_rounds`` more rounds per step give
a mask prompt *alone* (no clicks), as MuDuo prompts the CT teacher with the student's softmax: the
object's soft low-resolution mask, shifted, scaled and noised like an imperfect student's
(:func:`~mudo_app.train.teacher_losses.imperfect_mask`). Crops follow the teacher's input contract (2 mm,
128^3 for the stand-ins); CT teachers see CT only, PET teachers PET only.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.losses import DiceLoss
from scipy import ndimage
from tqdm.auto import tqdm

from mudo_app.evaluation.autopet import CONNECTIVITY_18
from mudo_app.io.datastore import Case
from mudo_app.io.volume import Volume, resample_to_grid
from mudo_app.labels import LESION
from mudo_app.models.sam3d import CropGrid, InputContract, Sam3D, build_sam3d
from mudo_app.train import teacher_state
from mudo_app.train.teacher_losses import DenseHead, click_loss, dense_loss
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
    warm-up cosine schedule), before the ``iterations`` click steps; 0: none. ``decoder_iterations``: a last
    stage of that many click steps (the same losses) training the prompt encoder and mask decoder alone, the
    image encoder frozen (its own AdamW at ``decoder_lr``, warm-up cosine), so the decoder learns to use an
    encoder that knows the anatomy; 0: none.
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
    decoder_iterations: int = 0
    decoder_lr: float = 4e-4

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
        for name in ("dense_pretrain_iterations", "decoder_iterations"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("lr", "dense_pretrain_lr", "decoder_lr"):
            if not (getattr(self, name) > 0 and math.isfinite(getattr(self, name))):
                raise ValueError(f"{name} must be a finite number > 0, got {getattr(self, name)}")
        if self.loss_size < 8 or 128 % self.loss_size:
            raise ValueError(f"loss_size must divide the 128-voxel crop (8..128), got {self.loss_size}")


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


LATER_STAGE_FIELDS = ("decoder_iterations", "decoder_lr")  # a state of an earlier stage may differ in these
STAGE_TITLES = {"dense": ", dense pre-training", "clicks": "", "decoder": ", decoder (image encoder frozen)"}


class _PretrainRun:
    """What the stages of one pre-training run share: the model and the training-only dense head (when the
    recipe uses one), the crops' random generator, the click losses and the resumable state file; the
    steps of each stage, and the loop that runs a stage."""

    def __init__(self, cases, contract, settings: TeacherPretrainSettings, progress: bool, state_file):
        torch.manual_seed(settings.seed)
        self.rng = np.random.default_rng(settings.seed)
        self.model = build_sam3d(settings.architecture).train()
        dense = settings.dense_weight > 0 or settings.dense_pretrain_iterations > 0
        self.head = DenseHead(self.model.config.out_chans).train() if dense else None
        self.cases, self.contract, self.settings = cases, contract, settings
        self.objects = [TrainingObjects(c) for c in cases]
        self.progress, self.state_file = progress, state_file
        self.dice = DiceLoss(sigmoid=True)
        self.prompts = settings.clicks + settings.mask_rounds  # the shown click loss is per prompt
        self.seconds = 0.0  # training seconds of the stages run so far, all sessions

    def batch(self, count: int) -> tuple[torch.Tensor, list]:
        """(B, 1, S, S, S) images of ``settings.batch_size`` crops (:func:`_sample_batch`) and the crops."""
        crops = _sample_batch(self.cases, self.objects, self.contract, self.settings, self.rng, count)
        return torch.from_numpy(np.stack([c[0] for c in crops]))[:, None], crops

    def head_loss(self, crop_emb: torch.Tensor, crops: list) -> torch.Tensor:
        if self.head is None:
            raise RuntimeError("this recipe has no dense head")
        return dense_loss(self.head(crop_emb), torch.from_numpy(np.stack([c[3] for c in crops])))

    def dense_step(self) -> tuple[torch.Tensor, float]:
        images, crops = self.batch(1)
        loss = self.head_loss(self.model.image_encoder(images), crops)
        return loss, loss.detach().item()

    def click_step(self, train_encoder: bool = True) -> tuple[torch.Tensor, float]:
        """The click and mask-prompt losses of one batch (:func:`click_loss`), plus the weighted dense loss
        when the recipe has one; ``train_encoder`` False (the decoder stage): the embedding is computed
        without gradient and the dense loss left out."""
        k = self.settings.objects_per_crop
        images, crops = self.batch(k)
        with torch.set_grad_enabled(train_encoder):
            crop_emb = self.model.image_encoder(images)  # one embedding per crop, shared by its sessions
        loss = torch.zeros(())
        if train_encoder and self.settings.dense_weight > 0:
            loss = self.settings.dense_weight * self.head_loss(crop_emb, crops)
        targets_np = [t for c in crops for t in c[1]]  # crop-major: sessions of crop b at b * K ...
        loss = loss + click_loss(
            self.model, crop_emb.repeat_interleave(k, dim=0), targets_np, self.settings, self.rng, self.dice
        )
        return loss, loss.detach().item() / self.prompts

    def run_stage(self, stage: str, total: int, params: list, lr: float, step, state: dict | None) -> None:
        """``total`` optimiser steps of ``stage`` on ``params`` (AdamW at ``lr``, weight decay 1e-4, warm-up
        cosine), each on the loss ``step()`` returns with the loss to show; resumed from ``state`` (this
        stage's, or None). Writes the resumable state every ``settings.checkpoint_every`` steps and at the
        end (the dense stage's end also to :func:`dense_stage_path`); adds the stage's time to ``seconds``."""
        model, head, rng, settings = self.model, self.head, self.rng, self.settings
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(total))
        start = 0
        if state is not None:
            start, self.seconds = teacher_state.restore_state(state, model, head, opt, sched, rng)
        earlier, t0 = self.seconds, time.perf_counter()
        bar = tqdm(
            range(start, total),
            initial=start,
            total=total,
            desc=f"stand-in {settings.modality} teacher{STAGE_TITLES[stage]}",
            unit="it",
            disable=not self.progress,
        )
        for it in bar:
            loss, shown = step()
            _optimiser_step(loss, params, opt, sched)
            bar.set_postfix(loss=f"{shown:.3f}")
            done = it + 1
            self.seconds = earlier + time.perf_counter() - t0
            if self.state_file is not None and (done % settings.checkpoint_every == 0 or done == total):
                paths = [self.state_file]
                if stage == "dense" and done == total:  # first: a run stopped between the writes redoes the step
                    paths.insert(0, dense_stage_path(self.state_file))
                for path in paths:
                    teacher_state.save_state(path, stage, done, self.seconds, model, head, opt, sched, rng, settings)


def pretrain_teacher(
    cases: Sequence[Case],
    contract: InputContract,
    settings: TeacherPretrainSettings,
    progress: bool = True,
    state_path: str | os.PathLike[str] | None = None,
) -> Sam3D:
    """Train a stand-in teacher from scratch on labelled ``cases``; returns it in eval mode.

    The stages, in order: dense pre-training (``settings.dense_pretrain_iterations`` steps, when > 0),
    the click steps (``settings.iterations``), the decoder stage (``settings.decoder_iterations``, when
    > 0).

    Args:
        cases: labelled training cases (the foundation corpus).
        contract: the teacher's input contract (crop spacing, size, normalisation).
        settings: the recipe.
        progress: show a progress bar.
        state_path: where a resumable training state is written every ``settings.checkpoint_every``
            iterations. When the file exists the run continues from it (it must come from the same
            settings, except that a state of an earlier stage may differ in the decoder stage's
            :data:`LATER_STAGE_FIELDS`, so a finished run can be extended by that stage), drawing the same
            crops and clicks as an uninterrupted run; each stage's state resumes that stage, then the
            next ones follow. The state at the end of the dense stage is also kept in
            :func:`dense_stage_path`.
    """
    state_file = None if state_path is None else Path(state_path)
    run = _PretrainRun(cases, contract, settings, progress, state_file)
    model, head = run.model, run.head
    state = teacher_state.load_state(state_file, settings, LATER_STAGE_FIELDS)
    stage = None if state is None else state["stage"]

    def own(name: str) -> dict | None:  # the saved state when it is this stage's
        return state if stage == name else None

    if settings.dense_pretrain_iterations > 0 and stage in (None, "dense") and head is not None:
        params = list(model.image_encoder.parameters()) + list(head.parameters())
        total = settings.dense_pretrain_iterations
        run.run_stage("dense", total, params, settings.dense_pretrain_lr, run.dense_step, own("dense"))
    if stage in (None, "dense", "clicks"):
        params = list(model.parameters())
        params += [] if head is None or settings.dense_weight == 0 else list(head.parameters())
        run.run_stage("clicks", settings.iterations, params, settings.lr, run.click_step, own("clicks"))
    if settings.decoder_iterations > 0:
        model.image_encoder.eval()
        params = list(model.prompt_encoder.parameters()) + list(model.mask_decoder.parameters())
        total = settings.decoder_iterations
        step = functools.partial(run.click_step, train_encoder=False)
        run.run_stage("decoder", total, params, settings.decoder_lr, step, own("decoder"))
    return model.eval()
