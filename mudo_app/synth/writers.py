"""Write generated phantoms in the datastore, autoPET, AutoPET-Organ or nnU-Net layouts."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mudo_app.io.datastore import Case, PetCtDatastore
from mudo_app.io.volume import Volume, save_volume
from mudo_app.labels import LESION, label_names
from mudo_app.synth.phantom import PhantomSettings, generate_case

LAYOUTS = ("datastore", "autopet", "autopet-organ", "nnunet")


def case_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of case ``index``: independent of how many cases are written."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


def case_id(index: int) -> str:
    return f"syn{index:03d}"


def generate_cases(seed: int, first: int, count: int, settings: PhantomSettings = PhantomSettings()) -> list[Case]:
    """Cases ``first .. first + count - 1`` of ``seed`` in memory (labelled with their truth)."""
    out = []
    for i in range(first, first + count):
        ct, pet, label, _ = generate_case(case_rng(seed, i), settings)
        out.append(Case(case_id(i), ct, pet, label))
    return out


def _write_datastore(out: Path, cid: str, ct: Volume, pet: Volume, label: Volume, meta: dict, labelled: bool):
    PetCtDatastore(out, create=True).add_case(cid, ct, pet, label if labelled else None, meta=meta, ground_truth=label)


def _write_autopet(out: Path, cid: str, ct: Volume, pet: Volume, label: Volume, meta: dict, organs: bool):
    study = out / f"PETCT_{cid}" / "01-01-2000-NA-PET-CT"
    lesion = Volume((label.array == LESION).astype(np.uint8), label.affine)
    save_volume(pet, study / "SUV.nii.gz", dtype=np.float32)
    save_volume(lesion, study / "SEG.nii.gz", dtype=np.uint8)
    if organs:
        organ = Volume(np.where(label.array == LESION, 0, label.array).astype(np.uint8), label.affine)
        save_volume(organ, study / "ORGANS.nii.gz", dtype=np.uint8)
    (study / "synthetic.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    save_volume(ct, study / "CTres.nii.gz", dtype=np.int16)


def _write_nnunet(out: Path, cid: str, ct: Volume, pet: Volume, label: Volume, meta: dict):
    save_volume(pet, out / "imagesTr" / f"{cid}_0001.nii.gz", dtype=np.float32)
    save_volume(label, out / "labelsTr" / f"{cid}.nii.gz", dtype=np.uint8)
    save_volume(ct, out / "imagesTr" / f"{cid}_0000.nii.gz", dtype=np.int16)


def write_dataset(
    out,
    cases: int,
    seed: int = 0,
    settings: PhantomSettings = PhantomSettings(),
    layout: str = "datastore",
    labelled: int | None = None,
    progress: bool = True,
    on_case: Callable[[str, dict], None] | None = None,
) -> Path:
    """Generate ``cases`` phantoms into ``out`` in ``layout``.

    ``labelled`` (datastore layout only): how many cases, the first ones, get a ``final`` label; all
    cases keep their truth under ``ground_truth/``. Default: all labelled.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if cases < 1:
        raise ValueError(f"cases must be at least 1, got {cases}")
    labelled = cases if labelled is None else labelled
    if not 0 <= labelled <= cases:
        raise ValueError(f"labelled must be in 0..{cases}, got {labelled}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for i in tqdm(range(cases), desc="synthetic PET/CT", unit="case", disable=not progress):
        ct, pet, label, meta = generate_case(case_rng(seed, i), settings)
        cid = case_id(i)
        meta.update(seed=seed, index=i, case=cid)
        if layout == "datastore":
            _write_datastore(out, cid, ct, pet, label, meta, i < labelled)
        elif layout in ("autopet", "autopet-organ"):
            _write_autopet(out, cid, ct, pet, label, meta, organs=layout == "autopet-organ")
        else:
            _write_nnunet(out, cid, ct, pet, label, meta)
        if on_case:
            on_case(cid, meta)
    if layout == "nnunet":
        names = label_names()
        ds = {
            "channel_names": {"0": "CT", "1": "PET"},
            "labels": names,
            "numTraining": cases,
            "file_ending": ".nii.gz",
            "description": "MuDuo synthetic PET/CT phantoms (synthetic PET)",
        }
        (out / "dataset.json").write_text(json.dumps(ds, indent=2))
    return out
