"""Pre-training of the stand-in teachers and their zero-shot click evaluation.

Training is SAM-Med3D-style interactive: per object, the first click lies in the object, each later
click in the current error region, and the previous low-resolution logits are fed back as the mask
prompt. ``mask_rounds`` more rounds per step give a mask prompt *alone* (no clicks), as MuDuo prompts
the CT teacher with the student's softmax: the object's soft low-resolution mask, shifted, scaled
and noised like an imperfect student's (:func:`imperfect_mask`). Crops follow the teacher's input
contract (2 mm, 128^3 for the stand-ins); CT teachers see CT only, PET teachers PET only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from scipy import ndimage
from tqdm.auto import tqdm

from mudo_app.evaluation.metrics import binary_dice
from mudo_app.io.datastore import Case
from mudo_app.io.volume import Volume, resample_to_grid
from mudo_app.labels import ID_TO_NAME, LABEL_IDS, LESION
from mudo_app.models.sam3d import CropGrid, InputContract, Sam3D, Sam3DPredictor, build_sam3d
from mudo_app.prompts.clicks import first_click, next_click
from mudo_app.transforms.patches import class_voxels


@dataclass(frozen=True)
class TeacherPretrainSettings:
    modality: str  # "CT" or "PET"
    architecture: str = "standin_small"
    iterations: int = 600
    batch_size: int = 2
    clicks: int = 3
    lr: float = 4e-4
    seed: int = 0
    centre_jitter_mm: float = 12.0  # std of the crop centre around the picked object voxel
    mask_rounds: int = 1  # mask-only prompt rounds per step (0: clicks only, as the first stand-ins)


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


def _image(case: Case, modality: str) -> Volume:
    return case.ct if modality == "CT" else case.pet


def sample_crop(
    case: Case,
    modality: str,
    contract: InputContract,
    rng: np.random.Generator,
    jitter_mm: float = 12.0,
    voxels: dict[int, np.ndarray] | None = None,
):
    """A training crop around a random object: (normalised image (S, S, S), binary target, class id).

    ``voxels``: :func:`class_voxels` of the case's label, precomputed once per case.
    """
    label = case.require_label()
    voxels = class_voxels(label.array) if voxels is None else voxels
    cls = int(rng.choice(list(voxels)))
    idx = voxels[cls]
    vox = idx[rng.integers(len(idx))]
    world = (label.affine @ [*vox, 1])[:3] + rng.normal(scale=jitter_mm, size=3)
    crop = CropGrid(label.affine, world, contract.spacing_mm, contract.crop)
    image = contract.normalise(crop.sample(_image(case, modality), contract.fill))
    target = resample_to_grid(label, (crop.size,) * 3, crop.affine, order=0).array == cls
    return image, target, cls


def _clicks_tensor(clicks: list[list[tuple]]):
    coords = torch.tensor([[c for c, _ in row] for row in clicks], dtype=torch.float32)
    labels = torch.tensor([[lab for _, lab in row] for row in clicks], dtype=torch.int64)
    return coords, labels


def pretrain_teacher(
    cases: Sequence[Case], contract: InputContract, settings: TeacherPretrainSettings, progress: bool = True
) -> Sam3D:
    """Train a stand-in teacher from scratch on labelled ``cases``; returns it in eval mode."""
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    model = build_sam3d(settings.architecture).train()
    voxels = [class_voxels(c.require_label().array) for c in cases]
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=settings.lr, total_steps=settings.iterations, pct_start=0.1)
    dice = DiceLoss(sigmoid=True)
    bar = tqdm(
        range(settings.iterations), desc=f"stand-in {settings.modality} teacher", unit="it", disable=not progress
    )
    for _ in bar:
        crops = []
        for _ in range(settings.batch_size):
            i = int(rng.integers(len(cases)))
            crops.append(sample_crop(cases[i], settings.modality, contract, rng, settings.centre_jitter_mm, voxels[i]))
        images = torch.from_numpy(np.stack([c[0] for c in crops]))[:, None]
        targets_np = [c[1] for c in crops]
        targets = torch.from_numpy(np.stack(targets_np)).float()[:, None]
        emb = model.image_encoder(images)
        clicks = [[(tuple(first_click(t, rng).tolist()), 1)] for t in targets_np]
        mask_prompt, loss = None, torch.zeros(())
        for step in range(settings.clicks):
            logits, iou = model.decode(emb, points=_clicks_tensor(clicks), mask=mask_prompt)
            up = F.interpolate(logits, size=images.shape[2:], mode="trilinear", align_corners=False)
            pred = up.detach() > 0
            inter = (pred & (targets > 0)).flatten(1).sum(1).float()
            union = (pred | (targets > 0)).flatten(1).sum(1).float().clamp(min=1)
            loss = (
                loss
                + dice(up, targets)
                + F.binary_cross_entropy_with_logits(up, targets)
                + F.mse_loss(iou[:, 0], inter / union)
            )
            mask_prompt = logits.detach()
            if step + 1 < settings.clicks:
                for b, t in enumerate(targets_np):
                    nxt = next_click(t, pred[b, 0].numpy(), rng)
                    clicks[b].append((tuple(nxt[0].tolist()), nxt[1]) if nxt else ((0, 0, 0), -1))
        for _ in range(settings.mask_rounds):
            logits, _ = model.decode(emb, points=None, mask=imperfect_mask(targets, rng))
            up = F.interpolate(logits, size=images.shape[2:], mode="trilinear", align_corners=False)
            loss = loss + dice(up, targets) + F.binary_cross_entropy_with_logits(up, targets)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.detach().item() / (settings.clicks + settings.mask_rounds):.3f}")
    return model.eval()


def click_objects(label: np.ndarray):
    """(class id, object mask) pairs to evaluate: each organ class as one object, each lesion
    (18-connected component of label 13) as its own object."""
    for cls in LABEL_IDS:
        mask = label == cls
        if not mask.any():
            continue
        if cls != LESION:
            yield cls, mask
            continue
        comps, n = ndimage.label(mask, structure=ndimage.generate_binary_structure(3, 2))
        for i in range(1, n + 1):
            yield cls, comps == i


def evaluate_clicks(
    model: Sam3D,
    contract: InputContract,
    cases: Sequence[Case],
    modality: str,
    n_clicks: Sequence[int] = (1, 3),
    progress: bool = True,
) -> dict[int, dict[str, float]]:
    """Zero-shot Dice per class after k clicks (deterministic clicks), on the full case grid.

    Each object (an organ, or one lesion) gets its own session: first click at the object's deepest
    voxel, later clicks at the deepest voxel of the largest error, the previous low-res logits fed back.
    Returns ``{k: {class name: mean Dice over objects}}``.
    """
    pred = Sam3DPredictor(model, contract)
    scores: dict[int, dict[str, list[float]]] = {k: {} for k in n_clicks}
    for case in tqdm(cases, desc=f"evaluate {modality} teacher", unit="case", disable=not progress):
        vol = _image(case, modality)
        pred.set_image(vol.array, vol.affine, modality)
        for cls, target in click_objects(case.label.array):
            clicks, labels, mask_input = [first_click(target).tolist()], [1], None
            for k in range(1, max(n_clicks) + 1):
                res = pred.predict(points=clicks, labels=labels, mask_input=mask_input)
                if k in scores:
                    scores[k].setdefault(ID_TO_NAME[cls], []).append(binary_dice(res.mask, target))
                nxt = next_click(target, res.mask)
                if nxt is None:
                    nxt = (np.array(clicks[-1]), labels[-1])
                clicks.append(nxt[0].tolist())
                labels.append(int(nxt[1]))
                mask_input = res.low_res_logits
    return {k: {name: float(np.mean(v)) for name, v in per.items()} for k, per in scores.items()}
