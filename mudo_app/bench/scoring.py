"""Scoring a trained student on labelled synthetic cases, and the generator seeds held out for it.

Shared by the benchmark, the recipe choice, the shipped student and the active-learning simulation:
choices are made on the validation seed's cases, reports on the test seed's, never the other way.
"""

from __future__ import annotations

import numpy as np

from mudo_app.evaluation.metrics import predicted_as
from mudo_app.evaluation.report import evaluate_labels, summarise
from mudo_app.labels import LESION, NUM_CLASSES, label_names
from mudo_app.models.checkpoint import training_patch
from mudo_app.predict import predict_arrays

TEST_SEED_OFFSET = 1000  # test cases come from another generator seed than the training pool
VALIDATION_SEED = 3000  # choices (recipe, budget, which student to ship) are made on these cases, never on test
NAMES = {i: n for n, i in label_names().items()}  # background included


def score_student(model, prep, meta, cases) -> dict:
    """A trained student's scores on labelled ``cases``: mean Dice over the 13 classes (missed = 0),
    mean HD95 (found only), missed structures, per-class Dice, the autoPET lesion metrics (mean
    over cases of the lesion Dice, false-positive and false-negative volumes in ml) and where the true
    lesion voxels of all cases went (``lesion_voxels_predicted_as``: share per predicted class)."""
    rows = []
    fate = np.zeros(NUM_CLASSES, np.int64)
    for case in cases:
        pred = predict_arrays(model, prep, case.ct.array, case.pet.array, roi=training_patch(meta))
        truth = case.label.array.astype(np.int64)
        rows.append(evaluate_labels(case.case_id, truth, pred.astype(np.int64), case.ct.spacing))
        fate += predicted_as(truth, pred, LESION, NUM_CLASSES)
    mean = summarise(rows)
    per = mean["per_class"]
    hd = [m["hd95_mm"] for m in per.values() if np.isfinite(m["hd95_mm"])]
    return {
        "dice": float(np.mean([m["dice"] for m in per.values()])),
        "hd95_mm": float(np.mean(hd)) if hd else float("nan"),
        "missed": int(sum(m["missed"] for m in per.values())),
        "per_class_dice": {n: m["dice"] for n, m in per.items()},
        "lesion_autopet": {k: mean[k] for k in ("dice", "fp_volume_ml", "fn_volume_ml")},
        "lesion_voxels_predicted_as": {NAMES[k]: round(float(n) / fate.sum(), 4) for k, n in enumerate(fate) if n},
    }
