"""Lesion-centred patch draws: components grouped by hand, every lesion equally likely."""

import numpy as np
import pytest

from mudo_app.transforms.patches import class_voxels, draw_start, lesion_components, paste_lesion, random_patch


def _label() -> np.ndarray:
    label = np.zeros((40, 40, 40), np.int64)
    label[0:20, 0:20, 0:20] = 1  # a large organ: 8000 voxels
    label[30:32, 30:32, 30:32] = 13  # a small lesion: 8 voxels
    label[25, 5, 5] = 13  # a one-voxel lesion, scanned first
    return label


def test_lesion_components_group_the_voxel_list_by_lesion():
    label = _label()
    lesions = class_voxels(label)[13]
    order, counts = lesion_components(label, lesions)
    assert counts == (1, 8)  # scan order: the voxel at x = 25 comes before the cube at x = 30
    assert order.dtype == np.int32 and sorted(order.tolist()) == list(range(9))
    assert lesions[order[0]].tolist() == [25, 5, 5]
    assert {tuple(v) for v in lesions[order[1:]]} == {(x, y, z) for x in (30, 31) for y in (30, 31) for z in (30, 31)}
    empty, none = lesion_components(np.zeros((4, 4, 4)), np.zeros((0, 3), np.int64))
    assert none == () and len(empty) == 0


def test_lesion_share_centres_patches_on_each_lesion_equally_often():
    label = _label()
    image = label[None].astype(np.float32)
    rng = np.random.default_rng(0)
    hits = {"one voxel": 0, "cube": 0}
    for _ in range(400):
        _, patch = random_patch(image, label, (8, 8, 8), rng, foreground_prob=1.0, lesion_share=1.0)
        assert (patch == 13).any()
        hits["cube" if (patch == 13).sum() == 8 else "one voxel"] += 1
    assert hits["one voxel"] == pytest.approx(200, abs=40) and hits["cube"] == pytest.approx(200, abs=40)
    # class-uniform draws (share 0): the lesion class gets half of the foreground draws here (2 classes),
    # all of it in the cube's 8 voxels 8 times out of 9
    rng = np.random.default_rng(0)
    lesion = sum((random_patch(image, label, (8, 8, 8), rng, 1.0)[1] == 13).any() for _ in range(400))
    assert lesion == pytest.approx(200, abs=40)


def test_zero_share_keeps_the_class_uniform_random_stream():
    label = _label()
    voxels = class_voxels(label)
    counts = [(c, len(v)) for c, v in voxels.items()]
    order, lesion_counts = lesion_components(label, voxels[13])
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    for _ in range(50):
        old = draw_start(label.shape, (8, 8, 8), a, 0.5, counts, lambda c, r: voxels[c][r])
        new = draw_start(
            label.shape,
            (8, 8, 8),
            b,
            0.5,
            counts,
            lambda c, r: voxels[c][r],
            lesion_share=0.0,
            lesion_counts=lesion_counts,
            lesion_voxel=lambda p: voxels[13][order[p]],
        )
        np.testing.assert_array_equal(old, new)


def test_paste_lesion_by_hand():
    """A 2-voxel lesion pasted with its box reaching past the patch's corner: CT replaced on the mask,
    PET the larger value on the mask dilated by one voxel, label LESION on the mask, outside dropped."""
    image = np.zeros((2, 4, 4, 4), np.float32)
    image[1] = 1.0  # PET 1 everywhere
    image[1, 0, 0, 2] = 9.0  # a hotter target voxel on the rim stays hot
    label = np.ones((4, 4, 4), np.int64)
    box = np.zeros((2, 3, 1, 1), np.float32)
    box[0] = 0.5  # lesion CT
    box[1] = [[[5.0]], [[6.0]], [[0.5]]]  # lesion PET; the box's last voxel is outside the lesion
    mask = np.array([True, True, False]).reshape(3, 1, 1)
    # the box [0..2] along i lands at i = -1..1: its first voxel (a lesion voxel) falls outside the patch
    assert paste_lesion(image, label, box, mask, (-1, 0, 1)) == 1
    assert label[0, 0, 1] == 13 and (label == 13).sum() == 1
    assert image[0, 0, 0, 1] == 0.5 and (image[0] != 0).sum() == 1
    # PET: rim = the mask dilated by one voxel, inside the box (i 0..1 of the patch at j 0, k 1)
    assert image[1, 0, 0, 1] == 6.0  # max(1, 6)
    assert image[1, 1, 0, 1] == 1.0  # rim voxel, source 0.5 < target 1
    assert image[1, 0, 0, 2] == 9.0  # outside the box: untouched
    assert (image[1] == 1.0).sum() == 64 - 2


def test_paste_lesion_wholly_outside_changes_nothing():
    image, label = np.zeros((2, 4, 4, 4), np.float32), np.zeros((4, 4, 4), np.int64)
    box, mask = np.ones((2, 2, 2, 2), np.float32), np.ones((2, 2, 2), bool)
    assert paste_lesion(image, label, box, mask, (4, 0, 0)) == 0
    assert paste_lesion(image, label, box, mask, (-2, 0, 0)) == 0
    assert not image.any() and not label.any()
