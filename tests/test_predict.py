"""Student checkpoints and `muduo predict`: rebuild from the checkpoint, output on the exact PET grid."""

import numpy as np
import pytest
import torch

from mudo_app.cli import main
from mudo_app.errors import InputError
from mudo_app.io.volume import Volume, load_volume, save_volume
from mudo_app.models import build_student
from mudo_app.models.checkpoint import load_student
from mudo_app.synth import PhantomSettings, generate_cases


def test_checkpoint_round_trip(student_path):
    model, prep, meta = load_student(student_path)
    torch.manual_seed(0)
    ref = build_student("unet_small").state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())
    assert meta["architecture"]["name"] == "unet_small" and meta["labels"]["lesion"] == 13
    assert prep.ct_window == (-1000.0, 1000.0) and not model.training
    assert not list(student_path.parent.glob(".tmp-*"))


def test_checkpoint_bad_files(tmp_path, student_path):
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="not a MuDuo student checkpoint"):
        load_student(tmp_path / "other.pt")
    ckpt = torch.load(student_path, weights_only=True)
    ckpt["architecture"]["name"] = "unet"  # claims another architecture than its weights
    torch.save(ckpt, tmp_path / "lying.pt")
    with pytest.raises(InputError, match="mis-shaped"):
        load_student(tmp_path / "lying.pt")
    with pytest.raises(InputError, match="not found"):
        load_student(tmp_path / "none.pt")


def _case_files(tmp_path):
    case = generate_cases(4, 0, 1, PhantomSettings(spacing=(8.0, 8.0, 8.0)))[0]
    pet = Volume(case.pet.array, np.diag([-8.0, 8.0, 8.0, 1.0]))  # LAS
    pet.affine[:3, 3] = (300.0, -150.0, 10.0)
    ct = Volume(case.ct.array, pet.affine)
    return save_volume(ct, tmp_path / "ct.nii.gz"), save_volume(pet, tmp_path / "pet.nii.gz"), pet


def _predict(ct_path, pet_path, out, model) -> int:
    """``muduo predict`` with 32^3 windows."""
    paths = ["--ct", str(ct_path), "--pet", str(pet_path), "--out", str(out), "--model", str(model)]
    return main(["predict", *paths, "--roi", "32", "32", "32"])


def test_predict_writes_label_on_the_pet_grid(tmp_path, student_path, capsys):
    ct_path, pet_path, pet = _case_files(tmp_path)
    out = tmp_path / "label.nii.gz"
    assert _predict(ct_path, pet_path, out, student_path) == 0
    label = load_volume(out)
    assert label.shape == pet.shape and label.array.dtype == np.uint8 and label.array.max() <= 13
    np.testing.assert_allclose(label.affine, pet.affine)
    assert label.orientation == "LAS"


def test_predict_resamples_a_ct_on_another_grid_with_a_warning(tmp_path, student_path, capsys):
    ct_path, pet_path, pet = _case_files(tmp_path)
    ct = load_volume(ct_path)
    save_volume(Volume(ct.array[::2, ::2, ::2].copy(), ct.affine @ np.diag([2.0, 2.0, 2.0, 1.0])), ct_path)
    out = tmp_path / "label.nii.gz"
    assert _predict(ct_path, pet_path, out, student_path) == 0
    assert "resampled the CT onto the PET grid" in capsys.readouterr().err
    assert load_volume(out).shape == pet.shape


@pytest.mark.parametrize(
    "change, message",
    [
        ("nan", "NaN"),
        ("2d", "3-D"),
        ("out", "--out must end"),
        ("roi", "--roi"),
    ],
)
def test_predict_bad_input_exit_2_nothing_written(tmp_path, student_path, capsys, change, message):
    ct_path, pet_path, pet = _case_files(tmp_path)
    out = tmp_path / ("label.png" if change == "out" else "label.nii.gz")
    roi = ["30", "32", "32"] if change == "roi" else ["32", "32", "32"]
    if change == "nan":
        arr = pet.array.copy()
        arr[1, 1, 1] = np.nan
        save_volume(Volume(arr, pet.affine), pet_path)
    if change == "2d":
        import nibabel as nib

        nib.save(nib.Nifti1Image(np.zeros((5, 5), np.float32), np.eye(4)), str(pet_path))
    assert (
        main(
            [
                "predict",
                "--ct",
                str(ct_path),
                "--pet",
                str(pet_path),
                "--out",
                str(out),
                "--model",
                str(student_path),
                "--roi",
                *roi,
            ]
        )
        == 2
    )
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "shape,roi,overlap",
    [((70, 50, 90), (32, 32, 32), 0.25), ((20, 50, 33), (32, 32, 32), 0.5), ((64, 64, 64), (32, 32, 16), 0.0)],
)
def test_layerwise_sliding_window_equals_the_whole_volume_for_a_pointwise_model(shape, roi, overlap):
    """With a 1x1x1 convolution every window agrees with the whole-volume output, so any bookkeeping
    error of the layer-by-layer accumulation (shifts, padding, last layer) shows as a mismatch."""
    from mudo_app.predict import predict_arrays, window_starts
    from mudo_app.transforms.intensity import StudentInput

    torch.manual_seed(0)
    net = torch.nn.Conv3d(2, 14, 1).eval()
    rng = np.random.default_rng(0)
    ct = rng.normal(0, 300, shape).astype(np.float32)
    pet = rng.gamma(1, 1, shape).astype(np.float32)
    got = predict_arrays(net, StudentInput(), ct, pet, roi=roi, overlap=overlap)
    with torch.no_grad():
        want = net(torch.from_numpy(StudentInput()(ct, pet))[None]).argmax(1)[0].numpy()
    assert got.shape == shape and got.dtype == np.uint8
    np.testing.assert_array_equal(got, want)
    assert window_starts(90, 32, 0.25) == [0, 19, 39, 58] and window_starts(20, 32, 0.25) == [0]


@pytest.mark.parametrize(
    "shape,roi,overlap",
    [((70, 50, 90), (32, 32, 32), 0.25), ((20, 50, 33), (32, 32, 32), 0.5), ((71, 33, 97), (16, 16, 16), 0.6)],
)
def test_a_head_applied_once_equals_the_whole_volume_when_the_body_is_local(shape, roi, overlap):
    """A body that sees only its own 2x2x2 block gives every window the whole volume's features, so
    blending them and running the transposed-convolution head once over the volume must give the
    whole volume's output: any error of the band bookkeeping (halo slices, head offsets, odd sizes,
    a volume smaller than a window, padding to the stride) shows as a mismatch."""
    from mudo_app.predict import predict_arrays
    from mudo_app.transforms.intensity import StudentInput

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(2, 32, 2, stride=2), torch.nn.ConvTranspose3d(32, 14, 3, 2, 1, 1)).eval()
    rng = np.random.default_rng(0)
    ct = rng.normal(0, 300, shape).astype(np.float32)
    pet = rng.gamma(1, 1, shape).astype(np.float32)
    got = predict_arrays(net, StudentInput(), ct, pet, roi=roi, overlap=overlap)
    # the predictor pads with edge values to a window and to an even size; so does the reference
    pad = [-(-max(s, r) // 2) * 2 - s for s, r in zip(shape, roi)]
    x = torch.from_numpy(StudentInput()(ct, pet))[None]
    x = torch.nn.functional.pad(x, (0, pad[2], 0, pad[1], 0, pad[0]), mode="replicate")
    with torch.no_grad():
        want = net(x).argmax(1)[0, : shape[0], : shape[1], : shape[2]].numpy()
    assert got.shape == shape
    np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="multiple of the network's last stride"):
        predict_arrays(net, StudentInput(), ct, pet, roi=(31, 32, 32))


def test_axis_weights_sum_to_one_over_the_covering_windows():
    """Two 3-voxel windows at 0 and 2 on 5 voxels: Gaussian [a, 1, a] with a = exp(-0.5 (1 / 0.375)^2);
    voxel 2 is covered by both with weight a each, so each gets 1/2; the others by one window."""
    from mudo_app.predict import axis_weights

    w = axis_weights(5, [0, 2], 3)
    torch.testing.assert_close(w, torch.tensor([[1.0, 1.0, 0.5], [0.5, 1.0, 1.0]]))
    w = axis_weights(90, [0, 19, 39, 58], 32)
    total = torch.zeros(90)
    for s, row in zip([0, 19, 39, 58], w):
        total[s : s + 32] += row
    torch.testing.assert_close(total, torch.ones(90))


def test_the_shipped_student_agrees_with_monai_sliding_windows():
    """The head once per volume against MONAI's sliding window (the head in every window, Gaussian
    importance map): the same labels on nearly every voxel of a synthetic case."""
    from monai.inferers import sliding_window_inference

    from mudo_app.predict import predict_arrays
    from mudo_app.resources import shipped_student

    model, prep, meta = load_student(shipped_student())
    case = generate_cases(4, 0, 1, PhantomSettings())[0]
    got = predict_arrays(model, prep, case.ct.array, case.pet.array, roi=(64, 64, 64))
    x = torch.from_numpy(prep(case.ct.array, case.pet.array))[None]
    with torch.no_grad():
        logits = sliding_window_inference(x, (64, 64, 64), 4, model, overlap=0.25, mode="gaussian", sigma_scale=0.125)
    want = logits.argmax(1)[0].numpy()
    assert (got == want).mean() > 0.99


def _untrained_and_random_case(shape):
    """A seeded untrained unet_lite and random CT (HU) / PET (SUV) arrays of ``shape``."""
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    ct = rng.normal(0, 300, shape).astype(np.float32)
    pet = rng.gamma(1, 1, shape).astype(np.float32)
    return build_student("unet_lite").eval(), ct, pet


def test_bf16_prediction_mostly_agrees_with_fp32():
    from mudo_app.predict import predict_arrays
    from mudo_app.transforms.intensity import StudentInput

    net, ct, pet = _untrained_and_random_case((48, 48, 48))
    a = predict_arrays(net, StudentInput(), ct, pet, roi=(32, 32, 32), precision="fp32")
    b = predict_arrays(net, StudentInput(), ct, pet, roi=(32, 32, 32), precision="bf16")
    assert (a == b).mean() > 0.9
    with pytest.raises(ValueError, match="precision"):
        predict_arrays(net, StudentInput(), ct, pet, roi=(32, 32, 32), precision="fp8")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_prediction_agrees_with_cpu():
    """Windows run on the model's device; fp32 (TF32 off) on the GPU gives the CPU's labels."""
    from mudo_app.predict import predict_arrays
    from mudo_app.transforms.intensity import StudentInput

    net, ct, pet = _untrained_and_random_case((48, 40, 56))
    cpu = predict_arrays(net, StudentInput(), ct, pet, roi=(32, 32, 32), precision="fp32")
    torch.backends.cudnn.allow_tf32 = False
    try:
        gpu = predict_arrays(net.cuda(), StudentInput(), ct, pet, roi=(32, 32, 32), precision="fp32")
    finally:
        torch.backends.cudnn.allow_tf32 = True
    assert gpu.shape == cpu.shape and (gpu == cpu).mean() > 0.999
