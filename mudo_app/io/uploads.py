"""Files a client uploads, parsed and checked before anything is stored (used by the server's datastore).

Axis order and affines as in :mod:`mudo_app.io.volume`: arrays ``[i, j, k]`` as stored in the file,
affine voxel -> world RAS+ mm.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np

from mudo_app.errors import InputError
from mudo_app.io.volume import PathLike, Volume, load_volume
from mudo_app.labels import check_label_values


def read_label_upload(path: PathLike, what: str = "label") -> Volume:
    """A label map (NIfTI or NRRD) as uint8 values of the label map, or :class:`InputError` naming why not.

    Non-numeric voxel types, values outside 0..13 and non-integral values are refused; integral
    floating-point values (what some viewers write) are accepted and converted.
    """
    label = load_volume(path, what)
    if not np.issubdtype(label.array.dtype, np.number):
        raise InputError(f"{what}: voxel type {label.array.dtype} is not numeric")
    check_label_values(label.array, what)
    return Volume(np.rint(label.array).astype(np.uint8), label.affine)


def read_petct_upload(path: PathLike) -> tuple[Volume, Volume]:
    """``(ct, pet)`` from one 4-D NIfTI ``(X, Y, Z, 2)``: channel 0 the CT in HU, channel 1 the PET in SUV.

    Both channels share the file's grid and affine. An unreadable file, another shape, or NaN /
    infinite voxels raise :class:`InputError`.
    """
    try:
        img = nib.load(str(path))
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise TypeError(f"a {type(img).__name__}, not a NIfTI image")
        data = np.asanyarray(img.dataobj).astype(np.float32)
    except Exception as exc:  # nibabel raises many kinds for a bad file
        raise InputError(f"upload is not a readable NIfTI volume: {exc}") from exc
    if data.ndim != 4 or data.shape[3] != 2:
        raise InputError(
            f"a PET/CT case is one 4-D NIfTI with CT and PET as its 2 channels (X, Y, Z, 2); "
            f"got shape {tuple(data.shape)}"
        )
    if not np.isfinite(data).all():
        raise InputError("upload has NaN or infinite voxels")
    return Volume(data[..., 0], img.affine), Volume(data[..., 1], img.affine)
