"""Import autoPET, AutoPET-Organ and nnU-Net-style PET/CT folders into a :class:`PetCtDatastore`.

Source layouts (CT in HU, PET in SUV):

* ``autopet``: ``<patient>/<study>/{CTres,SUV,SEG}.nii.gz``; ``SEG`` is the binary lesion mask -> id 13.
* ``autopet-organ``: the same, plus ``ORGANS.nii.gz`` (AutoPET-Organ label map, ids 1..12) in each study
  folder; the lesion mask is merged on top (lesion voxels become 13).
* ``nnunet``: ``imagesTr/<case>_0000.nii.gz`` (CT), ``imagesTr/<case>_0001.nii.gz`` (PET),
  ``labelsTr/<case>.nii.gz`` (optional; ids of this product's label map). A case without a label is
  imported unlabelled.

Each case is checked before anything is written: readable 3-D volumes without NaN; CT and PET on one
grid (otherwise the CT is resampled onto the PET grid with -1024 HU fill, and the report says so);
labels exactly on the PET grid with values of the label map. A bad case is skipped with its reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tqdm.auto import tqdm

from mudo_app.errors import InputError
from mudo_app.io.cases import channel_files
from mudo_app.io.datastore import PetCtDatastore
from mudo_app.io.volume import CT_FILL_HU, PathLike, Volume, ct_on_pet_grid, load_volume, same_grid
from mudo_app.labels import LESION, ORGAN_IDS, check_label_values

SOURCES = ("autopet", "autopet-organ", "nnunet")


@dataclass
class SourceCase:
    """Paths of one case in a source tree; ``label``/``organs`` may be ``None``."""

    case_id: str
    ct: Path
    pet: Path
    lesion: Path | None = None
    organs: Path | None = None
    label: Path | None = None


@dataclass
class ImportReport:
    imported: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"imported {len(self.imported)} case(s), skipped {len(self.skipped)}"]
        for cid, notes in sorted(self.notes.items()):
            lines += [f"  note {cid}: {n}" for n in notes]
        lines += [f"  SKIPPED {cid}: {why}" for cid, why in sorted(self.skipped.items())]
        return "\n".join(lines)


def safe_id(text: str) -> str:
    """A datastore case id made of ``text``: other characters become ``-``, at most 128 characters."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")[:128] or "case"


def discover(source: str, src: Path) -> Iterator[SourceCase]:
    """Yield the cases of ``src`` in layout ``source`` (sorted, so ids are stable)."""
    if source not in SOURCES:
        raise InputError(f"--from must be one of {', '.join(SOURCES)}, got {source!r}")
    if not src.is_dir():
        raise InputError(f"source folder not found: {src}")
    if source == "nnunet":
        images = src / "imagesTr"
        if not images.is_dir():
            raise InputError(f"{src} is not an nnU-Net folder: imagesTr/ is missing")
        for name, files in sorted(channel_files(images).items()):
            label = src / "labelsTr" / f"{name}.nii.gz"
            yield SourceCase(
                safe_id(name),
                files.get("_0000", images / f"{name}_0000.nii.gz"),  # a missing channel: "file not found"
                files.get("_0001", images / f"{name}_0001.nii.gz"),
                label=label if label.exists() else None,
            )
        return
    studies = sorted(p.parent for p in src.glob("*/*/*.nii.gz") if p.name in ("CTres.nii.gz", "SUV.nii.gz"))
    for study in sorted(set(studies)):
        yield SourceCase(
            safe_id(f"{study.parent.name}_{study.name}"),
            study / "CTres.nii.gz",
            study / "SUV.nii.gz",
            lesion=study / "SEG.nii.gz",
            organs=(study / "ORGANS.nii.gz") if source == "autopet-organ" else None,
        )


def _load_label(path: Path, what: str, pet: Volume, allowed: Sequence[int] | None = None) -> NDArray[Any]:
    vol = load_volume(path, what)
    if not same_grid(vol, pet):
        raise InputError(f"{what} {vol.shape} is not on the PET grid {pet.shape} (shape or affine differ)")
    check_label_values(vol.array, what)
    values = set(np.unique(vol.array).astype(int).tolist())
    if allowed is not None and not values <= set(allowed):
        raise InputError(f"{what} has values {sorted(values - set(allowed))}; expected only {sorted(allowed)}")
    return vol.array.astype(np.uint8)


def load_source_case(sc: SourceCase) -> tuple[Volume, Volume, Volume | None, list[str]]:
    """Load and check one case: ``(ct, pet, label_or_None, notes)``; raises :class:`InputError`."""
    notes: list[str] = []
    if not sc.pet.exists():
        raise InputError(f"PET missing: {sc.pet}")
    if not sc.ct.exists():
        raise InputError(f"CT missing: {sc.ct}")
    pet = load_volume(sc.pet, "PET", dtype=np.float32)
    ct = load_volume(sc.ct, "CT", dtype=np.float32)
    original_shape = ct.shape
    ct, moved = ct_on_pet_grid(ct, pet)
    if moved:
        notes.append(f"CT {original_shape} resampled onto the PET grid {pet.shape} (trilinear, {CT_FILL_HU:g} HU fill)")
    label = None
    if sc.lesion is not None or sc.organs is not None:
        if sc.lesion is None or not sc.lesion.exists():
            raise InputError(f"lesion mask missing: {sc.lesion}")
        lesion = _load_label(sc.lesion, "lesion mask SEG", pet, allowed=(0, 1))
        label = np.zeros(pet.shape, np.uint8)
        if sc.organs is not None:
            if not sc.organs.exists():
                raise InputError(f"organ label map missing: {sc.organs}")
            label[:] = _load_label(sc.organs, "organ label map", pet, allowed=(0, *ORGAN_IDS))
        label[lesion > 0] = LESION
    elif sc.label is not None:
        label = _load_label(sc.label, "label", pet)
    ct_array = np.clip(np.round(ct.array), -32768, 32767).astype(np.int16)
    lab = None if label is None else Volume(label, pet.affine.copy())
    return Volume(ct_array, pet.affine.copy()), pet, lab, notes


def import_tree(source: str, src: PathLike, datastore: PathLike, progress: bool = True) -> ImportReport:
    """Import every case of ``src`` into ``datastore``; never raises for a single bad case."""
    src = Path(src)
    cases = list(discover(source, src))
    if not cases:
        raise InputError(f"no {source} cases found under {src}")
    store = datastore if isinstance(datastore, PetCtDatastore) else PetCtDatastore(datastore, create=True)
    report = ImportReport()
    for sc in tqdm(cases, desc=f"import {source}", unit="case", disable=not progress):
        try:
            if store.has_case(sc.case_id):
                raise InputError(f"already in the datastore {store.root}")
            ct, pet, label, notes = load_source_case(sc)
            synthetic = (sc.ct.parent / "synthetic.json").is_file()  # written by `muduo sample-data`
            meta = {
                "synthetic": synthetic,
                "source": source,
                "notes": notes,
                "source_files": {"ct": str(sc.ct), "pet": str(sc.pet)},
            }
            store.add_case(sc.case_id, ct, pet, label, meta=meta)
        except InputError as exc:
            report.skipped[sc.case_id] = str(exc)
            continue
        report.imported.append(sc.case_id)
        if notes:
            report.notes[sc.case_id] = notes
    return report
