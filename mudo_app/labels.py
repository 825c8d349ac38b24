"""The product's one label map: 0 background, 1..12 AutoPET-Organ organs, 13 lesion.

Names follow AutoPET-Organ (released with SegAnyPET). Colours are RGB in 0..255, chosen to be told
apart in 3D Slicer. Everything that needs label names, ids or colours reads them from here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mudo_app.errors import InputError


@dataclass(frozen=True)
class Label:
    idx: int
    name: str
    color: tuple[int, int, int]


LABELS: tuple[Label, ...] = (
    Label(1, "liver", (221, 130, 101)),
    Label(2, "kidney_left", (185, 102, 83)),
    Label(3, "kidney_right", (212, 126, 151)),
    Label(4, "heart", (206, 110, 84)),
    Label(5, "spleen", (157, 108, 162)),
    Label(6, "aorta", (224, 97, 76)),
    Label(7, "prostate", (111, 184, 210)),
    Label(8, "lung_lower_lobe_left", (172, 138, 115)),
    Label(9, "lung_lower_lobe_right", (138, 157, 79)),
    Label(10, "lung_upper_lobe_left", (201, 121, 77)),
    Label(11, "lung_upper_lobe_right", (240, 196, 150)),
    Label(12, "lung_middle_lobe_right", (90, 160, 220)),
    Label(13, "lesion", (255, 230, 0)),
)

BACKGROUND = 0
LESION = 13
NUM_CLASSES = 14  # background + 12 organs + lesion
ORGAN_IDS: tuple[int, ...] = tuple(range(1, 13))
LABEL_IDS: tuple[int, ...] = tuple(lbl.idx for lbl in LABELS)
NAME_TO_ID: dict[str, int] = {lbl.name: lbl.idx for lbl in LABELS}
ID_TO_NAME: dict[int, str] = {lbl.idx: lbl.name for lbl in LABELS}


def label_names() -> dict[str, int]:
    """Name -> id including background, as MONAI Label's ``labels`` setting expects."""
    return {"background": BACKGROUND, **NAME_TO_ID}


def check_label_values(array: np.ndarray, what: str = "label map") -> None:
    """Raise :class:`InputError` (a ``ValueError``) when ``array`` holds a value outside 0..13, or a
    non-integral one."""
    values = np.unique(array)
    if not np.all(np.isfinite(values)) or not np.all(np.equal(np.round(values), values)):
        raise InputError(f"{what}: values must be whole numbers in 0..{LESION}")
    bad = [v for v in values.astype(np.int64).tolist() if v < 0 or v > LESION]
    if bad:
        raise InputError(f"{what}: values {bad[:10]} are not in the label map (0..{LESION})")
