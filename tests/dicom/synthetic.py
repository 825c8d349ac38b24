"""Synthetic CT DICOM series for the DICOM tests, written with pydicom (headers and small int16 pixels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from mudo_app.io.volume import Volume

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
JPEGLS_LOSSLESS = "1.2.840.10008.1.2.4.80"


def _jpeg_ls(pixels: np.ndarray) -> bytes:
    import io

    import pillow_jpls  # noqa: F401  # registers the JPEG-LS codec with Pillow (a highdicom dependency)
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG-LS")
    return buf.getvalue()


def write_ct_series(
    folder: Path,
    rows: int,
    columns: int,
    positions: list[list[float]],
    orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    pixel_spacing=(1.0, 1.0),
    study_uid: str | None = None,
    frame_uid: str | None = None,
    patient_id: str = "SYN-1",
    pixels: np.ndarray | None = None,
    jpeg_ls: bool = False,
) -> list[Path]:
    """One CT series, a file per slice (positions LPS mm, in any order), with fresh UIDs; ``pixels``
    (slices, rows, columns) HU (stored + 1024 with intercept -1024), zeros (-1024 HU) by default;
    ``jpeg_ls``: pixel data JPEG-LS lossless compressed (pillow-jpls)."""
    folder.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid = study_uid or generate_uid(), generate_uid()
    frame_uid = frame_uid or generate_uid()
    paths = []
    for n, pos in enumerate(positions):
        ds = Dataset()
        ds.SOPClassUID, ds.SOPInstanceUID = CT_IMAGE_STORAGE, generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.Modality, ds.PatientName, ds.PatientID = "CT", "Synthetic^Phantom", patient_id
        ds.PatientBirthDate, ds.PatientSex, ds.StudyDate, ds.StudyTime = "", "O", "20260101", "120000"
        ds.ReferringPhysicianName, ds.StudyID, ds.AccessionNumber = "", "1", ""
        ds.SeriesNumber, ds.InstanceNumber = 1, n + 1
        ds.ImageOrientationPatient = list(orientation)
        ds.ImagePositionPatient = list(pos)
        ds.PixelSpacing = list(pixel_spacing)
        ds.SliceThickness = 2.0
        ds.Rows, ds.Columns = rows, columns
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        hu = np.full((rows, columns), -1024, np.int16) if pixels is None else pixels[n]
        ds.PixelData = (np.asarray(hu) + 1024).astype(np.int16).tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        if jpeg_ls:
            ds.PixelData = encapsulate([_jpeg_ls((np.asarray(hu) + 1024).astype(np.uint16))])
            ds["PixelData"].VR, ds["PixelData"].is_undefined_length = "OB", True
            ds.PixelRepresentation = 0
            meta.TransferSyntaxUID = JPEGLS_LOSSLESS
        ds.file_meta = meta
        ds.is_little_endian, ds.is_implicit_VR = True, False
        path = folder / f"img{n:03d}"  # any names
        ds.save_as(path, write_like_original=False)
        paths.append(path)
    return paths


def label_on_first_slice_grid(series, spacing_k: float | None = None) -> np.ndarray:
    """The RAS affine of a regular grid whose voxels [c, r, k] are the series' pixels (i = column,
    j = row, k = slice at the first step): the CT grid when its steps are even."""
    x, y, n = series.row_direction, series.column_direction, series.normal
    dr, dc = series.pixel_spacing
    step = spacing_k or float((series.slices[1].position - series.slices[0].position) @ n)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = x * dc, y * dr, n * step, series.slices[0].position
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def rasterise(ds: pydicom.Dataset, series) -> dict[str, np.ndarray]:
    """An independent reader: each ROI's contours filled on the CT slices (even-odd over a slice's
    contours), pixel centres tested with matplotlib's point-in-polygon."""
    from matplotlib.path import Path as MplPath

    by_uid = {s.sop_instance_uid: k for k, s in enumerate(series.slices)}
    names = {r.ROINumber: r.ROIName for r in ds.StructureSetROISequence}
    rr, cc = np.meshgrid(np.arange(series.rows), np.arange(series.columns), indexing="ij")
    centres = np.stack([cc.ravel(), rr.ravel()], 1).astype(float)
    out = {}
    for roi in ds.ROIContourSequence:
        filled = np.zeros((len(series.slices), series.rows, series.columns), bool)
        for contour in roi.ContourSequence:
            k = by_uid[contour.ContourImageSequence[0].ReferencedSOPInstanceUID]
            pts = np.asarray([float(v) for v in contour.ContourData]).reshape(-1, 3) - series.slices[k].position
            assert np.allclose(pts @ series.normal, 0, atol=1e-3), "contour off its slice's plane"
            dr, dc = series.pixel_spacing
            col, row = pts @ series.row_direction / dc, pts @ series.column_direction / dr
            inside = MplPath(np.stack([col, row], 1)).contains_points(centres).reshape(series.rows, series.columns)
            filled[k] ^= inside
        out[names[roi.ReferencedROINumber]] = filled
    return out


def volume(array: np.ndarray, affine: np.ndarray) -> Volume:
    return Volume(array, affine)


def write_pet_series(
    folder: Path,
    stored: np.ndarray,
    slopes,
    positions: list[list[float]],
    study_uid: str,
    frame_uid: str,
    pixel_spacing=(4.0, 4.0),
    patient_id: str = "SYN-1",
    header: dict | None = None,
    radiopharmaceutical: dict | None = None,
    philips_suv_scale: str | None = None,
) -> list[Path]:
    """One PET series (Modality PT): ``stored`` (slices, rows, columns) int16 with one RescaleSlope per
    slice; by default Units BQML, DecayCorrection START, CorrectedImage ATTN/DECY, 75 kg, 370 MBq of
    F-18 (half-life 6586.2 s) injected at 10:00:00 on 2026-01-01, series and acquisition at 11:00:00.
    ``header`` / ``radiopharmaceutical`` override or (value None) remove attributes."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    base = {
        "Units": "BQML", "DecayCorrection": "START", "CorrectedImage": ["ATTN", "DECY"], "PatientWeight": 75.0,
        "SeriesDate": "20260101", "SeriesTime": "110000", "AcquisitionDate": "20260101", "AcquisitionTime": "110000",
    }  # fmt: skip
    drug = {"RadionuclideTotalDose": 370e6, "RadionuclideHalfLife": 6586.2, "RadiopharmaceuticalStartTime": "100000"}
    base.update(header or {})
    drug.update(radiopharmaceutical or {})
    paths = []
    for n, pos in enumerate(positions):
        ds = Dataset()
        ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.128", generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.Modality, ds.PatientName, ds.PatientID = "PT", "Synthetic^Phantom", patient_id
        ds.StudyDate, ds.StudyTime, ds.SeriesNumber, ds.InstanceNumber = "20260101", "100000", 2, n + 1
        for key, value in base.items():
            if value is not None:
                setattr(ds, key, value)
        info = Dataset()
        for key, value in drug.items():
            if value is not None:
                setattr(info, key, value)
        ds.RadiopharmaceuticalInformationSequence = [info]
        if philips_suv_scale is not None:
            ds.add_new((0x7053, 0x0010), "LO", "Philips PET Private Group")
            ds.add_new((0x7053, 0x1000), "DS", philips_suv_scale)
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.ImagePositionPatient = list(pos)
        ds.PixelSpacing = list(pixel_spacing)
        ds.Rows, ds.Columns = stored.shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, float(slopes[n])
        ds.PixelData = stored[n].astype(np.int16).tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        ds.is_little_endian, ds.is_implicit_VR = True, False
        path = folder / f"pet{n:03d}.dcm"
        ds.save_as(path, write_like_original=False)
        paths.append(path)
    return paths


def write_study(
    folder: Path, patient_id: str = "SYN-1", pet_frame: str | None = None, jpeg_ls: bool = False, **pet
) -> dict:
    """A PET/CT study: CT 2 mm pixels (40 HU inside a box), PET 4 mm with random stored values and a
    slope per slice. Returns what the test needs to hand-compute the SUV."""
    study, frame = generate_uid(), generate_uid()
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 3000, size=(6, 10, 12)).astype(np.int16)
    slopes = [0.5, 1.0, 2.5, 0.75, 1.25, 3.0]
    positions = [[-20.0, -16.0, 4.0 * k] for k in range(6)]
    write_pet_series(folder / "pet", stored, slopes, positions, study, pet_frame or frame, patient_id=patient_id, **pet)
    hu = np.full((11, 20, 24), -1000, np.int16)
    hu[:, 5:15, 6:18] = 40
    write_ct_series(folder / "ct", 20, 24, [[-21.0, -17.0, 2.0 * k] for k in range(11)], pixel_spacing=(2.0, 2.0),
                    study_uid=study, frame_uid=frame, patient_id=patient_id, pixels=hu, jpeg_ls=jpeg_ls)  # fmt: skip
    return {"stored": stored, "slopes": np.asarray(slopes), "study_uid": study}
