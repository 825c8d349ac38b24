"""Files a client uploads, parsed and checked before anything is stored (used by the server's datastore).

Axis order and affines as in :mod:`mudo_app.io.volume`: arrays ``[i, j, k]`` as stored in the file,
affine voxel -> world RAS+ mm.

Every check that can be made from the header is made before the voxels are read: the voxel count
(``max_voxels``), and for gzip files the whole stream is verified (CRC and length, which nibabel never
reads) while decompressing no more than the header says the file holds.
"""

from __future__ import annotations

import gzip
import zlib
from typing import Any

import nibabel as nib
import numpy as np
from numpy.typing import NDArray

from mudo_app.errors import InputError
from mudo_app.io.volume import PathLike, Volume, load_volume
from mudo_app.labels import check_label_values

DEFAULT_MAX_VOXELS = 256 * 1024 * 1024  # a whole-body 400 x 400 x 326 case has 52 M
PET_SUV_RANGE = (-10.0, 10_000.0)  # SUV; reconstruction noise dips slightly below 0
CT_HU_RANGE = (-4_096.0, 40_000.0)  # HU; metal reaches a few 10^4


def _header_shape(path: PathLike, what: str) -> tuple[int, ...]:
    """The voxel grid a NIfTI or NRRD header announces (no voxel data read)."""
    name = str(path)
    try:
        if name.endswith(".nrrd"):
            import nrrd

            return tuple(int(s) for s in nrrd.read_header(name)["sizes"])
        img = nib.load(name)
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise TypeError(f"a {type(img).__name__}, not a NIfTI image")
        return tuple(int(s) for s in img.shape)
    except Exception as exc:  # any reader failure is a bad file
        raise InputError(f"{what}: cannot read the file: not a readable NIfTI or NRRD ({exc})") from exc


def check_upload(path: PathLike, what: str, max_voxels: int = DEFAULT_MAX_VOXELS) -> tuple[int, ...]:
    """Refuse a file whose header announces more than ``max_voxels`` voxels, or whose gzip stream is
    corrupt (CRC or length mismatch, truncated, trailing garbage, or more data than the header says);
    returns the announced shape.
    """
    shape = _header_shape(path, what)
    voxels = int(np.prod(shape, dtype=np.int64))
    if voxels > max_voxels:
        raise InputError(f"{what}: {voxels} voxels {shape} exceed this server's limit of {max_voxels}")
    if str(path).endswith(".gz"):
        # at most 16 bytes a voxel (complex128) plus a NIfTI header and extensions
        _verify_gzip(path, what, limit=16 * voxels + (1 << 20))
    return shape


def _verify_gzip(path: PathLike, what: str, limit: int) -> None:
    total = 0
    try:
        with gzip.open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                total += len(chunk)
                if total > limit:
                    raise InputError(f"{what}: the gzip stream holds more data than its header announces")
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise InputError(f"{what}: corrupt gzip stream ({exc})") from exc


def read_label_upload(path: PathLike, what: str = "label", max_voxels: int = DEFAULT_MAX_VOXELS) -> Volume:
    """A label map (NIfTI or NRRD) as uint8 values of the label map, or :class:`InputError` naming why not.

    Non-numeric or complex voxel types, values outside 0..13 and non-integral values are refused;
    integral floating-point values (what some viewers write) are accepted and converted.
    """
    check_upload(path, what, max_voxels)
    label = load_volume(path, what)
    if not np.issubdtype(label.array.dtype, np.number) or np.iscomplexobj(label.array):
        raise InputError(f"{what}: voxel type {label.array.dtype} is not a real number")
    check_label_values(label.array, what)
    return Volume(np.rint(label.array).astype(np.uint8), label.affine)


def _check_range(array: NDArray[Any], bounds: tuple[float, float], what: str, hint: str) -> None:
    lo, hi = float(array.min()), float(array.max())
    if lo < bounds[0] or hi > bounds[1]:
        raise InputError(f"{what} values span [{lo:g}, {hi:g}], outside [{bounds[0]:g}, {bounds[1]:g}]{hint}")


def read_petct_upload(path: PathLike, max_voxels: int = DEFAULT_MAX_VOXELS) -> tuple[Volume, Volume]:
    """``(ct, pet)`` from one 4-D NIfTI ``(X, Y, Z, 2)``: channel 0 the CT in HU, channel 1 the PET in SUV.

    Both channels share the file's grid and affine. An unreadable or corrupt file, another shape, a
    singular affine, NaN / infinite voxels, or values no CT (HU) or PET (SUV) can have raise
    :class:`InputError`.
    """
    what = "PET/CT upload"
    check_upload(path, what, 2 * max_voxels)
    try:
        img = nib.load(str(path))
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise TypeError(f"a {type(img).__name__}, not a NIfTI image")
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many kinds for a bad file
        raise InputError(f"upload is not a readable NIfTI volume: {exc}") from exc
    if data.ndim != 4 or data.shape[3] != 2:
        raise InputError(
            f"a PET/CT case is one 4-D NIfTI with CT and PET as its 2 channels (X, Y, Z, 2); "
            f"got shape {tuple(data.shape)}"
        )
    if np.iscomplexobj(data) or not np.issubdtype(data.dtype, np.number):
        raise InputError(f"{what}: voxel type {data.dtype} is not a real number")
    data = data.astype(np.float32)
    if not np.isfinite(data).all():
        raise InputError("upload has NaN or infinite voxels")
    affine = np.asarray(img.affine, float)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise InputError(f"{what}: the affine is singular or not finite: {affine.tolist()}")
    _check_range(data[..., 0], CT_HU_RANGE, "CT channel (0)", ": is it in HU, and are the channels in order CT, PET?")
    _check_range(data[..., 1], PET_SUV_RANGE, "PET channel (1)", ": is it in SUV, and are the channels CT, PET?")
    return Volume(data[..., 0], affine), Volume(data[..., 1], affine)
