"""The MuDuo consistency term of one iteration (MUDUO_METHOD.md, step 2), batch-sharded for DDP.

Every rank knows the whole (global) batch's random draws and computes only its own slice of samples;
the consensus filter ranks the *global* batch (IoUs are all-gathered, a few numbers per class), and
the loss is normalised by the global count of kept samples, so the gradient DDP averages equals the
gradient of single-process training on the same batch.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mudo_app.distill.consensus import ConsensusSettings, fuse, point_prompts, select, soft_dice, soft_iou
from mudo_app.distill.teacher_bank import TeacherBank
from mudo_app.io.volume import Volume
from mudo_app.runtime.distributed import Shard


@dataclass
class UnlabelledPatch:
    """One unlabelled sample in the teachers' (un-augmented) frame."""

    key: Hashable  # (case index, position index): identifies the cached embeddings
    ct: Volume  # raw HU, the case grid
    pet: Volume  # raw SUV, the case grid
    centre_world: np.ndarray
    prompt_region: np.ndarray | None  # (Pi, Pj, Pk) int: the frozen prompt network's argmax (None: no PET teacher)
    point_seed: Sequence[int]  # seeds this sample's K point draw (identical on every rank)


def muduo_consistency(
    student_prob: torch.Tensor,
    samples: list[UnlabelledPatch],
    class_ids: Sequence[int],
    ct_bank: TeacherBank | None,
    pet_bank: TeacherBank | None,
    settings: ConsensusSettings,
    k_points: int,
    alphas: np.ndarray,
    shard: Shard = Shard(),
) -> tuple[torch.Tensor, dict[str, float]]:
    """Consistency loss for this rank's samples.

    ``student_prob``: (b, n_classes_total, Pi, Pj, Pk) softmax of the local samples, un-augmented;
    ``alphas``: (len(class_ids), B) fusion weights of the global batch (B = b * world).
    One teacher alone (``settings.teachers`` ``ct`` or ``pet``): no consensus filter, nothing to agree
    with; every sample with a valid prompt is kept.
    Returns (loss to add before lambda, stats of the global batch).
    """
    b = len(samples)
    n_cls = len(class_ids)
    patch = student_prob.shape[2:]
    device = student_prob.device  # the teachers answer on the student's device
    p_ct = torch.zeros((b, n_cls, *patch), device=device)
    p_pet = torch.zeros((b, n_cls, *patch), device=device)
    valid = torch.zeros((b, n_cls), dtype=torch.bool)  # CPU: decided from numpy prompt regions
    use_ct, use_pet = settings.teachers in ("both", "ct"), settings.teachers in ("both", "pet")
    for s, sample in enumerate(samples):
        if use_ct:
            assert ct_bank is not None, "teachers 'both' or 'ct' need the CT teacher"
            frame = ct_bank.frame(sample.ct.spacing)
            emb = ct_bank.embedding(("ct", sample.key), sample.ct, sample.centre_world)
            p_ct[s] = ct_bank.from_masks(emb, frame, student_prob[s, list(class_ids)].detach())
        if not use_pet:
            continue
        assert pet_bank is not None and sample.prompt_region is not None, "the PET teacher needs its prompt regions"
        rng = np.random.default_rng(list(sample.point_seed))
        points = [point_prompts(sample.prompt_region == c, k_points, rng) for c in class_ids]
        valid[s] = torch.tensor([p is not None for p in points])
        if valid[s].any():
            frame = pet_bank.frame(sample.pet.spacing)
            emb = pet_bank.embedding(("pet", sample.key), sample.pet, sample.centre_world)
            idx = [c for c, p in enumerate(points) if p is not None]
            p_pet[s, idx] = pet_bank.from_points(emb, frame, [p for p in points if p is not None])
    if not use_pet:
        valid[:] = True
    iou = torch.stack([soft_iou(p_ct[:, c], p_pet[:, c]) for c in range(n_cls)], 1) if b else torch.zeros((0, n_cls))
    # gathered on the device (nccl needs CUDA tensors), ranked on the CPU (a few numbers per class)
    iou_all = shard.gather(iou.to(device)).cpu()
    valid_all = shard.gather(valid.to(device, torch.uint8)).cpu().bool()
    mine = shard.take(iou_all.shape[0])
    loss = student_prob.sum() * 0.0
    kept_total, classes_used = 0, 0
    for c, cls in enumerate(class_ids):
        if settings.teachers == "both":
            kept_all = select(iou_all[:, c], valid_all[:, c], settings)
        else:
            kept_all = valid_all[:, c].clone()
        n_kept = int(kept_all.sum())
        if n_kept == 0:
            continue
        classes_used += 1
        kept_total += n_kept
        kept = kept_all[mine]
        if bool(kept.any()):
            target = fuse(p_ct[:, c], p_pet[:, c], settings, alpha=alphas[c, mine])
            kept = kept.to(device)
            dice = soft_dice(student_prob[kept, cls], target[kept])
            loss = loss + (1 - dice).sum() * shard.world / n_kept
    if classes_used:
        loss = loss / classes_used
    total = max(iou_all.shape[0] * n_cls, 1)
    stats = {
        "kept": kept_total / total,
        "valid": float(valid_all.float().mean()) if valid_all.numel() else 0.0,
        "iou": float(iou_all[valid_all].mean()) if bool(valid_all.any()) else 0.0,
    }
    return loss, stats
