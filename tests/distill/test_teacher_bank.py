import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mudo_app.distill.embedding_cache import EmbeddingCache
from mudo_app.distill.teacher_bank import PatchFrame, TeacherBank, patch_centre_world, patch_starts
from mudo_app.io.volume import Volume
from mudo_app.models.sam3d.contract import STANDIN_CT, CropGrid


@pytest.mark.parametrize(
    "shape,patch,expected",
    [
        ((120, 80, 200), (64, 64, 64), ([0, 28, 56], [0, 16], [0, 27, 54, 82, 109, 136])),  # 136 / 32 -> 6 starts
        ((64, 40, 64), (64, 64, 64), ([0], [0], [0])),
    ],
)
def test_patch_starts_cover_the_volume_with_half_patch_stride(shape, patch, expected):
    starts = patch_starts(shape, patch)
    for axis in range(3):
        assert sorted(set(starts[:, axis].tolist())) == expected[axis]
    assert len(starts) == np.prod([len(e) for e in expected])


def test_box_aligned_frame_is_average_pooling_and_upsampling():
    # 64^3 patch at 4 mm and a 128^3 crop at 2 mm cover the same 256 mm box (the stand-in case)
    frame = PatchFrame((64, 64, 64), (4.0, 4.0, 4.0), 2.0, 128)
    x = torch.rand(3, 64, 64, 64)
    np.testing.assert_allclose(frame.to_low(x).numpy(), F.avg_pool3d(x[:, None], 2).numpy(), atol=1e-5)
    logits = torch.randn(2, 1, 32, 32, 32)
    up = torch.sigmoid(F.interpolate(logits, size=(64, 64, 64), mode="trilinear", align_corners=False))[:, 0]
    np.testing.assert_allclose(frame.from_low(logits).numpy(), up.numpy(), atol=1e-5)
    frame.aligned = False  # the general grid_sample path gives the same values
    np.testing.assert_allclose(frame.to_low(x).numpy(), F.avg_pool3d(x[:, None], 2).numpy(), atol=1e-5)
    np.testing.assert_allclose(frame.from_low(logits).numpy(), up.numpy(), atol=1e-5)
    # patch voxel p sits at crop voxel 2 p + 0.5 (hand-computed: (p - 31.5) * 4 / 2 + 63.5)
    np.testing.assert_allclose(frame.point_to_crop(np.array([[0, 31, 63]])), [[0.5, 62.5, 126.5]])


def test_point_mapping_agrees_with_crop_grid_on_an_anisotropic_las_volume():
    affine = np.array([[-2.0, 0, 0, 100], [0, -2.5, 0, 50], [0, 0, 3.0, -300], [0, 0, 0, 1]])
    patch, start = (32, 48, 32), np.array([5, 7, 9])
    centre = patch_centre_world(affine, start, patch)
    frame = PatchFrame(patch, (2.0, 2.5, 3.0), STANDIN_CT.spacing_mm, STANDIN_CT.crop)
    crop = CropGrid(affine, centre, STANDIN_CT.spacing_mm, STANDIN_CT.crop)
    pts = np.array([[0, 0, 0], [31, 47, 31], [10, 20, 5]])
    world = (affine @ np.c_[pts + start, np.ones(3)].T).T[:, :3]
    np.testing.assert_allclose(frame.point_to_crop(pts), crop.world_to_crop(world), atol=1e-9)
    # outside the teacher's box the mapped probability is 0
    wide = PatchFrame((64, 64, 64), (4.0, 4.0, 4.0), 1.5, 128)  # 192 mm crop inside a 256 mm patch
    prob = wide.from_low(torch.full((1, 1, 32, 32, 32), 5.0))[0]
    assert float(prob[0, 0, 0]) == 0.0 and float(prob[32, 32, 32]) > 0.99


def test_embeddings_are_computed_once_per_position():
    from mudo_app.models.teachers import load_teacher

    bank = TeacherBank(load_teacher("CT"), (32, 32, 32), EmbeddingCache(2**30, "fp32"))
    vol = Volume(np.random.default_rng(0).normal(0, 200, (40, 40, 40)).astype(np.float32), np.diag([8.0, 8, 8, 1]))
    centre = patch_centre_world(vol.affine, (0, 0, 0), (32, 32, 32))
    a = bank.embedding(("ct", 0, 0), vol, centre)
    b = bank.embedding(("ct", 0, 0), vol, centre)
    assert torch.equal(a, b) and bank.encoder_calls == 1
    probs = bank.from_masks(a, bank.frame((8.0, 8.0, 8.0)), torch.rand(3, 32, 32, 32))
    assert probs.shape == (3, 32, 32, 32) and bank.decoder_calls == 3
    assert float(probs.min()) >= 0 and float(probs.max()) <= 1
    uncached = TeacherBank(bank.teacher, (32, 32, 32), cache=None)
    c = uncached.embedding(("ct", 0, 0), vol, centre)
    uncached.embedding(("ct", 0, 0), vol, centre)
    assert uncached.encoder_calls == 2 and torch.equal(a, c)


@pytest.mark.parametrize("rotation_deg", [0.0, 20.0])
def test_crops_are_scipy_trilinear_within_float32(rotation_deg):
    """The torch crop sampler against SciPy's resampling (mode constant): same values inside the
    volume, the fill outside, for an axis-aligned and a rotated volume grid."""
    from mudo_app.io.volume import resample_to_grid

    th = np.deg2rad(rotation_deg)
    affine = np.eye(4)
    turn = np.array([[np.cos(th), -np.sin(th), 0], [np.sin(th), np.cos(th), 0], [0, 0, 1]])
    affine[:3, :3] = turn @ np.diag([3, 3, 4])
    affine[:3, 3] = (10, -20, 5)
    vol = Volume(np.random.default_rng(0).normal(0, 300, (40, 50, 30)).astype(np.float32), affine)
    for centre in ([60.0, 60.0, 60.0], [10.0, -20.0, 5.0], [400.0, 300.0, 500.0]):
        crop = CropGrid(vol.affine, np.array(centre), 2.0, 48)
        want = resample_to_grid(vol, (48,) * 3, crop.affine, order=1, fill=-1000.0).array
        np.testing.assert_allclose(crop.sample(vol, -1000.0), want, rtol=0, atol=1e-3)
