import numpy as np
import pytest
import torch

from mudo_app.transforms.augment import FlipRot


@pytest.mark.parametrize("seed", range(6))
def test_invert_undoes_apply(seed):
    rng = np.random.default_rng(seed)
    aug = FlipRot.draw(rng)
    x = torch.rand(2, 3, 8, 8, 5)
    y = aug.apply(x)
    assert y.shape == x.shape
    assert torch.equal(aug.invert(y), x)


def test_hand_computed_rotation_and_flip():
    x = torch.arange(4.0).reshape(2, 2, 1)  # x[i, j, 0]
    # one quarter turn in (i, j): torch.rot90 maps [[0, 1], [2, 3]] to [[1, 3], [0, 2]]
    assert FlipRot((False, False, False), 1).apply(x)[..., 0].tolist() == [[1, 3], [0, 2]]
    assert FlipRot((True, False, False), 0).apply(x)[..., 0].tolist() == [[2, 3], [0, 1]]
    assert FlipRot.draw(np.random.default_rng(1), square_axial=False).quarter_turns == 0
