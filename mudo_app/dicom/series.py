"""A reference CT series read from a folder of DICOM files (headers only): what an RTSTRUCT or a
DICOM-SEG references, and the geometry of every slice.

Patient coordinates are DICOM's LPS millimetres; volumes in this project are RAS (``Volume.affine``),
so a point goes from one to the other by negating x and y (:data:`LPS_TO_RAS`). Each slice keeps its
own ImagePositionPatient: nothing assumes even slice steps. Pixel ``[r, c]`` of a slice (row ``r``,
column ``c``) lies at ``IPP + c * PixelSpacing[1] * row_direction + r * PixelSpacing[0] * column_direction``,
where ``row_direction`` (the first three ImageOrientationPatient values) is the direction of increasing
column index.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from mudo_app.errors import InputError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class SliceRef:
    """One CT image: its identity and its plane."""

    sop_class_uid: str
    sop_instance_uid: str
    position: np.ndarray  # (3,) ImagePositionPatient, LPS mm: the centre of pixel [0, 0]
    path: Path


@dataclass(frozen=True)
class CtSeries:
    """The reference CT series: identities, shared geometry, slices sorted along the slice normal."""

    study_uid: str
    series_uid: str
    frame_uid: str
    row_direction: np.ndarray  # (3,) LPS unit vector, increasing column index
    column_direction: np.ndarray  # (3,) LPS unit vector, increasing row index
    pixel_spacing: tuple[float, float]  # (between rows, between columns) mm, as PixelSpacing
    rows: int
    columns: int
    slices: tuple[SliceRef, ...]
    header: Any  # the first slice's dataset (patient and study attributes to copy)

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_direction, self.column_direction)

    def pixel_to_patient(self, k: int, rc: np.ndarray) -> np.ndarray:
        """(N, 2) continuous ``(row, column)`` pixel positions on slice ``k`` -> (N, 3) LPS mm."""
        rc = np.asarray(rc, np.float64)
        dr, dc = self.pixel_spacing
        return (
            self.slices[k].position
            + rc[:, 1:2] * dc * self.row_direction[None]
            + rc[:, 0:1] * dr * self.column_direction[None]
        )

    def pixel_centres_ras(self, k: int) -> np.ndarray:
        """(rows, columns, 3) RAS mm of slice ``k``'s pixel centres."""
        r, c = np.meshgrid(np.arange(self.rows), np.arange(self.columns), indexing="ij")
        lps = self.pixel_to_patient(k, np.stack([r.ravel(), c.ravel()], 1))
        return (lps @ LPS_TO_RAS).reshape(self.rows, self.columns, 3)


def _uid(ds: Any, name: str, path: Path) -> str:
    value = str(ds.get(name, "") or "").strip()
    if not value:
        raise InputError(
            f"{path} has an empty {name}: an RTSTRUCT or SEG cannot reference it "
            "(assign UIDs to the series first, e.g. with the anonymiser that removed them)"
        )
    return value


@dataclass(frozen=True)
class Geometry:
    """The slices of one series sorted along its normal, and what they share."""

    items: list[tuple[Path, Any]]  # (path, header) per slice, sorted along the normal
    row_direction: np.ndarray
    column_direction: np.ndarray
    pixel_spacing: tuple[float, float]
    rows: int
    columns: int

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_direction, self.column_direction)

    def positions(self) -> np.ndarray:
        return np.asarray([[float(v) for v in ds.ImagePositionPatient] for _, ds in self.items])


def read_headers(root: Path) -> tuple[list[tuple[Path, Any]], list[Path]]:
    """``(images, unreadable)``: the (path, header) of every DICOM file under ``root`` that has an
    ImagePositionPatient (pixels not read), and the files that are not readable DICOM."""
    images, unreadable = [], []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError, KeyError):
            unreadable.append(path)
            continue
        if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds:
            images.append((path, ds))
    return images, unreadable


def slice_geometry(items: list[tuple[Path, Any]], where: str) -> Geometry:
    """Sort one series' slices along the normal and check they share orientation and pixel grid, no two
    share a position, and no slice is offset within its plane (gantry tilt); :class:`InputError` else."""
    first = items[0][1]
    iop = np.asarray([float(v) for v in first.ImageOrientationPatient])
    spacing = (float(first.PixelSpacing[0]), float(first.PixelSpacing[1]))
    grid = (int(first.Rows), int(first.Columns))
    for path, ds in items:
        if not np.allclose([float(v) for v in ds.ImageOrientationPatient], iop, atol=1e-4):
            raise InputError(f"{path}: ImageOrientationPatient differs from the rest of the series")
        if (float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1])) != spacing or (int(ds.Rows), int(ds.Columns)) != grid:
            raise InputError(f"{path}: pixel grid (PixelSpacing, Rows, Columns) differs from the rest of the series")
    normal = np.cross(iop[:3], iop[3:])
    ordered = sorted(
        items, key=lambda item: float(np.asarray([float(v) for v in item[1].ImagePositionPatient]) @ normal)
    )
    geometry = Geometry(ordered, iop[:3], iop[3:], spacing, *grid)
    for step in np.diff(geometry.positions(), axis=0):
        along = float(step @ normal)
        if along <= 1e-3:
            raise InputError(f"{where}: two slices share one position along the slice normal")
        if np.linalg.norm(step - along * normal) > 1e-2 * max(1.0, along):
            raise InputError(
                f"{where}: the slices are offset within their planes (gantry tilt or a sheared series); "
                "resample the series onto an untilted grid first"
            )
    return geometry


def read_ct_series(folder: str | os.PathLike[str]) -> CtSeries:
    """Read the headers of the one CT series in ``folder`` (a tree of files, any names).

    Files that are not DICOM are skipped; everything else must be one CT series with non-empty UIDs,
    one orientation, one pixel grid and no gantry tilt, else :class:`InputError` names the problem.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"reference CT folder not found: {root}")
    found, _ = read_headers(root)
    return ct_series_of(found, str(root))


def read_ct_files(paths: list[str | os.PathLike[str]], where: str) -> CtSeries:
    """:func:`read_ct_series` of the given files (a case's recorded CT series)."""
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise InputError(f"{where}: {len(missing)} of the CT series' {len(paths)} files are gone, e.g. {missing[0]}")
    return ct_series_of([(Path(p), pydicom.dcmread(p, stop_before_pixels=True)) for p in paths], where)


def ct_series_of(found: list[tuple[Path, Any]], root: str) -> CtSeries:
    """The :class:`CtSeries` of headers ``found`` (one CT series; module checks), ``root`` names it."""
    if not found:
        raise InputError(f"no DICOM image with a position was found in {root}")
    modalities = {str(ds.get("Modality", "")) for _, ds in found}
    if modalities != {"CT"}:
        raise InputError(f"the reference series must be CT only; {root} holds modalities {sorted(modalities)}")
    series = {_uid(ds, "SeriesInstanceUID", p) for p, ds in found}
    if len(series) != 1:
        raise InputError(f"{root} holds {len(series)} CT series; give the folder of one series")
    first_path, first = found[0]
    study, frame = _uid(first, "StudyInstanceUID", first_path), _uid(first, "FrameOfReferenceUID", first_path)
    geometry = slice_geometry(found, root)
    slices = []
    for path, ds in geometry.items:
        for name, value in (("StudyInstanceUID", study), ("FrameOfReferenceUID", frame)):
            if _uid(ds, name, path) != value:
                raise InputError(f"{path}: {name} differs from the rest of the series")
        sop_class = str(ds.get("SOPClassUID", "") or "") or str(ds.file_meta.get("MediaStorageSOPClassUID", ""))
        if not sop_class.strip():
            raise InputError(f"{path} has an empty SOPClassUID: an RTSTRUCT or SEG cannot reference it")
        position = np.asarray([float(v) for v in ds.ImagePositionPatient])
        slices.append(SliceRef(sop_class, _uid(ds, "SOPInstanceUID", path), position, path))
    if len({s.sop_instance_uid for s in slices}) != len(slices):
        raise InputError(f"{root}: two files share one SOPInstanceUID")
    return CtSeries(
        study_uid=study,
        series_uid=str(first.SeriesInstanceUID),
        frame_uid=frame,
        row_direction=geometry.row_direction,
        column_direction=geometry.column_direction,
        pixel_spacing=geometry.pixel_spacing,
        rows=geometry.rows,
        columns=geometry.columns,
        slices=tuple(slices),
        header=first,
    )
