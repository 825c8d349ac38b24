"""MONAI Label's local datastore over the PET/CT layout of :mod:`mudo_app.io.datastore`.

MONAI Label lists the CT (``<id>.nii.gz`` at the top level) as the case's image; the PET is found
from the id (``pet/<id>.nii.gz``). Saving a label validates it (readable, on the image's grid, values
0..13) before anything is stored, keeps every saved version in ``label_history/`` and publishes it
atomically. Adding an image takes one 4-D NIfTI holding CT and PET as its two channels.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from filelock import FileLock
from monailabel.datastore.local import DataModel, ImageLabelModel, LocalDatastore

from lib.errors import http_errors, not_found
from mudo_app.dicom.case_export import FORMATS, export_case
from mudo_app.dicom.pacs import PacsMirror
from mudo_app.errors import InputError
from mudo_app.io.atomic import atomic_write, file_digest
from mudo_app.io.datastore import FINAL, PetCtDatastore, check_case_id
from mudo_app.io.uploads import DEFAULT_MAX_VOXELS, read_label_upload, read_petct_upload

logger = logging.getLogger(__name__)
INDEX_FILE = "datastore_v2.json"  # MONAI Label's index of the datastore's files (derived: rebuilt from them)


def _set_aside_unreadable_index(path: Path) -> None:
    """An index that is not valid JSON (left by a server killed while an older version wrote it) is
    renamed aside with a warning; MONAI Label then rebuilds it from the image and label files."""
    if not path.is_file():
        return
    try:
        json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        aside = path.with_name(f"{path.name}.unreadable-{int(time.time())}")
        path.rename(aside)
        logger.warning(
            f"the datastore index {path} was not readable; set aside as {aside.name}, rebuilt from the files"
        )


class MuDuoDatastore(LocalDatastore):
    def __init__(
        self, studies: str, auto_reload: bool = False, read_only: bool = False, max_voxels: int = DEFAULT_MAX_VOXELS
    ):
        self.store = PetCtDatastore(studies, create=True)
        self.max_voxels = max_voxels
        _set_aside_unreadable_index(Path(studies) / INDEX_FILE)
        super().__init__(studies, extensions=("*.nii.gz",), auto_reload=auto_reload, read_only=read_only)

    def _update_datastore_file(self, lock: bool = True) -> None:
        """MONAI Label's index written atomically (its own writer truncates the file first, so a server
        killed mid-write left an empty index that the next start could not read)."""

        def write() -> None:
            self._ignore_event_config = True
            text = json.dumps(self._datastore.model_dump(exclude={"base_path"}), indent=2, default=str)
            with atomic_write(self._datastore_config_path) as tmp:
                tmp.write_text(text)
            self._config_ts = os.stat(self._datastore_config_path).st_mtime

        if lock:
            with FileLock(self._lock_file):
                write()
        else:
            write()

    def remove_stale_temporaries(self) -> None:
        """At server start only (never in a training subprocess, which runs beside a writing server)."""
        for path in self.store.remove_stale_temporaries():  # a server killed while writing left them
            logger.warning(f"removed a temporary file left by an interrupted write: {path}")

    # ---- lookups -----------------------------------------------------------------------------------
    def has_image(self, image_id: str) -> bool:
        return image_id in self._datastore.objects and self.store.has_case(image_id)

    def require(self, image_id: str) -> None:
        """404 unless ``image_id`` names a case; a path (existing or not) is answered alike, unechoed."""
        if not isinstance(image_id, str) or "/" in image_id or "\\" in image_id:
            raise not_found("unknown image id: image ids are the case names of this datastore, not paths")
        if not self.has_image(image_id):
            raise not_found(f"unknown image id {image_id!r}: not a case of this datastore")

    def pet_uri(self, image_id: str) -> str:
        self.require(image_id)
        return str(self.store.pet_path(image_id))

    def status(self) -> dict[str, Any]:
        out = super().status()
        out["modalities"] = {"image": "CT (HU)", "pet": "PET (SUV), pet/<id>.nii.gz, GET /datastore/pet?image=ID"}
        return out

    # ---- writes ------------------------------------------------------------------------------------
    def save_label(
        self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any], user: str | None = None
    ) -> str:
        """Check the upload (voxel cap, gzip stream, values, grid) and the tag, then store it; nothing is
        stored when any check fails."""
        self.require(image_id)
        with http_errors():
            if not isinstance(label_info, dict):
                raise InputError(f"label params must be a JSON object, got {type(label_info).__name__}")
            check_case_id(label_tag)
            label = read_label_upload(label_filename, f"label for {image_id}", self.max_voxels)
            self.store.save_label(image_id, label, label_tag, user=user)
        with FileLock(self._lock_file):
            info = dict(label_info or {})
            info.update(ts=int(time.time()), name=f"{image_id}.nii.gz", history=len(self.store.label_history(image_id)))
            self._datastore.objects[image_id].labels[label_tag] = DataModel(info=info, ext=".nii.gz")
            self._update_datastore_file(lock=False)
        logger.info(f"label {label_tag} saved for {image_id} (history kept in label_history/)")
        return image_id

    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any], user: str | None = None) -> str:
        """Check the 2-channel upload, then add the case; the client's params are kept under
        ``client_params`` in its provenance, never over the server's own fields."""
        with http_errors():
            case_id = check_case_id(image_id or "")
            if self.store.has_case(case_id):
                raise InputError(f"image id {case_id!r} already exists")
            ct, pet = read_petct_upload(image_filename, self.max_voxels)
            meta = {"source": "upload", "uploaded_by": user, "client_params": image_info or {}}
            self.store.add_case(case_id, ct, pet, meta=meta)
        with FileLock(self._lock_file):
            info = dict(image_info or {})
            info.update(ts=int(time.time()), name=f"{case_id}.nii.gz")
            self._datastore.objects[case_id] = ImageLabelModel(image=DataModel(info=info, ext=".nii.gz"))
            self._update_datastore_file(lock=False)
        return case_id


class PacsDatastore(MuDuoDatastore):
    """A PACS (``--studies http://.../dicom-web``) served through its local mirror: the studies are
    pulled and imported at start (:class:`mudo_app.dicom.pacs.PacsMirror`), and every saved final label
    goes back to the PACS as RTSTRUCT and DICOM-SEG (STOW-RS), where planners find it."""

    def __init__(self, mirror: PacsMirror, student: Path | None = None, **kwargs: Any):
        self.mirror, self.student = mirror, student  # the served checkpoint, named in what goes back
        report = mirror.sync()
        logger.info(f"PACS {mirror.url}: {report.summary()}")
        super().__init__(str(mirror.datastore), **kwargs)

    def save_label(
        self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any], user: str | None = None
    ) -> str:
        saved = super().save_label(image_id, label_filename, label_tag, label_info, user)
        if label_tag == FINAL:
            with tempfile.TemporaryDirectory(prefix="muduo-pacs-") as tmp, http_errors():
                paths = []
                version = file_digest(self.student) if self.student else ""  # once for both files
                for fmt in FORMATS:
                    out = Path(tmp) / f"{image_id}.{fmt}.dcm"
                    export_case(self.store, image_id, fmt, out, tag=FINAL, version=version)
                    paths.append(out)
                self.mirror.push(paths)
            logger.info(f"label of {image_id} sent to the PACS as RTSTRUCT and SEG")
        return saved
