import nibabel as nib
import numpy as np
import pytest

from mudo_app.errors import InputError
from mudo_app.io.uploads import read_label_upload, read_petct_upload

AFFINE = np.diag([2.0, 2.0, 3.0, 1.0])


def _nifti(tmp_path, array, name="x.nii.gz"):
    path = tmp_path / name
    nib.save(nib.Nifti1Image(array, AFFINE), path)
    return path


def test_label_upload_with_integral_floats_becomes_uint8(tmp_path):
    array = np.zeros((4, 4, 4), np.float32)
    array[1, 1, 1], array[2, 2, 2] = 13.0, 1.0
    label = read_label_upload(_nifti(tmp_path, array))
    assert label.array.dtype == np.uint8 and label.array[1, 1, 1] == 13 and label.array.sum() == 14
    np.testing.assert_allclose(label.affine, AFFINE)


@pytest.mark.parametrize("value, match", [(14.0, "not in the label map"), (0.5, "whole numbers")])
def test_label_upload_outside_the_label_map_is_refused(tmp_path, value, match):
    array = np.zeros((4, 4, 4), np.float32)
    array[0, 0, 0] = value
    with pytest.raises(InputError, match=match):
        read_label_upload(_nifti(tmp_path, array), "label for c1")


def test_petct_upload_splits_its_two_channels_on_one_grid(tmp_path):
    data = np.stack([np.full((3, 4, 5), -100.0), np.full((3, 4, 5), 2.5)], -1).astype(np.float32)
    ct, pet = read_petct_upload(_nifti(tmp_path, data))
    assert ct.shape == pet.shape == (3, 4, 5) and ct.array.max() == -100 and pet.array.min() == 2.5
    np.testing.assert_allclose(ct.affine, pet.affine)


@pytest.mark.parametrize(
    "data, match",
    [
        (np.zeros((3, 4, 5), np.float32), "2 channels"),
        (np.zeros((3, 4, 5, 3), np.float32), "2 channels"),
        (np.full((3, 4, 5, 2), np.nan, np.float32), "NaN"),
    ],
)
def test_petct_upload_of_another_shape_or_with_nan_is_refused(tmp_path, data, match):
    with pytest.raises(InputError, match=match):
        read_petct_upload(_nifti(tmp_path, data))


def test_unreadable_petct_upload_is_refused(tmp_path):
    path = tmp_path / "bad.nii.gz"
    path.write_bytes(b"not a nifti")
    with pytest.raises(InputError, match="not a readable NIfTI"):
        read_petct_upload(path)


def _corrupt_crc(path):
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF  # the gzip trailer's CRC32
    path.write_bytes(bytes(data))


def test_a_label_whose_gzip_crc_fails_is_refused_although_nibabel_reads_it(tmp_path):
    array = np.random.default_rng(0).integers(0, 14, (64, 64, 64)).astype(np.uint8)  # larger than gzip's buffer
    path = _nifti(tmp_path, array)
    _corrupt_crc(path)
    assert np.array_equal(np.asarray(nib.load(path).dataobj), array)  # nibabel never reads the trailer
    with pytest.raises(InputError, match="corrupt gzip stream"):
        read_label_upload(path)


def test_the_voxel_cap_is_applied_from_the_header_before_reading(tmp_path):
    path = _nifti(tmp_path, np.zeros((20, 20, 20), np.uint8))
    with pytest.raises(InputError, match="8000 voxels .* limit of 7999"):
        read_label_upload(path, max_voxels=7999)
    assert read_label_upload(path, max_voxels=8000).shape == (20, 20, 20)


def test_complex_labels_are_refused(tmp_path):
    path = _nifti(tmp_path, np.ones((4, 4, 4), np.complex64))
    with pytest.raises(InputError, match="not a real number"):
        read_label_upload(path)


@pytest.mark.parametrize(
    "ct, pet, match",
    [
        (2.0, -1000.0, "PET channel .* channels"),  # channels swapped
        (-100.0, -1e30, "PET channel"),
        (1e6, 1.0, "CT channel"),
    ],
)
def test_petct_values_no_scanner_makes_are_refused(tmp_path, ct, pet, match):
    data = np.stack([np.full((3, 4, 5), ct), np.full((3, 4, 5), pet)], -1).astype(np.float32)
    with pytest.raises(InputError, match=match):
        read_petct_upload(_nifti(tmp_path, data))


def test_petct_with_a_singular_affine_is_refused(tmp_path):
    path = tmp_path / "flat.nii.gz"
    img = nib.Nifti1Image(np.zeros((3, 4, 5, 2), np.float32), None)
    img.header.set_sform(np.diag([1.0, 1.0, 0.0, 1.0]), code=1)  # one axis of zero length
    nib.save(img, path)
    with pytest.raises(InputError, match="singular"):
        read_petct_upload(path)
