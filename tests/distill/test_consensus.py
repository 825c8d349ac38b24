import math

import numpy as np
import pytest
import torch

from mudo_app.distill.consensus import (
    ConsensusSettings,
    consistency_weight,
    fuse,
    point_prompts,
    select,
    soft_dice_loss,
    soft_iou,
)


def test_soft_iou_hand_computed():
    a = torch.tensor([[1.0, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    b = torch.tensor([[1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    # sample 0: inter 1.5, sums 1.5 + 3 - 1.5 = 3 -> 0.5; sample 1: both empty -> 0
    torch.testing.assert_close(soft_iou(a, b), torch.tensor([0.5, 0.0]))


@pytest.mark.parametrize(
    "iou, valid, settings, expected",
    [
        # top 50 % of 4 = 2; the invalid sample with the best IoU ranks last
        ([0.9, 0.2, 0.6, 0.4], [False, True, True, True], ConsensusSettings(), [False, False, True, True]),
        # at least one kept even when all are invalid
        ([0.1, 0.3], [False, False], ConsensusSettings(keep_fraction=0.25), [False, True]),
        (
            [0.9, 0.2, 0.6, 0.4],
            [False, True, True, True],
            ConsensusSettings(filter="threshold"),
            [False, False, True, False],
        ),
        ([0.9, 0.2], [False, True], ConsensusSettings(filter="none"), [True, True]),
    ],
)
def test_select(iou, valid, settings, expected):
    out = select(torch.tensor(iou), torch.tensor(valid), settings)
    assert out.tolist() == expected


def test_fuse_single_teachers_and_random_alpha():
    p_ct = torch.tensor([[0.9, 0.2], [0.9, 0.2]])
    p_pet = torch.tensor([[0.1, 0.8], [0.1, 0.8]])
    assert fuse(p_ct, p_pet, ConsensusSettings(teachers="ct")).tolist() == [[1, 0], [1, 0]]
    assert fuse(p_ct, p_pet, ConsensusSettings(teachers="pet")).tolist() == [[0, 1], [0, 1]]
    rng = np.random.default_rng(0)
    alphas = np.random.default_rng(0).uniform(size=2)
    out = fuse(p_ct, p_pet, ConsensusSettings(), rng)
    for b, a in enumerate(alphas):
        expected = [float(a * 0.9 + (1 - a) * 0.1 > 0.5), float(a * 0.2 + (1 - a) * 0.8 > 0.5)]
        assert out[b].tolist() == expected


def test_soft_dice_loss_over_kept_only():
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    loss = soft_dice_loss(s, t, torch.tensor([True, False]))
    assert loss.item() == pytest.approx(0.0, abs=1e-5)
    loss = soft_dice_loss(s, t, torch.tensor([True, True]))
    assert loss.item() == pytest.approx(0.5, abs=1e-5)  # (0 + 1) / 2
    loss.backward()
    assert s.grad is not None
    assert soft_dice_loss(s, t, torch.tensor([False, False])).item() == 0.0


def test_consistency_weight_ramp():
    assert consistency_weight(30_000, 30_000) == pytest.approx(0.1)
    assert consistency_weight(0, 30_000) == pytest.approx(0.1 * math.exp(-5))
    assert consistency_weight(15_000, 30_000) == pytest.approx(0.1 * math.exp(-1.25))
    assert consistency_weight(40_000, 30_000) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="positive"):
        consistency_weight(1, 0)


def test_point_prompts():
    region = np.zeros((10, 10, 10), bool)
    region[2:5, 4:7, 6:9] = True
    assert point_prompts(region, 1, np.random.default_rng(0)).tolist() == [[3, 5, 7]]
    pts = point_prompts(region, 3, np.random.default_rng(0))
    assert pts.shape == (3, 3) and all(region[tuple(p)] for p in pts)
    assert point_prompts(np.zeros_like(region), 3, np.random.default_rng(0)) is None
    with pytest.raises(ValueError):
        point_prompts(region, 0, np.random.default_rng(0))


@pytest.mark.parametrize(
    "kwargs, match",
    [({"filter": "oracle"}, "filter"), ({"teachers": "mr"}, "teachers"), ({"keep_fraction": 0.0}, "keep_fraction")],
)
def test_settings_reject(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ConsensusSettings(**kwargs)
