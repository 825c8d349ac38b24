"""Predictor: crop geometry, embedding cache, results on the input grid, bad input."""

import numpy as np
import pytest
import torch

from mudo_app.errors import InputError
from mudo_app.models.sam3d import STANDIN_CT, STANDIN_PET, CropGrid, Sam3DPredictor, build_sam3d


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_sam3d("standin_small")


def _las_affine(spacing=(3.0, 2.5, 4.0)):
    aff = np.diag([-spacing[0], spacing[1], spacing[2], 1.0])
    aff[:3, 3] = (100.0, -50.0, 20.0)
    return aff


def test_crop_grid_aligned_sampling_is_exact():
    """A crop with the volume's own spacing, centred on a voxel centre, is a plain sub-array."""
    vol = np.random.default_rng(0).normal(size=(40, 30, 20)).astype(np.float32)
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    from mudo_app.io.volume import Volume

    centre_vox = np.array([20.5, 15.5, 10.5])  # crop of even size 8: centre between voxels
    crop = CropGrid(aff, (aff @ [*centre_vox, 1])[:3], 2.0, 8)
    np.testing.assert_allclose(crop.world_to_crop((aff @ [*centre_vox, 1])[None, :3]), [[3.5, 3.5, 3.5]])
    np.testing.assert_allclose(crop.sample(Volume(vol, aff), fill=0), vol[17:25, 12:20, 7:15], atol=1e-5)
    back = crop.to_volume_grid(torch.ones(8, 8, 8), vol.shape, aff)
    assert back.sum() == 8**3 and back[17:25, 12:20, 7:15].all()


def test_las_anisotropic_round_trip():
    aff = _las_affine()
    centre = (aff @ [30, 40, 25, 1])[:3]
    crop = CropGrid(aff, centre, 2.0, 32)
    assert crop.contains(crop.world_to_crop(centre[None]))
    # a crop indicator maps back to the voxels within 32 mm of the centre along each axis
    back = crop.to_volume_grid(torch.ones(32, 32, 32), (60, 80, 50), aff)
    covered = np.argwhere(back > 0.99)
    world = (aff @ np.c_[covered, np.ones(len(covered))].T).T[:, :3]
    assert np.abs(world - centre).max() <= 31.0 + 1e-6


class _BallDecoder:
    """Replaces the decoder: a ball of logits around the first click, in the low-res crop frame."""

    def __init__(self):
        self.seen = []

    def __call__(self, emb, points=None, mask=None, multimask_output=False):
        coords = points[0][0, 0].numpy()
        self.seen.append(coords)
        g = torch.stack(torch.meshgrid(*[torch.arange(32.0)] * 3, indexing="ij"), -1)
        centre = torch.tensor((coords + 0.5) / 4.0 - 0.5)  # crop voxel -> low-res voxel
        logits = 10 * (3.0 - (g - centre).norm(dim=-1))
        return logits[None, None], torch.tensor([[0.9]])


@pytest.mark.parametrize("affine", [np.diag([2.0, 2.0, 2.0, 1.0]), _las_affine()])
def test_click_lands_on_the_clicked_voxel(model, monkeypatch, affine):
    pred = Sam3DPredictor(model, STANDIN_CT)
    fake = _BallDecoder()
    monkeypatch.setattr(model, "decode", fake)
    vol = np.zeros((60, 80, 50), np.float32)
    pred.set_image(vol, affine, "CT")
    click = np.array([20, 50, 30])
    res = pred.predict(points=[click.tolist()], labels=[1])
    assert res.probability.shape == vol.shape and res.mask.dtype == bool
    centroid = np.argwhere(res.mask).mean(0)
    world = lambda v: (affine @ [*v, 1])[:3]  # noqa: E731
    assert np.linalg.norm(world(centroid) - world(click)) < 2.0  # mm
    assert fake.seen[0].tolist() == pytest.approx([63.5, 63.5, 63.5])  # crop centred on the click


def test_embedding_is_cached_per_crop(model):
    pred = Sam3DPredictor(model, STANDIN_PET)
    vol = np.random.default_rng(1).random((40, 40, 300)).astype(np.float32)  # 600 mm along k
    pred.set_image(vol, np.diag([2.0, 2.0, 2.0, 1.0]), "PET")
    r1 = pred.predict(points=[[20, 20, 150]], labels=[1])
    r2 = pred.predict(points=[[20, 20, 150], [25, 15, 160]], labels=[1, 0], mask_input=r1.low_res_logits)
    assert pred.encoder_calls == 1
    assert r2.low_res_logits.shape == (1, 1, 32, 32, 32)
    pred.predict(points=[[20, 20, 5]], labels=[1])  # 290 mm away along k: a new crop
    assert pred.encoder_calls == 2
    pred.predict(points=[[20, 20, 150]], labels=[1])  # back: cached
    assert pred.encoder_calls == 2
    res = pred.predict(points=[[20, 20, 150]], labels=[1], multimask_output=True)
    assert 0 <= res.probability.min() and res.probability.max() <= 1


@pytest.mark.parametrize(
    "volume, modality, match",
    [
        (np.zeros((5, 5)), "CT", "3-D"),
        (np.full((5, 5, 5), np.nan), "CT", "NaN"),
        (np.zeros((5, 5, 5)), "PET", "takes CT"),
    ],
)
def test_set_image_rejects(model, volume, modality, match):
    with pytest.raises(InputError, match=match):
        Sam3DPredictor(model, STANDIN_CT).set_image(volume, np.eye(4), modality)


@pytest.mark.parametrize(
    "points, labels, match",
    [
        ([[10, 10, 99]], [1], "outside the volume"),
        ([[-1, 0, 0]], [1], "outside the volume"),
        ([[1, 2]], [1], r"\[i, j, k\]"),
        ([[1, 2, 3]], [2], "labels must be"),
        ([[1, 2, 3]], [1, 0], "1 points but 2 labels"),
        ([], [], "at least one click"),
    ],
)
def test_predict_rejects_bad_clicks(model, points, labels, match):
    pred = Sam3DPredictor(model, STANDIN_CT)
    pred.set_image(np.zeros((20, 20, 20), np.float32), np.eye(4), "CT")
    with pytest.raises(InputError, match=match):
        pred.predict(points=points, labels=labels)


def test_predict_without_image(model):
    with pytest.raises(InputError, match="set_image"):
        Sam3DPredictor(model, STANDIN_CT).predict(points=[[0, 0, 0]], labels=[1])


def test_one_click_multimask_answers_a_lone_click_with_the_best_candidate(model, monkeypatch):
    """With ``one_click_multimask`` one click (no mask prompt) gets the multimask candidate of the highest
    predicted IoU; two clicks, or a click with a mask prompt, get the single output as before."""
    calls = []

    def decode(emb, points=None, mask=None, multimask_output=False):
        calls.append(multimask_output)
        logits = torch.full((1, 3 if multimask_output else 1, 32, 32, 32), -10.0)
        logits[:, -1, 10:20, 10:20, 10:20] = 10.0  # only the last output finds something
        return logits, torch.tensor([[0.1, 0.2, 0.9]] if multimask_output else [[0.5]])

    monkeypatch.setattr(model, "decode", decode)
    pred = Sam3DPredictor(model, STANDIN_CT, one_click_multimask=True)
    pred.set_image(np.zeros((60, 60, 60), np.float32), np.diag([2.0, 2.0, 2.0, 1.0]), "CT")
    first = pred.predict(points=[[30, 30, 30]], labels=[1])
    assert calls == [True] and first.iou == pytest.approx(0.9) and first.mask.any()
    pred.predict(points=[[30, 30, 30], [31, 30, 30]], labels=[1, 0])
    pred.predict(points=[[30, 30, 30]], labels=[1], mask_input=first.low_res_logits)
    assert calls == [True, False, False]
    plain = Sam3DPredictor(model, STANDIN_CT)
    plain.set_image(np.zeros((60, 60, 60), np.float32), np.diag([2.0, 2.0, 2.0, 1.0]), "CT")
    plain.predict(points=[[30, 30, 30]], labels=[1])
    assert calls[-1] is False
