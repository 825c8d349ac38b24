"""A datastore case's label as RTSTRUCT or DICOM-SEG against the CT series it was imported from."""

from __future__ import annotations

import os
from typing import Any

from mudo_app.dicom.rtstruct import Export, write_rtstruct
from mudo_app.dicom.seg import write_seg
from mudo_app.dicom.series import CtSeries, read_ct_files
from mudo_app.errors import InputError
from mudo_app.io.datastore import FINAL, PetCtDatastore
from mudo_app.io.volume import load_volume

FORMATS = ("rtstruct", "seg")


class NoDicomSource(InputError):
    """The case was not imported from DICOM: there is no CT series to reference."""


class NoLabel(InputError):
    """The case has no label of the asked tag."""


def _dicom_meta(store: PetCtDatastore, case_id: str) -> dict[str, Any]:
    meta: dict[str, Any] = store.meta(case_id)
    if not (meta.get("dicom") or {}).get("ct_files"):
        raise NoDicomSource(
            f"case {case_id!r} has no DICOM source (it came from {meta.get('source', 'an unknown source')}); "
            "RTSTRUCT and SEG reference a CT series: import the study with `muduo import --from dicom`"
        )
    return meta["dicom"]


def reference_series(store: PetCtDatastore, case_id: str) -> CtSeries:
    """The CT series a case was imported from (``muduo import --from dicom`` recorded its files)."""
    return read_ct_files(_dicom_meta(store, case_id)["ct_files"], f"case {case_id!r}")


def check_reference(store: PetCtDatastore, case_id: str, series: CtSeries) -> None:
    """A reference CT given for a DICOM-imported case must be of its patient and frame of reference."""
    recorded = _dicom_meta(store, case_id)
    patient = str(series.header.get("PatientID", "") or "")
    if "patient_id" in recorded and patient != recorded["patient_id"]:
        raise InputError(
            f"the reference CT is of another patient (PatientID {patient!r}) than case {case_id!r} "
            f"({recorded['patient_id']!r})"
        )
    if series.frame_uid != recorded["frame_of_reference_uid"]:
        raise InputError(
            f"the reference CT is in another frame of reference ({series.frame_uid}) than case {case_id!r} "
            f"({recorded['frame_of_reference_uid']}): its contours would not lie on the patient"
        )


def export_case(
    store: PetCtDatastore,
    case_id: str,
    fmt: str,
    out: str | os.PathLike[str],
    tag: str = FINAL,
    holes: str = "nested",
    algorithm: str = "MuDuo student",
    version: str = "",
    reference: CtSeries | None = None,
) -> Export:
    """Write case ``case_id``'s label ``tag`` as ``fmt`` (``rtstruct`` or ``seg``) to ``out``;
    ``algorithm`` and ``version`` (the served student's checkpoint digest) are recorded in it.
    ``reference``: another copy of the case's CT series to reference (checked:
    :func:`check_reference`); default the files the import recorded."""
    if fmt not in FORMATS:
        raise InputError(f"format must be one of {FORMATS}, got {fmt!r}")
    if reference is not None:
        check_reference(store, case_id, reference)
    series = reference or reference_series(store, case_id)
    path = store.label_path(case_id, tag)
    if not path.is_file():
        raise NoLabel(f"case {case_id!r} has no {tag!r} label to export")
    label = load_volume(path, f"{case_id} label")
    if fmt == "seg":
        return write_seg(out, label, series, algorithm=algorithm, version=version)
    named = f"{algorithm} {version}".strip()
    return write_rtstruct(out, label, series, holes=holes, algorithm=named)
