from types import SimpleNamespace

import numpy as np
import pytest

from mudo_app.distill.disagreement import disagreement


class _Stub:
    """A predictor that answers every click with a fixed mask, and records the clicks."""

    def __init__(self, mask):
        self.mask, self.clicks = mask, []

    def predict(self, points, labels):
        self.clicks.append(points)
        return SimpleNamespace(mask=self.mask)


def test_disagreement_hand_computed():
    label = np.zeros((5, 5, 5), np.uint8)
    label[1:4, 1:4, 1:4] = 1  # liver, 27 voxels, deepest voxel (2, 2, 2)
    same, empty = _Stub(label == 1), _Stub(np.zeros_like(label, bool))
    out = disagreement(label, same, empty)
    # teachers: 1 - Dice(same, empty) = 1; student: 1 - (Dice 1 + Dice 0) / 2 = 0.5; score (1 + 0.5) / 2
    assert out["score"] == pytest.approx(0.75) and out["per_structure"] == {"liver": pytest.approx(0.75)}
    assert same.clicks == [[[2, 2, 2]]]
    # both teachers find nothing: they agree (0), the student disagrees with both (1): (0 + 1) / 2
    assert disagreement(label, _Stub(np.zeros_like(label, bool)), empty)["score"] == pytest.approx(0.5)


def test_a_case_where_the_student_finds_nothing_scores_one():
    label = np.zeros((5, 5, 5), np.uint8)
    assert disagreement(label, _Stub(label == 1), _Stub(label == 1)) == {"score": 1.0, "per_structure": {}}
