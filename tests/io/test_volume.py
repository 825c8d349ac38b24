import nibabel as nib
import numpy as np
import pytest

from mudo_app.errors import InputError
from mudo_app.io.volume import Volume, case_name, load_volume, resample_to_grid, same_grid, save_volume
from tests.conftest import make_volume


@pytest.mark.parametrize(
    "name, shape, spacing, orientation",
    [
        ("totalseg_example_ct.nii.gz", (122, 101, 112), (3.0, 3.0, 3.0), "RAS"),
        ("autopet3_psma_95b833d46f153cd2_gt.nii.gz", (200, 200, 448), (4.07, 4.07, 2.0), "LAS"),
    ],
)
def test_real_volume_round_trip_keeps_geometry(realdata, tmp_path, name, shape, spacing, orientation):
    vol = load_volume(realdata / name)
    assert vol.shape == shape
    assert vol.orientation == orientation
    np.testing.assert_allclose(vol.spacing, spacing, atol=0.01)
    out = save_volume(vol, tmp_path / "copy.nii.gz")
    back = load_volume(out)
    assert same_grid(vol, back)
    np.testing.assert_allclose(back.affine, nib.load(str(realdata / name)).affine, atol=1e-4)
    np.testing.assert_array_equal(back.array, vol.array)
    assert back.orientation == orientation


def test_resample_las_mask_onto_itself_is_identity(realdata):
    vol = load_volume(realdata / "autopet3_psma_95b833d46f153cd2_gt.nii.gz")
    same = resample_to_grid(vol, vol.shape, vol.affine, order=0)
    np.testing.assert_array_equal(same.array, vol.array)


def test_resample_las_onto_ras_preserves_world_positions(realdata):
    """Flip an LAS mask into RAS by resampling: voxel i maps to 199 - i, world positions unchanged."""
    vol = load_volume(realdata / "autopet3_psma_95b833d46f153cd2_gt.nii.gz")
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = vol.shape[0] - 1
    ras_affine = vol.affine @ flip
    ras = resample_to_grid(vol, vol.shape, ras_affine, order=0)
    assert ras.orientation == "RAS"
    np.testing.assert_array_equal(ras.array, vol.array[::-1])
    # a lesion voxel keeps its world coordinate
    i, j, k = np.argwhere(vol.array > 0)[0]
    w = vol.affine @ [i, j, k, 1]
    i2, j2, k2 = np.round(np.linalg.inv(ras_affine) @ w)[:3].astype(int)
    assert ras.array[i2, j2, k2] == vol.array[i, j, k]


def test_resample_shift_by_one_voxel_hand_computed():
    arr = np.arange(4 * 3 * 2, dtype=np.float32).reshape(4, 3, 2)
    vol = Volume(arr, np.eye(4))
    target = np.eye(4)
    target[0, 3] = 1.0  # target voxel i sits at source voxel i + 1
    out = resample_to_grid(vol, (4, 3, 2), target, order=1, fill=-7.0)
    np.testing.assert_allclose(out.array[:3], arr[1:])
    np.testing.assert_allclose(out.array[3], -7.0)
    np.testing.assert_array_equal(out.affine, target)


def test_case_name():
    assert case_name("/a/b/case_001.nii.gz") == "case_001"
    assert case_name("x.nii") == "x"


def test_save_is_deterministic(tmp_path):
    vol = make_volume()
    a, b = save_volume(vol, tmp_path / "a.nii.gz"), save_volume(vol, tmp_path / "b.nii.gz")
    assert a.read_bytes() == b.read_bytes()
    assert not list(tmp_path.glob(".tmp-*"))


def test_load_rejects_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_volume(tmp_path / "nope.nii.gz", "CT")


def test_load_rejects_corrupt_gzip(tmp_path):
    p = save_volume(make_volume(), tmp_path / "v.nii.gz")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cannot read"):
        load_volume(p, "PET")
    p.write_bytes(b"this is not gzip at all")
    with pytest.raises(InputError, match="cannot read"):
        load_volume(p, "PET")


def test_load_rejects_2d_and_4d(tmp_path):
    p = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((5, 5), np.float32), np.eye(4)), str(p))
    with pytest.raises(InputError, match="3-D"):
        load_volume(p)
    nib.save(nib.Nifti1Image(np.zeros((5, 5, 5, 2), np.float32), np.eye(4)), str(p))
    with pytest.raises(InputError, match="3-D"):
        load_volume(p)
    nib.save(nib.Nifti1Image(np.zeros((5, 5, 5, 1), np.float32), np.eye(4)), str(p))
    assert load_volume(p).shape == (5, 5, 5)


def test_load_rejects_nan(tmp_path):
    vol = make_volume()
    vol.array[1, 2, 3] = np.nan
    vol.array[0, 0, 0] = np.inf
    p = save_volume(vol, tmp_path / "nan.nii.gz")
    with pytest.raises(InputError, match="2 NaN or infinite"):
        load_volume(p, "PET")


def test_volume_rejects_bad_shapes():
    with pytest.raises(InputError, match="3-D"):
        Volume(np.zeros((3, 3)), np.eye(4))
    with pytest.raises(InputError, match="4x4"):
        Volume(np.zeros((3, 3, 3)), np.eye(3))


def test_same_grid():
    a = make_volume()
    b = make_volume(affine=a.affine.copy())
    assert same_grid(a, b)
    b.affine[0, 3] += 0.5
    assert not same_grid(a, b)
    assert not same_grid(a, make_volume(shape=(6, 5, 5), affine=a.affine))


def test_nrrd_round_trip_keeps_grid_and_values(tmp_path):
    """3D Slicer labels come as NRRD in LPS space: an LAS anisotropic affine must survive the trip."""
    import nrrd

    affine = np.array([[-2.0, 0, 0, 90], [0, 2.5, 0, -40], [0, 0, 3.0, 12], [0, 0, 0, 1]])
    label = Volume(np.random.default_rng(0).integers(0, 14, (5, 6, 7)).astype(np.uint8), affine)
    path = save_volume(label, tmp_path / "label.nrrd")
    back = load_volume(path)
    np.testing.assert_array_equal(back.array, label.array)
    np.testing.assert_allclose(back.affine, affine)
    header = nrrd.read_header(str(path))
    assert header["space"] == "left-posterior-superior"
    np.testing.assert_allclose(header["space origin"], [-90, 40, 12])  # RAS -> LPS flips x and y
    (tmp_path / "bad.nrrd").write_text("NRRD0004\nnot a header\n")
    with pytest.raises(InputError, match="cannot read"):
        load_volume(tmp_path / "bad.nrrd")
