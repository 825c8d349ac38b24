"""RTSTRUCT export of a label map against its reference CT series (our own writer, on pydicom).

One ROI per label present, named and coloured from the label map (:mod:`mudo_app.labels`, stable
across runs), ROIGenerationAlgorithm AUTOMATIC, RTROIInterpretedType ORGAN for organs and GTV for
lesions. On every CT slice each 4-connected region gets a CLOSED_PLANAR contour traced along the
pixel edges (:mod:`mudo_app.dicom.contours`); holes are, by default, contours of their own nested
inside the region's (``holes="nested"``; the even-odd rule of planning systems makes them holes), or
joined to it by a zero-width cut (``holes="keyhole"``). Points are mapped into each slice's own
ImagePositionPatient and orientation; every contour references its slice's SOP Instance UID, the
structure set the CT's study, series and frame of reference. DS values have at most 16 characters.

The label is sampled at each CT pixel centre through its own affine (nearest voxel), so a label on
another grid is resampled onto the CT's; the notes say when that happened.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from mudo_app.dicom.contours import keyhole, trace_contours
from mudo_app.dicom.series import CtSeries
from mudo_app.errors import InputError
from mudo_app.io.atomic import atomic_write
from mudo_app.io.volume import Volume
from mudo_app.labels import LABELS, LESION, Label, check_label_values

RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
DETACHED_STUDY_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"  # what RTReferencedStudySequence conventionally names
HOLE_STYLES = ("nested", "keyhole")
GRID_TOLERANCE = 1e-3  # voxels: a CT pixel centre this close to a label voxel centre is on the label grid


@dataclass
class Export:
    """What an export wrote and how: ROI names and their contour counts, notes for the user."""

    path: Path
    rois: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def label_on_series(label: Volume, series: CtSeries) -> tuple[np.ndarray, bool]:
    """The label sampled at every CT pixel centre: ``((slices, rows, columns) uint8, on_grid)``.

    ``on_grid``: every pixel centre coincides with a label voxel centre (no resampling happened).
    Pixels outside the label's grid are background.
    """
    inv = np.linalg.inv(label.affine)
    out = np.zeros((len(series.slices), series.rows, series.columns), np.uint8)
    on_grid = True
    shape = np.array(label.shape)
    for k in range(len(series.slices)):
        ras = series.pixel_centres_ras(k).reshape(-1, 3)
        ijk = ras @ inv[:3, :3].T + inv[:3, 3]
        nearest = np.rint(ijk)
        on_grid = on_grid and bool(np.abs(ijk - nearest).max() <= GRID_TOLERANCE)
        idx = nearest.astype(np.int64)
        inside = np.all((idx >= 0) & (idx < shape), axis=1)
        values = np.zeros(len(idx), np.uint8)
        values[inside] = label.array[tuple(idx[inside].T)]
        out[k] = values.reshape(series.rows, series.columns)
    return out, on_grid


def labels_on_ct(label: Volume, series: CtSeries) -> tuple[np.ndarray, list[Label], list[str]]:
    """What an export writes: the label checked (values of the label map) and sampled on the CT
    (:func:`label_on_series`), the labels present there, and the notes for the user; nothing to
    export is an :class:`InputError`."""
    check_label_values(label.array, "label")
    on_ct, on_grid = label_on_series(label, series)
    notes = [] if on_grid else ["the label is not on the CT's grid: it was resampled (nearest voxel) onto it"]
    present = [lbl for lbl in LABELS if (on_ct == lbl.idx).any()]
    if not present:
        what = "has no labelled voxel" if not label.array.any() else "has no labelled voxel inside the reference CT"
        raise InputError(f"the label {what}: there is nothing to export")
    return on_ct, present, notes


def _ds(value: float) -> str:
    """A decimal string of at most 16 characters (DICOM DS), 0.1 micrometre resolution where it fits."""
    for digits in (4, 3, 2, 1, 0):
        text = f"{value:.{digits}f}"
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        if text in ("-0", ""):
            text = "0"
        if len(text) <= 16:
            return text
    raise ValueError(f"{value} does not fit a DICOM decimal string")


def _now() -> tuple[str, str]:
    now = dt.datetime.now()
    return now.strftime("%Y%m%d"), now.strftime("%H%M%S")


def _copy_patient_and_study(ds: Dataset, ref: Dataset) -> None:
    for name in (
        "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
        "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber", "StudyDescription",
    ):  # fmt: skip
        setattr(ds, name, ref.get(name, ""))


def _image_ref(sop_class: str, sop_instance: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    return item


def build_rtstruct(
    label: Volume,
    series: CtSeries,
    holes: str = "nested",
    algorithm: str = "MuDuo student",
    description: str = "",
) -> tuple[Dataset, dict[str, int], list[str]]:
    """The RTSTRUCT dataset of ``label`` (values 0..13, RAS affine) on the CT ``series``.

    Args:
        label: the label map.
        series: the reference CT (:func:`mudo_app.dicom.series.read_ct_series`).
        holes: ``nested`` (holes as their own contours) or ``keyhole`` (joined by a zero-width cut).
        algorithm: ROIGenerationDescription: the model and checkpoint that made the label.
        description: StructureSetDescription.

    Returns:
        ``(dataset, {ROI name: number of contours}, notes)``.
    """
    if holes not in HOLE_STYLES:
        raise InputError(f"holes must be one of {HOLE_STYLES}, got {holes!r}")
    on_ct, present, notes = labels_on_ct(label, series)
    date, time = _now()
    ref = series.header

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.SOPClassUID = RT_STRUCTURE_SET_STORAGE
    ds.SOPInstanceUID = generate_uid()
    _copy_patient_and_study(ds, ref)
    ds.StudyInstanceUID = series.study_uid
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 901
    ds.SeriesDescription = "MuDuo contours"
    ds.OperatorsName = ""
    ds.Manufacturer = "MuDuo Label"
    ds.ManufacturerModelName = "MuDuo Label"
    ds.SoftwareVersions = "mudo_app"
    ds.FrameOfReferenceUID = series.frame_uid
    ds.PositionReferenceIndicator = ""
    ds.InstanceNumber = 1
    ds.StructureSetLabel = "MuDuo"
    ds.StructureSetName = "MuDuo"
    if description:
        ds.StructureSetDescription = description[:1024]
    ds.StructureSetDate, ds.StructureSetTime = date, time
    ds.ApprovalStatus = "UNAPPROVED"

    contour_images = Sequence([_image_ref(s.sop_class_uid, s.sop_instance_uid) for s in series.slices])
    ref_series = Dataset()
    ref_series.SeriesInstanceUID = series.series_uid
    ref_series.ContourImageSequence = contour_images
    ref_study = _image_ref(DETACHED_STUDY_MANAGEMENT, series.study_uid)
    ref_study.RTReferencedSeriesSequence = Sequence([ref_series])
    frame = Dataset()
    frame.FrameOfReferenceUID = series.frame_uid
    frame.RTReferencedStudySequence = Sequence([ref_study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])

    rois, contours_of, observations = Sequence(), Sequence(), Sequence()
    counts: dict[str, int] = {}
    for number, lbl in enumerate(present, start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = series.frame_uid
        roi.ROIName = lbl.name
        roi.ROIGenerationAlgorithm = "AUTOMATIC"
        roi.ROIGenerationDescription = algorithm[:64]
        rois.append(roi)
        contours = Sequence()
        for k, slice_ref in enumerate(series.slices):
            mask = on_ct[k] == lbl.idx
            if not mask.any():
                continue
            loops = trace_contours(mask)
            if holes == "keyhole":
                loops = keyhole(loops)
            for loop in loops:
                if len(loop) < 3:
                    continue
                lps = series.pixel_to_patient(k, loop - 0.5)  # corner (y, x) -> pixel (row, column)
                item = Dataset()
                item.ContourImageSequence = Sequence([_image_ref(slice_ref.sop_class_uid, slice_ref.sop_instance_uid)])
                item.ContourGeometricType = "CLOSED_PLANAR"
                item.NumberOfContourPoints = len(loop)
                item.ContourNumber = len(contours) + 1
                item.ContourData = [_ds(v) for v in lps.ravel()]
                contours.append(item)
        counts[lbl.name] = len(contours)
        roi_contour = Dataset()
        roi_contour.ReferencedROINumber = number
        roi_contour.ROIDisplayColor = list(lbl.color)
        roi_contour.ContourSequence = contours
        contours_of.append(roi_contour)
        obs = Dataset()
        obs.ObservationNumber = number
        obs.ReferencedROINumber = number
        obs.RTROIInterpretedType = "GTV" if lbl.idx == LESION else "ORGAN"
        obs.ROIInterpreter = ""
        observations.append(obs)
    ds.StructureSetROISequence = rois
    ds.ROIContourSequence = contours_of
    ds.RTROIObservationsSequence = observations
    return ds, counts, notes


def write_dataset(path: str | os.PathLike[str], ds: Dataset) -> Path:
    """Write ``ds`` as a DICOM Part 10 file (explicit VR little endian), atomically."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    ds.is_little_endian, ds.is_implicit_VR = True, False
    with atomic_write(path) as tmp:
        ds.save_as(tmp, write_like_original=False)
    return Path(path)


def write_rtstruct(
    path: str | os.PathLike[str], label: Volume, series: CtSeries, holes: str = "nested", algorithm: str = "MuDuo"
) -> Export:
    """:func:`build_rtstruct`, written to ``path`` atomically (nothing is written on an error)."""
    ds, counts, notes = build_rtstruct(label, series, holes=holes, algorithm=algorithm)
    return Export(write_dataset(path, ds), counts, notes)
