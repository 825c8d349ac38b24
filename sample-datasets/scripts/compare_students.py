"""Student choice: supervised training of each student on the demo datastore's labelled cases, mean Dice
over the 13 classes on its unlabelled cases syn005-syn007 (their synthetic ground truth).

    .venv/bin/python sample-datasets/scripts/compare_students.py [--iterations 1000] [unet_lite unet_small ...]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mudo_app.evaluation.metrics import mean_dice
from mudo_app.io.datastore import PetCtDatastore
from mudo_app.io.volume import load_volume
from mudo_app.models.checkpoint import load_student, training_patch
from mudo_app.predict import predict_arrays
from mudo_app.train.config import config_from_dict
from mudo_app.train.trainer import Trainer

DEMO = Path(__file__).resolve().parents[1] / "demo" / "datastore"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("students", nargs="*", default=["unet_lite", "unet_small"])
    parser.add_argument("--iterations", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(2)
    store = PetCtDatastore(DEMO)
    for name in args.students:
        out = Path(tempfile.mkdtemp()) / name
        started = time.perf_counter()
        cfg = config_from_dict(
            {
                "datastore": str(DEMO),
                "out": str(out),
                "method": "supervised",
                "student": name,
                "iterations": args.iterations,
            }
        )
        Trainer(cfg, progress=False).run()
        seconds = time.perf_counter() - started
        model, prep, meta = load_student(out / "student.pt")
        scores = []
        for cid in ("syn005", "syn006", "syn007"):
            case = store.load_case(cid)
            truth = load_volume(store.ground_truth_path(cid)).array
            pred = predict_arrays(model, prep, case.ct.array, case.pet.array, roi=training_patch(meta))
            scores.append(mean_dice(truth, pred))
        print(
            f"{name}: mean Dice {100 * np.mean(scores):.1f} % (cases {np.round(100 * np.array(scores), 1).tolist()}), "
            f"training {seconds:.0f} s for {args.iterations} iterations"
        )
        shutil.rmtree(out.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
