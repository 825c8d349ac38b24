import numpy as np
import pytest

from mudo_app.evaluation.metrics import binary_dice, class_metrics, predicted_as


def _cube(shape, lo, hi, value=1):
    a = np.zeros(shape, np.uint8)
    a[tuple(slice(x, y) for x, y in zip(lo, hi))] = value
    return a


def test_shifted_cube_hand_computed():
    gt = _cube((20, 20, 20), (5, 5, 5), (10, 10, 10))  # 125 voxels
    pred = _cube((20, 20, 20), (6, 5, 5), (11, 10, 10))  # shifted by one voxel along i
    m = class_metrics(gt, pred, (2.0, 1.0, 1.0), [1])[1]
    assert m["status"] == "found"
    assert m["dice"] == pytest.approx(2 * 100 / 250)
    assert m["hd95_mm"] == pytest.approx(2.0)  # one voxel of 2 mm along i
    assert 0 < m["asd_mm"] <= 2.0
    assert m["ravd"] == 0.0


def test_identical_masks():
    gt = _cube((12, 12, 12), (2, 2, 2), (8, 8, 8), 13)
    m = class_metrics(gt, gt.copy(), (1, 1, 1), [13])[13]
    assert m["dice"] == 1.0 and m["hd95_mm"] == 0.0 and m["asd_mm"] == 0.0


def test_missed_and_hallucinated_are_not_scored_hd95_zero():
    gt = _cube((10, 10, 10), (1, 1, 1), (4, 4, 4), 2)
    pred = _cube((10, 10, 10), (5, 5, 5), (8, 8, 8), 3)
    m = class_metrics(gt, pred, (1, 1, 1), [1, 2, 3])
    assert 1 not in m  # absent from both
    assert m[2]["status"] == "missed" and m[2]["dice"] == 0 and np.isnan(m[2]["hd95_mm"]) and m[2]["ravd"] == -1
    assert m[3]["status"] == "hallucinated" and np.isnan(m[3]["hd95_mm"])


def test_ravd_and_shape_check():
    gt = _cube((10, 10, 10), (0, 0, 0), (2, 2, 2))  # 8
    pred = _cube((10, 10, 10), (0, 0, 0), (2, 2, 3))  # 12
    assert class_metrics(gt, pred, (1, 1, 1), [1])[1]["ravd"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="one shape"):
        class_metrics(gt, pred[:5], (1, 1, 1), [1])


def test_mean_dice_counts_classes_absent_from_both_as_zero():
    from mudo_app.evaluation.metrics import mean_dice

    gt = np.array([1, 1, 2, 0])
    pred = np.array([1, 0, 2, 2])
    # class 1: 2*1/(2+1) = 2/3; class 2: 2*1/(1+2) = 2/3; class 3 absent from both: 0
    assert mean_dice(gt, pred, [1, 2, 3]) == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)


def test_binary_dice_hand_computed_and_its_empty_mask_convention():
    a = np.array([1, 1, 0, 0, 0], bool)
    b = np.array([1, 0, 1, 1, 0], bool)
    assert binary_dice(a, b) == pytest.approx(2 * 1 / (2 + 3))  # 0.4
    assert binary_dice(np.array([0, 3, 3]), np.array([0, 1, 0])) == pytest.approx(2 * 1 / (2 + 1))  # non-zero = in
    assert binary_dice(a, np.zeros(5, bool)) == 0.0  # one empty: 0
    assert np.isnan(binary_dice(np.zeros(5, bool), np.zeros(5, bool)))  # both empty: undefined
    with pytest.raises(ValueError, match="one shape"):
        binary_dice(a, b[:4])


def test_predicted_as_counts_where_a_class_goes_hand_computed():
    gt = np.array([[13, 13, 13, 13, 0], [2, 2, 13, 0, 0]])
    pred = np.array([[13, 2, 2, 0, 13], [2, 0, 13, 0, 0]])
    counts = predicted_as(gt, pred, 13)  # gt lesion voxels: pred 13, 2, 2, 0 and 13
    assert counts.tolist() == [1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]
    assert predicted_as(gt, pred, 5).sum() == 0
    with pytest.raises(ValueError, match="one shape"):
        predicted_as(gt, pred[:1], 13)
