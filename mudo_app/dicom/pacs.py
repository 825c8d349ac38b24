"""A PACS over DICOMweb (QIDO-RS, WADO-RS, STOW-RS) as the source of a local PET/CT mirror.

:class:`PacsMirror` lists the PACS's studies, pulls the CT and PET series of each study not mirrored
yet (every series of those modalities, so the importer can pair PET and CT by study and frame of
reference: nothing is filtered out by modality, unlike MONAI Label 0.8.5's DICOMweb datastore, which
lists CT only), stores their instances under ``<mirror>/dicom/<study>/<series>/`` and imports each
study into ``<mirror>/datastore`` with :func:`mudo_app.dicom.importer.import_dicom` (SUVbw, CT on the
PET grid, provenance). Labels go back as RTSTRUCT and DICOM-SEG (:meth:`PacsMirror.push`), where a
planner's QIDO-RS query for the study finds them. Nothing here needs dcmqi.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pydicom
from dicomweb_client.api import DICOMwebClient

from mudo_app.dicom.importer import import_dicom
from mudo_app.errors import InputError
from mudo_app.io.atomic import atomic_write
from mudo_app.io.importers import ImportReport

logger = logging.getLogger(__name__)

STUDY_UID, SERIES_UID, MODALITY = "0020000D", "0020000E", "00080060"
IMPORTED_MODALITIES = ("CT", "PT")


def _value(record: dict[str, Any], tag: str) -> str:
    values = (record.get(tag) or {}).get("Value") or [""]
    return str(values[0])


class PacsMirror:
    """A local mirror of a DICOMweb PACS's PET/CT studies.

    Args:
        url: the DICOMweb root (e.g. ``http://127.0.0.1:8042/dicom-web``).
        folder: the mirror (created): ``dicom/`` (the pulled instances), ``datastore/`` (imported cases).
        client: a ``DICOMwebClient`` (default: one for ``url``).
    """

    def __init__(self, url: str, folder: str | os.PathLike[str], client: DICOMwebClient | None = None):
        self.url = url.rstrip("/")
        self.folder = Path(folder)
        self.client = client or DICOMwebClient(url=self.url)
        (self.folder / "dicom").mkdir(parents=True, exist_ok=True)

    @property
    def datastore(self) -> Path:
        return self.folder / "datastore"

    def _pull_study(self, study_uid: str) -> Path:
        target = self.folder / "dicom" / study_uid
        for series in self.client.search_for_series(study_uid):
            if _value(series, MODALITY) not in IMPORTED_MODALITIES:
                continue
            series_uid = _value(series, SERIES_UID)
            folder = target / series_uid
            folder.mkdir(parents=True, exist_ok=True)
            for ds in self.client.retrieve_series(study_uid, series_uid):
                with atomic_write(folder / f"{ds.SOPInstanceUID}.dcm") as tmp:
                    ds.save_as(tmp, write_like_original=False)
        return target

    def sync(self) -> ImportReport:
        """Pull and import every study not mirrored yet; a study that cannot be imported is reported
        (and tried again at the next sync), the others go on."""
        try:
            studies = self.client.search_for_studies()
        except Exception as exc:  # connection refused, HTTP errors: the PACS is not there
            raise InputError(f"the PACS at {self.url} cannot be queried: {exc}") from exc
        total = ImportReport()
        for record in studies:
            study_uid = _value(record, STUDY_UID)
            done = self.folder / "dicom" / f"{study_uid}.imported"
            if not study_uid or done.is_file():
                continue
            folder = self._pull_study(study_uid)
            try:
                report = import_dicom(folder, self.datastore, progress=False)
            except InputError as exc:
                total.skipped[study_uid] = str(exc)
                continue
            total.imported += report.imported
            total.skipped.update(report.skipped)
            total.notes.update(report.notes)
            if not report.skipped:
                done.write_text("\n".join(report.imported) + "\n")
        for cid, why in total.skipped.items():
            logger.warning(f"PACS study not imported ({cid}): {why}")
        return total

    def push(self, paths: list[Path]) -> None:
        """STOW-RS the DICOM files ``paths`` (e.g. a case's RTSTRUCT and SEG) to the PACS."""
        datasets = [pydicom.dcmread(p) for p in paths]
        try:
            self.client.store_instances(datasets)
        except Exception as exc:
            raise InputError(f"the PACS at {self.url} refused the upload: {exc}") from exc
