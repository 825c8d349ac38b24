import numpy as np
import pytest

from mudo_app.evaluation.autopet import autopet_metrics
from mudo_app.io.volume import load_volume


def test_hand_computed_components():
    gt = np.zeros((10, 10, 10), bool)
    pred = np.zeros_like(gt)
    gt[1:3, 1:3, 1:3] = True  # 8 voxels, hit by the prediction
    gt[7, 7, 7] = True  # 1 voxel, missed -> false negative
    pred[2:4, 2:4, 2:4] = True  # 8 voxels, overlaps gt in 1 voxel
    pred[6, 1, 1] = True  # isolated -> false positive
    pred[7, 2, 2] = pred[8, 3, 2] = True  # 18-connected (edge neighbours): one component of 2, false positive
    m = autopet_metrics(gt, pred, (2.0, 2.0, 2.5))  # 10 mm^3 = 0.01 ml per voxel
    assert m["dice"] == pytest.approx(2 * 1 / (9 + 11))
    assert m["fp_volume_ml"] == pytest.approx(3 * 0.01)
    assert m["fn_volume_ml"] == pytest.approx(1 * 0.01)


def test_corner_neighbours_are_not_18_connected():
    gt = np.zeros((5, 5, 5), bool)
    gt[1, 1, 1] = True
    pred = np.zeros_like(gt)
    pred[1, 1, 1] = pred[2, 2, 2] = True  # corner (26-) neighbour: a separate, unmatched component
    assert autopet_metrics(gt, pred, (1, 1, 1))["fp_volume_ml"] == pytest.approx(0.001)


def test_empty_cases():
    z = np.zeros((4, 4, 4), bool)
    m = autopet_metrics(z, z, (1, 1, 1))
    assert np.isnan(m["dice"]) and m["fp_volume_ml"] == 0 and m["fn_volume_ml"] == 0
    one = z.copy()
    one[0, 0, 0] = True
    assert autopet_metrics(z, one, (1, 1, 1)) == {"dice": 0.0, "fp_volume_ml": 0.001, "fn_volume_ml": 0.0}
    with pytest.raises(ValueError, match="one shape"):
        autopet_metrics(z, z[:3], (1, 1, 1))


def test_real_autopet_masks(realdata):
    """Real PSMA lesion masks (LAS, 4.07 x 4.07 x 2 mm): a prediction against itself and a baseline."""
    gt = load_volume(realdata / "autopet3_psma_95b833d46f153cd2_gt.nii.gz")
    pred = load_volume(realdata / "autopet3_psma_95b833d46f153cd2_pred_b.nii.gz")
    same = autopet_metrics(gt.array > 0, gt.array > 0, gt.spacing)
    assert same == {"dice": 1.0, "fp_volume_ml": 0.0, "fn_volume_ml": 0.0}
    m = autopet_metrics(gt.array > 0, pred.array > 0, gt.spacing)
    g, p = gt.array > 0, pred.array > 0
    assert m["dice"] == pytest.approx(2 * (g & p).sum() / (g.sum() + p.sum()))
    assert 0 < m["dice"] < 1
    voxel_ml = np.prod(gt.spacing) / 1000
    assert m["fp_volume_ml"] <= (p & ~g).sum() * voxel_ml + 1e-9  # unmatched components only
    assert m["fn_volume_ml"] <= (g & ~p).sum() * voxel_ml + 1e-9
