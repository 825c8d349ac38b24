"""The MuDuo consistency term in its named pieces, with hand-computed values (2 samples, 2 classes)."""

import numpy as np
import pytest
import torch

from mudo_app.distill.consensus import ConsensusSettings
from mudo_app.distill.step import UnlabelledPatch, consistency_loss, kept_samples, muduo_consistency
from mudo_app.runtime.distributed import Shard

CLASSES = (1, 2)  # of 3 (background 0); patches of 2 voxels, shape (2, 1, 1)
# student softmax (sample, class 0..2, voxel): sample 0 class 1 = [.5, .5], class 2 = [1, 0];
# sample 1 class 1 = [1, 0], class 2 = [0, 1]
STUDENT = torch.tensor([[[0.0, 0.5], [0.5, 0.5], [1.0, 0.0]], [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]]).reshape(
    2, 3, 2, 1, 1
)
TARGET = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [1.0, 0.0]]]).reshape(2, 2, 2, 1, 1)
# 1 - softDice per (sample, class), eps aside: s0c1 = 1 - 2*0.5/2 = 0.5, s0c2 = 0, s1c1 = 0, s1c2 = 1
ALPHAS = np.full((2, 2), 0.3)


@pytest.mark.parametrize(
    "kept, expected",
    [
        ([[1, 1], [1, 0]], (0.5 / 2 + 0 / 1) / 2),  # class 1 keeps both samples, class 2 sample 0 only
        ([[1, 0], [0, 1]], (0.5 / 1 + 1 / 1) / 2),  # one sample each
        ([[1, 0], [1, 0]], (0.5 + 0) / 2),  # class 2 keeps nothing: it does not count among the classes
        ([[0, 0], [0, 0]], 0.0),
    ],
)
def test_loss_is_normalised_by_kept_samples_per_class_then_by_classes_used(kept, expected):
    settings = ConsensusSettings(teachers="both")  # targets: the teachers agree, so any alpha fuses to them
    loss = consistency_loss(STUDENT, TARGET, TARGET, torch.tensor(kept, dtype=torch.bool), CLASSES, settings, ALPHAS)
    assert float(loss) == pytest.approx(expected, abs=1e-4)


def test_two_ranks_average_to_the_single_process_loss():
    """Each rank sums its kept samples times world / N_c; DDP averages the ranks: the same loss."""
    settings = ConsensusSettings()
    kept = torch.tensor([[1, 1], [1, 0]], dtype=torch.bool)
    single = consistency_loss(STUDENT, TARGET, TARGET, kept, CLASSES, settings, ALPHAS)
    mine = [slice(r, r + 1) for r in (0, 1)]
    ranks = [
        consistency_loss(STUDENT[m], TARGET[m], TARGET[m], kept, CLASSES, settings, ALPHAS, Shard(r, 2))
        for r, m in enumerate(mine)
    ]
    assert float(sum(ranks) / 2) == pytest.approx(float(single), abs=1e-6)
    assert [float(r) for r in ranks] == pytest.approx([0.25, 0.0], abs=1e-4)


def test_one_teacher_keeps_every_valid_sample_and_both_rank_by_iou():
    p_ct = torch.tensor([[1.0, 0.0], [1.0, 0.0]]).reshape(2, 1, 2, 1, 1)  # 2 samples, 1 class
    p_pet = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).reshape(2, 1, 2, 1, 1)  # agrees on sample 0 only
    valid = torch.tensor([[True], [True]])
    kept, iou, _ = kept_samples(p_ct, p_pet, valid, ConsensusSettings(teachers="both", keep_fraction=0.5))
    assert kept[:, 0].tolist() == [True, False] and iou[:, 0].tolist() == pytest.approx([1.0, 0.0])
    kept, _, _ = kept_samples(p_ct, p_pet, valid, ConsensusSettings(teachers="ct"))
    assert kept[:, 0].tolist() == [True, True]


class _StubBank:
    """A teacher that answers every prompt of sample ``key`` with ``TARGET[key]``."""

    def frame(self, spacing):
        return None

    def embedding(self, key, volume, centre):
        return key[1]

    def from_masks(self, emb, frame, masks):
        assert masks.shape == (2, 2, 1, 1)
        return TARGET[emb]

    def from_points(self, emb, frame, points):
        assert len(points) == 2 and all(p.shape == (1, 3) for p in points)
        return TARGET[emb]


def test_the_pieces_compose_with_stub_teachers():
    region = np.array([1, 2]).reshape(2, 1, 1)  # the prompt network finds both classes in both samples
    samples = [
        UnlabelledPatch(s, np.eye(4), lambda: None, lambda: None, np.zeros(3), region, (0, 0, s)) for s in (0, 1)
    ]
    settings = ConsensusSettings(filter="none")
    loss, stats, parts = muduo_consistency(STUDENT, samples, CLASSES, _StubBank(), _StubBank(), settings, 1, ALPHAS)
    assert float(loss) == pytest.approx(((0.5 + 0) / 2 + (0 + 1) / 2) / 2, abs=1e-4)
    assert stats == pytest.approx({"kept": 1.0, "valid": 1.0, "iou": 1.0})
