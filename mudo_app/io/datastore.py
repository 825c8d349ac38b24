"""The PET/CT datastore layout: one image id per case, the PET found from the id, label history kept.

Layout under the datastore root (MONAI Label's local datastore lists only the top level and
``labels/<tag>/``, so it sees exactly one image per case)::

    <id>.nii.gz                        CT in HU on the case grid: what a viewer loads
    pet/<id>.nii.gz                    PET in SUV, same grid and affine as the CT
    labels/final/<id>.nii.gz           current corrected label (0..13), same grid
    label_history/<id>/<stamp>_<tag>.nii.gz   every label ever saved, never overwritten
    meta/<id>.json                     provenance (source, importer notes, synthetic or not)
    ground_truth/<id>.nii.gz           held-out truth of synthetic cases; not used for training

Writes are atomic per file, and a case's CT (which makes the case visible) is published last.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from mudo_app.errors import InputError
from mudo_app.io.atomic import TEMP_PREFIX, atomic_write
from mudo_app.io.volume import PathLike, Volume, case_name, load_volume, on_grid, read_grid, same_grid, save_volume
from mudo_app.labels import check_label_values

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
FINAL = "final"


def check_case_id(case_id: str) -> str:
    """Return ``case_id`` if it is a safe file name stem, else raise :class:`InputError`."""
    if not isinstance(case_id, str) or not _ID_RE.match(case_id) or case_id.endswith((".nii", ".gz")):
        raise InputError(f"case id {case_id!r} must be 1-128 letters, digits, '_', '.', '-' (no NIfTI suffix)")
    return case_id


@dataclass
class Case:
    """One PET/CT case on one grid. ``label`` is ``None`` for an unlabelled case."""

    case_id: str
    ct: Volume
    pet: Volume
    label: Volume | None = None

    def require_label(self) -> Volume:
        """The label, or :class:`InputError` for an unlabelled case."""
        if self.label is None:
            raise InputError(f"case {self.case_id!r} has no label")
        return self.label


def check_case(ct: Volume, pet: Volume, label: Volume | None = None, case_id: str = "case") -> None:
    """Raise :class:`InputError` unless CT, PET (and label) share one grid and the label is valid."""
    if not same_grid(ct, pet):
        raise InputError(f"{case_id}: CT {ct.shape} and PET {pet.shape} are not on one grid (shape or affine differ)")
    if label is not None:
        if not same_grid(ct, label):
            raise InputError(f"{case_id}: label {label.shape} is not on the image grid {ct.shape}")
        check_label_values(label.array, f"{case_id}: label")


class PetCtDatastore:
    """File layout and a small API over one datastore folder (see module docstring)."""

    def __init__(self, root: PathLike, create: bool = False):
        self.root = Path(root)
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        elif not self.root.is_dir():
            raise InputError(f"datastore folder not found: {self.root}")

    # ---- paths ---------------------------------------------------------------------------------
    def ct_path(self, case_id: str) -> Path:
        return self.root / f"{check_case_id(case_id)}.nii.gz"

    def pet_path(self, case_id: str) -> Path:
        return self.root / "pet" / f"{check_case_id(case_id)}.nii.gz"

    def label_path(self, case_id: str, tag: str = FINAL) -> Path:
        return self.root / "labels" / tag / f"{check_case_id(case_id)}.nii.gz"

    def ground_truth_path(self, case_id: str) -> Path:
        return self.root / "ground_truth" / f"{check_case_id(case_id)}.nii.gz"

    def meta_path(self, case_id: str) -> Path:
        return self.root / "meta" / f"{check_case_id(case_id)}.json"

    def history_dir(self, case_id: str) -> Path:
        return self.root / "label_history" / check_case_id(case_id)

    # ---- queries -------------------------------------------------------------------------------
    def case_ids(self) -> list[str]:
        """Ids of complete cases (CT and PET present), sorted."""
        ids = [case_name(p) for p in self.root.glob("*.nii.gz") if not p.name.startswith(".")]
        return sorted(i for i in ids if self.pet_path(i).is_file())

    def labelled_ids(self, tag: str = FINAL) -> list[str]:
        return [i for i in self.case_ids() if self.label_path(i, tag).is_file()]

    def unlabelled_ids(self, tag: str = FINAL) -> list[str]:
        return [i for i in self.case_ids() if not self.label_path(i, tag).is_file()]

    def has_case(self, case_id: str) -> bool:
        return self.ct_path(case_id).is_file() and self.pet_path(case_id).is_file()

    def _require(self, case_id: str) -> None:
        if not self.has_case(case_id):
            raise InputError(f"unknown case id {case_id!r} in datastore {self.root}")

    def load_case(self, case_id: str, tag: str = FINAL) -> Case:
        self._require(case_id)
        ct = load_volume(self.ct_path(case_id), f"{case_id} CT", dtype=np.float32)
        pet = load_volume(self.pet_path(case_id), f"{case_id} PET", dtype=np.float32)
        lp = self.label_path(case_id, tag)
        label = load_volume(lp, f"{case_id} label") if lp.is_file() else None
        return Case(case_id, ct, pet, label)

    def meta(self, case_id: str) -> dict[str, Any]:
        p = self.meta_path(case_id)
        return json.loads(p.read_text()) if p.is_file() else {}

    def label_history(self, case_id: str) -> list[Path]:
        d = self.history_dir(case_id)
        return sorted(p for p in d.glob("*.nii.gz") if not p.name.startswith(".")) if d.is_dir() else []

    # ---- writes --------------------------------------------------------------------------------
    def remove_stale_temporaries(self) -> list[Path]:
        """Remove the temporary files a killed writer left (``.tmp-*``, never read as data); call it
        only when no other process writes this datastore (the server does at start-up)."""
        stale = [p for p in self.root.rglob(f"{TEMP_PREFIX}*") if p.is_file()]
        for path in stale:
            path.unlink(missing_ok=True)
        return stale

    def add_case(
        self,
        case_id: str,
        ct: Volume,
        pet: Volume,
        label: Volume | None = None,
        meta: dict[str, Any] | None = None,
        ground_truth: Volume | None = None,
        overwrite: bool = False,
    ) -> None:
        """Check and write one case; the CT (which makes the case visible) is published last."""
        check_case_id(case_id)
        check_case(ct, pet, label, case_id)
        if ground_truth is not None:
            check_case(ct, pet, ground_truth, case_id)
        if self.ct_path(case_id).exists() and not overwrite:
            raise InputError(f"case {case_id!r} already exists in {self.root}")
        new = not self.ct_path(case_id).exists()
        try:
            save_volume(pet, self.pet_path(case_id), dtype=np.float32)
            if ground_truth is not None:
                save_volume(ground_truth, self.ground_truth_path(case_id), dtype=np.uint8)
            if meta is not None:
                with atomic_write(self.meta_path(case_id)) as tmp:
                    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
            if label is not None:
                self.save_label(case_id, label, _check_exists=False)
            ct_dtype = np.int16 if np.issubdtype(ct.array.dtype, np.integer) else np.float32
            save_volume(ct, self.ct_path(case_id), dtype=ct_dtype)
        except BaseException:
            if new:  # never leave half a case behind
                self._remove_case_files(case_id)
            raise

    def _remove_case_files(self, case_id: str) -> None:
        for p in (
            self.ct_path(case_id),
            self.pet_path(case_id),
            self.label_path(case_id),
            self.ground_truth_path(case_id),
            self.meta_path(case_id),
        ):
            p.unlink(missing_ok=True)
        shutil.rmtree(self.history_dir(case_id), ignore_errors=True)

    def save_label(
        self, case_id: str, label: Volume, tag: str = FINAL, _check_exists: bool = True, user: str | None = None
    ) -> Path:
        """Validate ``label`` against the case grid, keep a history copy (with who saved it and when, in
        ``<stamp>_<tag>.json`` beside it), then publish it as ``tag``."""
        if _check_exists:
            self._require(case_id)
            shape, affine = read_grid(self.pet_path(case_id), f"{case_id} PET")  # header only
            if not on_grid(label, shape, affine):
                raise InputError(f"label {label.shape} is not on the grid of image {case_id!r} {shape}")
        check_label_values(label.array, f"label for {case_id}")
        check_case_id(tag)
        now = datetime.now(UTC)
        stamp = now.strftime("%Y%m%dT%H%M%S%fZ")
        hist = self.history_dir(case_id) / f"{stamp}_{tag}.nii.gz"
        save_volume(label, hist, dtype=np.uint8)
        with atomic_write(hist.with_name(f"{stamp}_{tag}.json")) as tmp:
            tmp.write_text(json.dumps({"tag": tag, "user": user, "saved_utc": now.isoformat()}, indent=2))
        final = self.label_path(case_id, tag)
        with atomic_write(final) as tmp:
            shutil.copyfile(hist, tmp)
        return final
