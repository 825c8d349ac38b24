"""3-D volumes with their affine, read and written with nibabel.

Axis order: arrays are indexed ``[i, j, k]`` exactly as stored in the file (nibabel's order; no
reorientation happens on load). ``affine`` maps the voxel index ``(i, j, k, 1)`` to world RAS+
millimetres, as in NIfTI. Everything that resamples uses :func:`resample_to_grid`, which maps onto an
exact target grid (shape + affine).

Gzip (``.nii.gz``) goes through ISA-L (the ``isal`` package): streamed, so a volume is decompressed
straight into its array (no second copy of the file in memory), about twice as fast as zlib, and with
the interpreter lock released, so several files can be read while other work runs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from isal import igzip
from numpy.typing import DTypeLike, NDArray
from scipy import ndimage

from mudo_app.errors import InputError
from mudo_app.io.atomic import atomic_write

PathLike = str | os.PathLike[str]
NIFTI_SUFFIXES = (".nii.gz", ".nii")


@dataclass
class Volume:
    """A 3-D array on a voxel grid. ``array[i, j, k]``; ``affine`` (4, 4) voxel -> world RAS+ mm."""

    array: NDArray[Any]
    affine: NDArray[Any]

    def __post_init__(self) -> None:
        self.affine = np.array(self.affine, dtype=np.float64)  # own copy: never shared between volumes
        if self.affine.shape != (4, 4):
            raise InputError(f"affine must be 4x4, got {self.affine.shape}")
        if self.array.ndim != 3:
            raise InputError(f"volume must be 3-D, got shape {self.array.shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along i, j, k (norms of the affine's columns)."""
        return spacing_of(self.affine)

    @property
    def orientation(self) -> str:
        """Axis codes such as ``'RAS'`` or ``'LAS'`` (nibabel's ``aff2axcodes``)."""
        return "".join(nib.aff2axcodes(self.affine))


def spacing_of(affine: NDArray[Any]) -> tuple[float, float, float]:
    """Voxel size in mm along i, j, k of a grid with this (4, 4) affine (norms of its columns)."""
    return tuple(float(s) for s in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0))  # type: ignore[return-value]


def _nifti(path: PathLike) -> nib.Nifti1Image:
    """``nib.load`` of a NIfTI file (nibabel's loader is typed for any image kind)."""
    img = nib.load(str(path))
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ValueError(f"not a NIfTI image: {type(img).__name__}")
    return img


_NIFTI_BY_HEADER_SIZE = {348: nib.Nifti1Image, 540: nib.Nifti2Image}  # sizeof_hdr, either byte order


def _read_nifti_gz(path: Path) -> tuple[NDArray[Any], NDArray[Any]]:
    """``(array [i, j, k] as stored (Fortran order), affine)`` of a ``.nii.gz``, decompressed by ISA-L
    while it is read into the array."""
    with igzip.open(path, "rb") as stream:
        size = stream.read(4)
        kind = _NIFTI_BY_HEADER_SIZE.get(int.from_bytes(size, "little")) or _NIFTI_BY_HEADER_SIZE.get(
            int.from_bytes(size, "big")
        )
        if kind is None:
            raise ValueError("not a NIfTI-1 or NIfTI-2 file (header size is neither 348 nor 540)")
        stream.seek(0)
        holder = nib.FileHolder(filename=str(path), fileobj=stream)
        img = kind.from_file_map({"header": holder, "image": holder})
        return np.asanyarray(img.dataobj), img.affine


def case_name(path: PathLike) -> str:
    """File name without its NIfTI suffix: ``/a/case_001.nii.gz`` -> ``case_001``."""
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


_LPS = np.diag([-1.0, -1.0, 1.0])
_SPACES = {"left-posterior-superior": _LPS, "LPS": _LPS, "right-anterior-superior": np.eye(3), "RAS": np.eye(3)}


def _read_nrrd(path: Path) -> tuple[NDArray[Any], NDArray[Any]]:
    """(array [i, j, k], RAS affine) of a NRRD file (3D Slicer's label format)."""
    import nrrd

    data, header = nrrd.read(str(path))  # index order "F": data[i, j, k] like NIfTI
    space = header.get("space", "left-posterior-superior")
    if space not in _SPACES:
        raise ValueError(f"unsupported NRRD space {space!r}")
    dirs = np.asarray(header.get("space directions"), float)
    if dirs.shape != (3, 3) or not np.isfinite(dirs).all():
        raise ValueError(f"NRRD 'space directions' must be three vectors, got {header.get('space directions')}")
    affine = np.eye(4)
    affine[:3, :3] = _SPACES[space] @ dirs.T
    affine[:3, 3] = _SPACES[space] @ np.asarray(header.get("space origin", np.zeros(3)), float)
    return data, affine


def _write_nrrd(array: NDArray[Any], affine: NDArray[Any], path: str) -> None:
    import nrrd

    header = {
        "space": "left-posterior-superior",
        "space directions": (_LPS @ affine[:3, :3]).T,
        "space origin": _LPS @ affine[:3, 3],
        "kinds": ["domain"] * 3,
        "encoding": "gzip",
    }
    nrrd.write(path, np.ascontiguousarray(array), header, index_order="F")


def load_volume(
    path: PathLike,
    what: str = "volume",
    dtype: DTypeLike | None = None,
    allow_nonfinite: bool = False,
    contiguous: bool = True,
) -> Volume:
    """Read a NIfTI (or NRRD) file as a :class:`Volume`; a trailing singleton 4th axis is dropped.

    ``contiguous=False`` keeps the file's memory layout (NIfTI stores ``i`` fastest, Fortran order):
    the same ``[i, j, k]`` values without the C-order copy, for callers that read the array once.
    Raises :class:`InputError` naming ``what`` and the file for a missing, unreadable or corrupt
    file, a volume that is not 3-D, or NaN / infinite voxels (unless ``allow_nonfinite``).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what}: file not found: {path}")
    try:
        if path.suffix == ".nrrd":
            data, affine = _read_nrrd(path)
        elif path.name.endswith(".gz"):
            data, affine = _read_nifti_gz(path)
        else:
            img = _nifti(path)
            data, affine = np.asanyarray(img.dataobj), img.affine
    except Exception as exc:  # any reader failure is a bad file: nibabel and pynrrd raise many kinds
        raise InputError(f"{what}: cannot read {path}: {exc}") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"{what}: {path} must be a 3-D volume, got shape {tuple(data.shape)}")
    if dtype is not None:
        data = data.astype(dtype, copy=False)
    if not allow_nonfinite and np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        n_bad = int((~np.isfinite(data)).sum())
        raise InputError(f"{what}: {path} has {n_bad} NaN or infinite voxels")
    return Volume(np.ascontiguousarray(data) if contiguous else np.asarray(data), affine)


def save_volume(volume: Volume, path: PathLike, dtype: DTypeLike | None = None) -> Path:
    """Write ``volume`` to ``path`` (NIfTI, or NRRD for a ``.nrrd`` name) atomically: a temporary file
    in the same folder, then rename.

    Gzip output is deterministic (nibabel writes no time stamp), so equal inputs give equal bytes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = volume.array if dtype is None else volume.array.astype(dtype)
    img = nib.Nifti1Image(array, volume.affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(volume.affine, code=1)
    img.set_sform(volume.affine, code=1)
    suffix = ".nrrd" if path.suffix == ".nrrd" else ".nii.gz" if path.name.endswith(".gz") else ".nii"
    with atomic_write(path, suffix) as tmp:
        if suffix == ".nrrd":
            _write_nrrd(array, volume.affine, str(tmp))
        elif suffix == ".nii.gz":
            # ISA-L level 1 (about zlib level 1's size, faster); no time stamp and no file name in the
            # gzip header (the temporary name would be there), so equal volumes give equal bytes
            with open(tmp, "wb") as raw, igzip.IGzipFile("", "wb", compresslevel=1, fileobj=raw, mtime=0) as stream:
                holder = nib.FileHolder(fileobj=stream)
                img.to_file_map({"header": holder, "image": holder})
        else:
            nib.save(img, tmp)
    return path


def on_grid(volume: Volume, shape: Sequence[int], affine: NDArray[Any], atol_mm: float = 1e-3) -> bool:
    """True when ``volume`` has ``shape`` and an affine equal to ``affine`` within ``atol_mm``."""
    return volume.shape == tuple(shape) and bool(np.allclose(volume.affine, affine, atol=atol_mm, rtol=0))


def same_grid(a: Volume, b: Volume, atol_mm: float = 1e-3) -> bool:
    """True when ``a`` and ``b`` have the same shape and affines equal within ``atol_mm``."""
    return on_grid(a, b.shape, b.affine, atol_mm)


def read_grid(path: PathLike, what: str = "volume") -> tuple[tuple[int, int, int], NDArray[Any]]:
    """``(shape, affine)`` of a NIfTI file from its header alone (no voxel data is read)."""
    try:
        img = _nifti(path)
    except (OSError, EOFError, nib.filebasedimages.ImageFileError, ValueError) as exc:
        raise InputError(f"{what}: cannot read {path}: {exc}") from exc
    i, j, k = (int(s) for s in img.shape[:3])
    return (i, j, k), np.asarray(img.affine)


def resample_to_grid(
    volume: Volume, shape: tuple[int, int, int], affine: NDArray[Any], order: int = 1, fill: float = 0.0
) -> Volume:
    """Resample ``volume`` onto the grid ``(shape, affine)``; world positions are preserved.

    ``order`` 0 (nearest, for label maps) or 1 (trilinear). Target voxels outside the source get
    ``fill`` (use -1024 for CT in HU). The result has exactly ``shape`` and ``affine``.
    """
    affine = np.asarray(affine, dtype=np.float64)
    # target voxel -> world -> source voxel
    mapping = np.linalg.inv(volume.affine) @ affine
    src = volume.array
    work = src.astype(np.float32, copy=False) if order > 0 else src  # a float32 memory map is read in place
    matrix = mapping[:3, :3]
    if np.allclose(matrix, np.diag(np.diag(matrix)), atol=1e-9):
        matrix = np.diag(matrix)  # axis-aligned grids: scipy's much faster per-axis path, same values
    out = ndimage.affine_transform(
        work,
        matrix,
        offset=mapping[:3, 3],
        output_shape=tuple(shape),
        order=order,
        mode="constant",
        cval=fill,
        prefilter=False,
    )
    if order == 0:
        out = out.astype(src.dtype, copy=False)
    return Volume(out, affine.copy())


CT_FILL_HU = -1024.0  # CT value outside the scanned field of view


def ct_on_pet_grid(ct: Volume, pet: Volume) -> tuple[Volume, bool]:
    """``(ct on the PET grid, whether it had to be resampled)``: trilinear, -1024 HU outside."""
    if same_grid(ct, pet):
        return ct, False
    moved = resample_to_grid(Volume(ct.array.astype(np.float32), ct.affine), pet.shape, pet.affine, 1, CT_FILL_HU)
    return moved, True
