"""``muduo import --from dicom``: PET/CT studies from a tree of DICOM files into a datastore.

Files may have any names and lie in any folders; unreadable files are skipped with a note. Studies
are grouped by StudyInstanceUID. Each study needs one attenuation-corrected PET series (Modality PT)
and a CT series in the PET's frame of reference (the one with the most slices when there are
several); the PET becomes SUVbw (:mod:`mudo_app.dicom.suv`, rescale per slice), the CT is resampled
onto the PET grid (trilinear, -1024 HU outside: autoPET's "CTres"), and the case is written with its
provenance: series UIDs, the SUV factor and how it was found, the CT files (what an RTSTRUCT export
references). A study that cannot be imported is skipped with the reason; the others go on.

Volumes are ``[i, j, k]`` = (column, row, slice along the normal) with a RAS affine, slices on a
regular grid (an uneven series is refused for import; the RTSTRUCT writer handles uneven CT slices).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from tqdm.auto import tqdm

from mudo_app.dicom.series import Geometry, read_headers, slice_geometry
from mudo_app.dicom.suv import suv_factor
from mudo_app.errors import InputError
from mudo_app.io.datastore import PetCtDatastore
from mudo_app.io.importers import ImportReport, safe_id
from mudo_app.io.volume import CT_FILL_HU, PathLike, Volume, ct_on_pet_grid

EVEN_STEP_TOLERANCE = 0.01  # relative: slice steps this close to their mean count as one grid step


def series_volume(geometry: Geometry, where: str, scale: float = 1.0) -> Volume:
    """The float32 volume of a sorted series: each slice ``stored * RescaleSlope + RescaleIntercept``
    (its own), times ``scale`` (the PET's SUV factor); RAS affine from the slices' geometry."""
    positions = geometry.positions()
    n = len(positions)
    if n < 2:
        raise InputError(f"{where}: a volume needs at least 2 slices, got {n}")
    steps = np.linalg.norm(np.diff(positions, axis=0), axis=1)
    if np.abs(steps - steps.mean()).max() > EVEN_STEP_TOLERANCE * steps.mean():
        raise InputError(
            f"{where}: uneven slice steps ({steps.min():.3f} to {steps.max():.3f} mm); import needs a regular grid"
        )
    array = np.empty((geometry.columns, geometry.rows, n), np.float32)
    for k, (path, _) in enumerate(geometry.items):
        try:
            ds = pydicom.dcmread(path)
            pixels = ds.pixel_array.astype(np.float32)
        except Exception as exc:  # a decoder error names the transfer syntax
            raise InputError(f"{path}: pixel data cannot be decoded ({exc})") from exc
        slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
        array[:, :, k] = (pixels * slope + intercept).T * scale
    dr, dc = geometry.pixel_spacing
    lps = np.eye(4)
    lps[:3, 0] = geometry.row_direction * dc  # i: columns
    lps[:3, 1] = geometry.column_direction * dr  # j: rows
    lps[:3, 2] = (positions[-1] - positions[0]) / (n - 1)
    lps[:3, 3] = positions[0]
    return Volume(array, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps)


def _series_of(images: list[tuple[Path, Any]]) -> dict[str, dict[str, list[tuple[Path, Any]]]]:
    """study UID -> series UID -> its (path, header) items."""
    studies: dict[str, dict[str, list[tuple[Path, Any]]]] = {}
    for path, ds in images:
        study, series = str(ds.get("StudyInstanceUID", "") or ""), str(ds.get("SeriesInstanceUID", "") or "")
        studies.setdefault(study, {}).setdefault(series, []).append((path, ds))
    return studies


def _corrected(items: list[tuple[Path, Any]]) -> bool:
    return "ATTN" in {str(v).upper() for v in (items[0][1].get("CorrectedImage") or [])}


def _pick(study: dict[str, list[tuple[Path, Any]]], where: str) -> tuple[list, list, list[str]]:
    """The study's PET and CT series: ``(pet items, ct items, notes)``."""
    pets = [s for s in study.values() if str(s[0][1].get("Modality", "")) == "PT"]
    cts = [s for s in study.values() if str(s[0][1].get("Modality", "")) == "CT"]
    if not pets:
        raise InputError(f"{where}: no PET series (Modality PT) in the study")
    if not cts:
        raise InputError(f"{where}: no CT series in the study")
    corrected = [p for p in pets if _corrected(p)] or pets
    pet = max(corrected, key=len)
    notes = (
        [] if len(pets) == 1 else [f"{len(pets)} PET series; imported the attenuation-corrected one with most slices"]
    )
    frame = str(pet[0][1].get("FrameOfReferenceUID", "") or "")
    same_frame = [c for c in cts if str(c[0][1].get("FrameOfReferenceUID", "") or "") == frame and frame]
    if not same_frame:
        frames = sorted({str(c[0][1].get("FrameOfReferenceUID", "")) for c in cts})
        raise InputError(
            f"{where}: no CT series shares the PET's FrameOfReferenceUID {frame or '(empty)'} "
            f"(CT frames: {frames}); mixed frames of reference cannot be paired"
        )
    ct = max(same_frame, key=len)
    if len(cts) > 1:
        notes.append(f"{len(cts)} CT series; imported the one in the PET's frame of reference with most slices")
    return pet, ct, notes


def _case_id(ds: Any) -> str:
    patient = str(ds.get("PatientID", "") or "").strip() or "patient"
    date = str(ds.get("StudyDate", "") or "").strip() or "nodate"
    tag = hashlib.sha1(str(ds.StudyInstanceUID).encode()).hexdigest()[:6]
    return safe_id(f"{patient}_{date}_{tag}")


def import_dicom(src: PathLike, datastore: PathLike | PetCtDatastore, progress: bool = True) -> ImportReport:
    """Import every PET/CT study under ``src`` into ``datastore``; never raises for a single bad study."""
    root = Path(src)
    if not root.is_dir():
        raise InputError(f"source folder not found: {root}")
    images, unreadable = read_headers(root)
    if not images:
        raise InputError(
            f"no DICOM image found under {root}" + (f" ({len(unreadable)} unreadable files)" if unreadable else "")
        )
    store = datastore if isinstance(datastore, PetCtDatastore) else PetCtDatastore(datastore, create=True)
    report = ImportReport()
    if unreadable:
        names = ", ".join(p.name for p in unreadable[:5]) + (" ..." if len(unreadable) > 5 else "")
        report.notes["(files)"] = [f"{len(unreadable)} file(s) are not readable DICOM and were skipped: {names}"]
    for study_uid, study in tqdm(
        sorted(_series_of(images).items()), desc="import dicom", unit="study", disable=not progress
    ):
        first = next(iter(study.values()))[0][1]
        where = f"study {study_uid or '(no StudyInstanceUID)'}"
        cid = _case_id(first) if study_uid else "study-without-uid"
        try:
            if not study_uid:
                raise InputError("images without a StudyInstanceUID cannot be grouped into a study")
            if store.has_case(cid):
                raise InputError(f"already in the datastore {store.root}")
            pet_items, ct_items, notes = _pick(study, where)
            pet_geometry = slice_geometry(pet_items, f"{where} PET")
            factor = suv_factor([ds for _, ds in pet_geometry.items], f"{where} PET")
            pet = series_volume(pet_geometry, f"{where} PET", factor.factor)
            ct_geometry = slice_geometry(ct_items, f"{where} CT")
            ct = series_volume(ct_geometry, f"{where} CT")
            shape = ct.shape
            ct, moved = ct_on_pet_grid(ct, pet)
            if moved:
                notes.append(f"CT {shape} resampled onto the PET grid {pet.shape} (trilinear, {CT_FILL_HU:g} HU fill)")
            ct_array = np.clip(np.round(ct.array), -32768, 32767).astype(np.int16)
            meta = {
                "synthetic": False,
                "source": "dicom",
                "notes": notes,
                "dicom": {
                    "patient_id": str(first.get("PatientID", "") or ""),
                    "study_uid": study_uid,
                    "pet_series_uid": str(pet_items[0][1].SeriesInstanceUID),
                    "ct_series_uid": str(ct_items[0][1].SeriesInstanceUID),
                    "frame_of_reference_uid": str(pet_items[0][1].FrameOfReferenceUID),
                    "ct_files": [str(p) for p, _ in ct_geometry.items],
                    "pet_files": len(pet_items),
                },
                "suv": factor.to_dict(),
            }
            store.add_case(cid, Volume(ct_array, pet.affine.copy()), pet, None, meta=meta)
        except InputError as exc:
            report.skipped[cid] = str(exc)
            continue
        report.imported.append(cid)
        if notes:
            report.notes[cid] = notes
    return report
