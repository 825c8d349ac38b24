import numpy as np
import pytest

from mudo_app import labels


def test_label_map_is_complete_and_unique():
    assert labels.LABEL_IDS == tuple(range(1, 14))
    assert len(set(lbl.name for lbl in labels.LABELS)) == 13
    assert len(set(lbl.color for lbl in labels.LABELS)) == 13
    assert labels.NUM_CLASSES == 14
    assert labels.label_names()["background"] == 0
    assert labels.NAME_TO_ID["liver"] == 1 and labels.NAME_TO_ID["prostate"] == 7
    assert labels.NAME_TO_ID["lung_middle_lobe_right"] == 12 and labels.NAME_TO_ID["lesion"] == 13


@pytest.mark.parametrize("values", [[0, 1, 13], [0], [5, 12]])
def test_check_label_values_accepts(values):
    labels.check_label_values(np.array(values, np.uint8))


@pytest.mark.parametrize(
    "values, match", [([0, 14], r"\[14\]"), ([-1, 0], r"\[-1\]"), ([0.5], "whole"), ([np.nan], "whole")]
)
def test_check_label_values_rejects(values, match):
    with pytest.raises(ValueError, match=match):
        labels.check_label_values(np.array(values, np.float32))
