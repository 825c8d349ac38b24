"""Truth diagnostics: pooled Dice of student, teachers and kept pseudo-labels, computed by hand."""

import numpy as np
import pytest
import torch

from mudo_app.distill.consensus import ConsensusSettings
from mudo_app.distill.diagnostics import TruthDice
from mudo_app.distill.step import ConsistencyParts


def _row(values):
    return torch.tensor(values, dtype=torch.float32).reshape(1, 1, 4)


def test_pooled_dice_by_hand():
    # 2 samples, one class (label 1), patches of 1 x 1 x 4 voxels
    truth = torch.stack([_row([1, 1, 0, 0]), _row([0, 0, 0, 0])]).long()
    fg = torch.stack([_row([0.9, 0.2, 0.1, 0.1]), _row([0.1, 0.1, 0.1, 0.8])])  # arg-max [1,0,0,0], [0,0,0,1]
    student = torch.stack([1 - fg, fg], 1)  # (2, 2 classes, 1, 1, 4)
    p_ct = torch.stack([_row([0.9, 0.9, 0.9, 0.1]), _row([0, 0, 0, 0])])[:, None]  # > 0.5: [1,1,1,0], [0,0,0,0]
    p_pet = torch.stack([_row([0.6, 0.6, 0, 0]), _row([0.7, 0.7, 0.7, 0.7])])[:, None]  # sample 1 not valid
    parts = ConsistencyParts(
        p_ct, p_pet, valid=torch.tensor([[True], [False]]), kept=torch.tensor([[True], [False]]),
        alphas=np.array([[0.5, 0.5]]),
    )  # fmt: skip
    acc = TruthDice([1])
    acc.add(student, truth, parts, ConsensusSettings())
    got = acc.report()
    assert got["samples"] == 2
    assert got["student"]["liver"] == pytest.approx(2 * 1 / (2 + 2))  # |P| = 1 + 1 (sample 1's false voxel)
    assert got["student_kept"]["liver"] == pytest.approx(2 * 1 / (1 + 2))  # sample 0 only
    assert got["ct_teacher"]["liver"] == pytest.approx(2 * 2 / (3 + 2))
    assert got["pet_teacher"]["liver"] == pytest.approx(1.0)  # the valid sample 0 only
    # fused 0.5 * ct + 0.5 * pet = [0.75, 0.75, 0.45, 0.05] > 0.5 = the truth
    assert got["pseudo_label"]["liver"] == pytest.approx(1.0)
    assert acc.report() == {"samples": 0, **{s: {} for s in got if s != "samples"}}  # it starts again


def test_one_teacher_alone_reports_only_its_own_answers():
    truth = torch.ones(1, 1, 1, 4, dtype=torch.long)
    student = torch.stack([torch.zeros(1, 1, 1, 4), torch.ones(1, 1, 1, 4)], 1)
    parts = ConsistencyParts(
        torch.ones(1, 1, 1, 1, 4), torch.zeros(1, 1, 1, 1, 4), valid=torch.tensor([[True]]),
        kept=torch.tensor([[True]]), alphas=np.array([[0.3]]),
    )  # fmt: skip
    acc = TruthDice([1])
    acc.add(student, truth, parts, ConsensusSettings(teachers="ct"))
    got = acc.report()
    assert got["pet_teacher"] == {} and got["ct_teacher"]["liver"] == 1.0 and got["pseudo_label"]["liver"] == 1.0
