"""Training data from a datastore: labelled cases (``labels/final``) and unlabelled ones (the rest).

Arrays are the case grid ``[i, j, k]``; images are the student's 2-channel input (CT, PET), padded at
the end to at least one patch (edge values; labels padded with background).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from mudo_app.distill.teacher_bank import patch_centre_world, patch_starts
from mudo_app.errors import InputError
from mudo_app.io.datastore import PetCtDatastore
from mudo_app.io.volume import Volume, load_volume
from mudo_app.labels import check_label_values
from mudo_app.train.config import TrainConfig
from mudo_app.transforms.intensity import StudentInput
from mudo_app.transforms.patches import class_voxels, pad_to


@dataclass
class LabelledCase:
    case_id: str
    image: np.ndarray  # (2, X, Y, Z) float32
    label: np.ndarray  # (X, Y, Z) int64, classes outside the config's set -> 0
    voxels: dict[int, np.ndarray]


@dataclass
class UnlabelledCase:
    case_id: str
    ct: Volume
    pet: Volume
    image: np.ndarray  # (2, X', Y', Z') float32, padded to at least one patch
    starts: np.ndarray  # (N, 3) fixed patch positions (embedding cache keys)
    regions: dict[int, np.ndarray] = field(default_factory=dict)  # position -> prompt network argmax

    def patch(self, position: int, patch: Sequence[int]) -> np.ndarray:
        s = self.starts[position]
        return self.image[:, s[0] : s[0] + patch[0], s[1] : s[1] + patch[1], s[2] : s[2] + patch[2]]

    def centre_world(self, position: int, patch: Sequence[int]) -> np.ndarray:
        return patch_centre_world(self.ct.affine, self.starts[position], patch)


@dataclass
class TrainingSet:
    labelled: list[LabelledCase]
    unlabelled: list[UnlabelledCase]

    def describe(self) -> dict[str, list[str]]:
        return {"labelled": [c.case_id for c in self.labelled], "unlabelled": [c.case_id for c in self.unlabelled]}


def _keep_classes(label: np.ndarray, class_ids: Sequence[int]) -> np.ndarray:
    out = label.astype(np.int64)
    out[~np.isin(out, list(class_ids))] = 0
    return out


def load_training_set(config: TrainConfig, prep: StudentInput = StudentInput()) -> TrainingSet:
    """Read the datastore the config names. ``fully_supervised`` also uses the unlabelled cases'
    ``ground_truth/`` (synthetic data only); the semi-supervised methods never read it."""
    if not config.datastore:
        raise InputError("config field 'datastore' is empty: give the datastore folder to train from")
    store = PetCtDatastore(config.datastore)
    labelled_ids = store.labelled_ids()
    if config.labelled_limit is not None:
        labelled_ids = labelled_ids[: config.labelled_limit]
    unlabelled_ids = [i for i in store.case_ids() if i not in labelled_ids]
    if not labelled_ids:
        raise InputError(f"no labelled case in {store.root} (labels/final is empty): at least one is needed")
    labelled, unlabelled = [], []
    for cid in labelled_ids:
        case = store.load_case(cid)
        labelled.append(_labelled(cid, prep(case.ct.array, case.pet.array), case.require_label().array, config))
    for cid in unlabelled_ids:
        case = store.load_case(cid)
        image = prep(case.ct.array, case.pet.array)
        if config.method == "fully_supervised":
            gt = store.ground_truth_path(cid)
            if not gt.is_file():
                raise InputError(f"fully_supervised needs ground truth for every case; {gt} is missing")
            truth = load_volume(gt, f"{cid} ground truth").array
            check_label_values(truth, f"{cid} ground truth")
            labelled.append(_labelled(cid, image, truth, config))
        else:
            padded, _ = pad_to(image, np.zeros(image.shape[1:], np.uint8), config.patch)
            unlabelled.append(
                UnlabelledCase(cid, case.ct, case.pet, padded, patch_starts(image.shape[1:], config.patch))
            )
    if config.method in ("muduo", "mean_teacher") and not unlabelled:
        raise InputError(f"method {config.method!r} needs unlabelled cases; every case in {store.root} is labelled")
    return TrainingSet(labelled, unlabelled)


def _labelled(cid: str, image: np.ndarray, label: np.ndarray, config: TrainConfig) -> LabelledCase:
    lab = _keep_classes(label, config.class_ids)
    return LabelledCase(cid, image, lab, class_voxels(lab))
