"""How much the two teachers, and the student and the teachers, disagree on a case (active learning).

For each structure the student finds, both teachers get one click at the structure's deepest voxel
(the voxel farthest from its border); the case's score is the mean over structures of
``(1 - Dice(CT teacher, PET teacher) + 1 - mean Dice(student, each teacher)) / 2``, in [0, 1].
A case where the student finds nothing scores 1 (nothing to agree on: look at it first).
"""

from __future__ import annotations

import numpy as np

from mudo_app.evaluation.metrics import binary_dice
from mudo_app.io.volume import Volume
from mudo_app.labels import ID_TO_NAME
from mudo_app.models.sam3d import Sam3DPredictor
from mudo_app.models.teachers import Teacher
from mudo_app.prompts.clicks import first_click


def disagreement(
    student_label: np.ndarray, ct_teacher: Sam3DPredictor, pet_teacher: Sam3DPredictor, min_voxels: int = 8
) -> dict[str, object]:
    """``student_label`` (X, Y, Z) on the grid both predictors' images were set on (``set_image``)."""
    per: dict[str, float] = {}
    for cls in (int(c) for c in np.unique(student_label) if c != 0):
        mask = student_label == cls
        if mask.sum() < min_voxels:
            continue
        click = [first_click(mask).tolist()]
        ct = ct_teacher.predict(points=click, labels=[1]).mask
        pet = pet_teacher.predict(points=click, labels=[1]).mask
        agree = binary_dice(ct, pet)
        teachers = 0.0 if np.isnan(agree) else 1.0 - agree  # both teachers found nothing: they agree
        student = 1.0 - 0.5 * (binary_dice(mask, ct) + binary_dice(mask, pet))  # mask is not empty
        per[ID_TO_NAME[cls]] = 0.5 * (teachers + student)
    score = float(np.mean(list(per.values()))) if per else 1.0
    return {"score": score, "per_structure": per}


def case_disagreement(student_label: np.ndarray, ct: Volume, pet: Volume, teachers: tuple[Teacher, Teacher]) -> dict:
    """:func:`disagreement` of one case: ``teachers`` (CT, PET) set on the case's ``ct`` and ``pet``
    (the student's label map ``student_label`` is on the grid both are on)."""
    predictors = []
    for teacher, volume in zip(teachers, (ct, pet), strict=True):
        predictor = Sam3DPredictor(
            teacher.model, teacher.contract, cache_size=16, one_click_multimask=teacher.one_click_multimask
        )
        predictor.set_image(volume.array, volume.affine, teacher.modality)
        predictors.append(predictor)
    return disagreement(student_label, predictors[0], predictors[1])
