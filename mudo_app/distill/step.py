"""The MuDuo consistency term of one iteration (MUDUO_METHOD.md, step 2), batch-sharded for DDP.

Every rank knows the whole (global) batch's random draws and computes only its own slice of samples;
the consensus filter ranks the *global* batch (IoUs are all-gathered, a few numbers per class), and
the loss is normalised by the global count of kept samples, so the gradient DDP averages equals the
gradient of single-process training on the same batch.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mudo_app.distill.consensus import ConsensusSettings, fuse, point_prompts, select, soft_dice, soft_iou
from mudo_app.distill.teacher_bank import TeacherBank
from mudo_app.io.volume import Volume, spacing_of
from mudo_app.runtime.distributed import Shard


@dataclass
class UnlabelledPatch:
    """One unlabelled sample in the teachers' (un-augmented) frame."""

    key: Hashable  # (case index, position index): identifies the cached embeddings
    affine: np.ndarray  # the case grid: voxel [i, j, k] -> world mm
    ct: Volume | Callable[[], Volume]  # raw HU on the case grid, or what opens it (only on a cache miss)
    pet: Volume | Callable[[], Volume]  # raw SUV, likewise
    centre_world: np.ndarray
    prompt_region: np.ndarray | None  # (Pi, Pj, Pk) int: the frozen prompt network's argmax (None: no PET teacher)
    point_seed: Sequence[int]  # seeds this sample's K point draw (identical on every rank)


def teacher_probabilities(
    student_prob: torch.Tensor,
    samples: list[UnlabelledPatch],
    class_ids: Sequence[int],
    ct_bank: TeacherBank | None,
    pet_bank: TeacherBank | None,
    settings: ConsensusSettings,
    k_points: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The teachers' answers for this rank's samples: ``(p_ct, p_pet, valid)``.

    ``p_ct``, ``p_pet``: (b, n_cls, Pi, Pj, Pk) probabilities in the student's (un-augmented) patch
    frame, zero for a teacher not in use; ``valid``: (b, n_cls) bool, whether the PET prompt network
    found the class in the sample (always true with the CT teacher alone). The CT teacher is prompted
    with the student's probabilities (masks), the PET teacher with K points in the prompt region.
    """
    b, n_cls, patch = len(samples), len(class_ids), student_prob.shape[2:]
    device = student_prob.device  # the teachers answer on the student's device
    p_ct = torch.zeros((b, n_cls, *patch), device=device)
    p_pet = torch.zeros((b, n_cls, *patch), device=device)
    valid = torch.zeros((b, n_cls), dtype=torch.bool)  # CPU: decided from numpy prompt regions
    use_ct, use_pet = settings.teachers in ("both", "ct"), settings.teachers in ("both", "pet")
    for s, sample in enumerate(samples):
        spacing = spacing_of(sample.affine)
        if use_ct:
            assert ct_bank is not None, "teachers 'both' or 'ct' need the CT teacher"
            emb = ct_bank.embedding(("ct", sample.key), sample.ct, sample.centre_world)
            p_ct[s] = ct_bank.from_masks(emb, ct_bank.frame(spacing), student_prob[s, list(class_ids)].detach())
        if not use_pet:
            continue
        assert pet_bank is not None and sample.prompt_region is not None, "the PET teacher needs its prompt regions"
        rng = np.random.default_rng(list(sample.point_seed))
        points = [point_prompts(sample.prompt_region == c, k_points, rng) for c in class_ids]
        valid[s] = torch.tensor([p is not None for p in points])
        if valid[s].any():
            emb = pet_bank.embedding(("pet", sample.key), sample.pet, sample.centre_world)
            idx = [c for c, p in enumerate(points) if p is not None]
            p_pet[s, idx] = pet_bank.from_points(emb, pet_bank.frame(spacing), [p for p in points if p is not None])
    if not use_pet:
        valid[:] = True
    return p_ct, p_pet, valid


def kept_samples(
    p_ct: torch.Tensor, p_pet: torch.Tensor, valid: torch.Tensor, settings: ConsensusSettings, shard: Shard = Shard()
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The consensus filter over the *global* batch: ``(kept, iou, valid)``, each (B, n_cls) for the
    B = b * world samples of all ranks (IoUs and validity all-gathered, a few numbers per class).

    Both teachers: :func:`select` per class on the soft IoU of their answers; one teacher alone has
    nothing to agree with and keeps every valid sample.
    """
    b, n_cls = valid.shape
    device = p_ct.device
    iou = torch.stack([soft_iou(p_ct[:, c], p_pet[:, c]) for c in range(n_cls)], 1) if b else torch.zeros((0, n_cls))
    # gathered on the device (nccl needs CUDA tensors), ranked on the CPU
    iou_all = shard.gather(iou.to(device)).cpu()
    valid_all = shard.gather(valid.to(device, torch.uint8)).cpu().bool()
    kept = torch.zeros_like(valid_all)
    for c in range(n_cls):
        if settings.teachers == "both":
            kept[:, c] = select(iou_all[:, c], valid_all[:, c], settings)
        else:
            kept[:, c] = valid_all[:, c]
    return kept, iou_all, valid_all


def consistency_loss(
    student_prob: torch.Tensor,
    p_ct: torch.Tensor,
    p_pet: torch.Tensor,
    kept: torch.Tensor,
    class_ids: Sequence[int],
    settings: ConsensusSettings,
    alphas: np.ndarray,
    shard: Shard = Shard(),
) -> torch.Tensor:
    """This rank's share of the MuDuo consistency loss.

    ``loss = (1 / C_used) * sum over classes c with a kept sample of (1 / N_c) * sum over kept samples
    s of (1 - softDice(student_s,c, fused pseudo-label_s,c))``, with ``N_c`` the kept samples of class
    ``c`` in the *global* batch and ``C_used`` the classes with at least one. Each rank sums its own
    kept samples times ``world / N_c``: DistributedDataParallel averages the ranks' gradients, which
    then equal those of this loss on the whole batch in one process.

    ``student_prob``: (b, n_classes_total, ...) this rank's softmax; ``p_ct``, ``p_pet``: (b, n_cls, ...)
    the teachers' answers for ``class_ids``; ``kept``: (B, n_cls) of the global batch; ``alphas``:
    (n_cls, B) fusion weights.
    """
    mine = shard.take(kept.shape[0])
    loss = student_prob.sum() * 0.0
    counts = kept.sum(0)
    used = int((counts > 0).sum())
    device = student_prob.device
    for c, cls in enumerate(class_ids):
        n_kept = int(counts[c])
        here = kept[mine, c]
        if n_kept == 0 or not bool(here.any()):
            continue
        target = fuse(p_ct[:, c], p_pet[:, c], settings, alpha=alphas[c, mine])
        here = here.to(device)
        dice = soft_dice(student_prob[here, cls], target[here])
        loss = loss + (1 - dice).sum() * shard.world / n_kept
    return loss / used if used else loss


@dataclass
class ConsistencyParts:
    """What one iteration's consistency term was made of, for this rank's samples (diagnostics)."""

    p_ct: torch.Tensor  # (b, n_cls, Pi, Pj, Pk) the CT teacher's answers (zero when not in use)
    p_pet: torch.Tensor  # (b, n_cls, Pi, Pj, Pk) the PET teacher's answers (zero when not in use)
    valid: torch.Tensor  # (b, n_cls) bool: the PET prompt found the class (always true without it)
    kept: torch.Tensor  # (b, n_cls) bool: the consensus filter kept the sample for the class
    alphas: np.ndarray  # (n_cls, b) the fusion weights of these samples


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
) -> tuple[torch.Tensor, dict[str, float], ConsistencyParts]:
    """Consistency loss for this rank's samples: :func:`teacher_probabilities`, then
    :func:`kept_samples`, then :func:`consistency_loss`.

    ``student_prob``: (b, n_classes_total, Pi, Pj, Pk) softmax of the local samples, un-augmented;
    ``alphas``: (len(class_ids), B) fusion weights of the global batch (B = b * world).
    Returns (loss to add before lambda, stats of the global batch: kept and valid fractions, mean IoU,
    and this rank's :class:`ConsistencyParts`).
    """
    p_ct, p_pet, valid = teacher_probabilities(student_prob, samples, class_ids, ct_bank, pet_bank, settings, k_points)
    kept, iou_all, valid_all = kept_samples(p_ct, p_pet, valid, settings, shard)
    loss = consistency_loss(student_prob, p_ct, p_pet, kept, class_ids, settings, alphas, shard)
    total = max(kept.numel(), 1)
    stats = {
        "kept": float(kept.sum()) / total,
        "valid": float(valid_all.float().mean()) if valid_all.numel() else 0.0,
        "iou": float(iou_all[valid_all].mean()) if bool(valid_all.any()) else 0.0,
    }
    mine = shard.take(kept.shape[0])
    return loss, stats, ConsistencyParts(p_ct, p_pet, valid, kept[mine], alphas[:, mine])
