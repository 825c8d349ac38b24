"""The standard preset's student recipe and budget, chosen on validation cases, never on test cases.

Trains students on the benchmark's training data (generator seed 0: 5 labelled cases and, for
``fully_supervised``, the unlabelled ones with their synthetic truth) once per (variant, method,
budget), and scores each on *validation* cases from generator seed 3000, which is neither the
benchmark's training seed (0) nor its test seed (1000). Two questions:

* which patch sampling, Dice reduction and student let a 5-label supervised student find lesions
  (``--variants``, method ``supervised``);
* which budget makes ``fully_supervised`` beat ``supervised`` by >= 8 Dice points (``--methods
  supervised fully_supervised --iterations N ...``).

Runs are resumable and reused (``<out>/runs/<variant>-<method>-<iterations>/``); several processes
may share ``--out`` (each writes its own ``score.json``); ``--json`` collects every finished run.
The PET is synthetic.

    .venv/bin/python sample-datasets/scripts/choose_recipe.py --out runs/recipe --threads 1 \
        [--variants class_uniform lesion_half] [--methods supervised] [--iterations 1500] [--unlabelled 30] \
        --json sample-datasets/benchmarks/recipe.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from mudo_app.bench.machine import describe
from mudo_app.bench.scoring import VALIDATION_SEED, score_student
from mudo_app.io.atomic import write_json
from mudo_app.models.checkpoint import load_student
from mudo_app.synth import PhantomSettings
from mudo_app.synth.writers import generate_cases, write_dataset
from mudo_app.train.config import config_from_dict
from mudo_app.train.trainer import Trainer

LABELLED, UNLABELLED = 5, 15  # the standard preset's training data (``--unlabelled`` grows the pool)
VARIANTS: dict[str, dict] = {
    "class_uniform": {},  # nnU-Net's draw: a present class uniformly (the lesion class 1/13 of the time)
    "batch_dice": {"dice": "batch"},
    "lesion_half": {"lesion_share": 0.5},
    "lesion_half_batch_dice": {"lesion_share": 0.5, "dice": "batch"},
    "full_res_batch_dice": {"student": "unet_fullres", "dice": "batch"},  # a full-resolution first level
    "lesion_weight3_batch_dice": {"lesion_weight": 3.0, "dice": "batch"},  # the lesion class weighted 3 in the loss
    "lesion_paste_batch_dice": {"lesion_paste": 0.5, "dice": "batch"},  # lesion copy-paste into half the patches
    "lesion_paste1_batch_dice": {"lesion_paste": 1.0, "dice": "batch"},  # a lesion pasted into every labelled patch
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/recipe"))
    parser.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--methods", nargs="+", choices=("supervised", "fully_supervised"), default=["supervised"])
    parser.add_argument("--iterations", nargs="+", type=int, default=[1500])
    parser.add_argument(
        "--unlabelled",
        type=int,
        default=UNLABELLED,
        help="unlabelled cases beside the 5 labelled ones (fully_supervised trains on their truth)",
    )
    parser.add_argument("--validation-cases", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="collect every finished run here")
    args = parser.parse_args()
    if args.unlabelled < 0:
        parser.error(f"--unlabelled must be >= 0, got {args.unlabelled}")
    torch.set_num_threads(args.threads)
    pool = "" if args.unlabelled == UNLABELLED else f"-u{args.unlabelled}"  # runs on the default pool keep their names
    data = args.out / f"data{pool}"
    if not (data / ".complete").is_file():
        write_dataset(data, LABELLED + args.unlabelled, seed=0, labelled=LABELLED, progress=False)
        (data / ".complete").write_text("")
    validation = generate_cases(VALIDATION_SEED, 0, args.validation_cases, PhantomSettings())
    for iterations in args.iterations:
        for method in args.methods:
            for name in args.variants:
                run = args.out / "runs" / f"{name}-{method}-{iterations}{pool}"
                if (run / "score.json").is_file():
                    continue
                cfg = config_from_dict(
                    {
                        "datastore": str(data),
                        "out": str(run),
                        "preprocessed": str(args.out / "preprocessed"),
                        "method": method,
                        "iterations": iterations,
                        "checkpoint_every": 250,
                        "threads": args.threads,
                        "seed": 0,
                        **VARIANTS[name],
                    }
                )
                t0 = time.perf_counter()
                if not (run / "student.pt").is_file():
                    Trainer(cfg, progress=False).run(resume=(run / "state.pt").is_file())
                seconds = round(time.perf_counter() - t0, 1)
                model, prep, meta = load_student(run / "student.pt")
                score = score_student(model, prep, meta, validation)
                row = {
                    "variant": name,
                    "method": method,
                    "iterations": iterations,
                    "labelled": LABELLED,
                    "unlabelled": args.unlabelled,
                    "config": VARIANTS[name],
                }
                write_json(run / "score.json", {**row, "train_seconds": seconds, **score})
                lesion = 100 * score["per_class_dice"].get("lesion", 0.0)
                print(f"{run.name}: Dice {100 * score['dice']:.1f}, lesion {lesion:.1f}")
    if args.json:
        rows = {p.parent.name: json.loads(p.read_text()) for p in sorted((args.out / "runs").glob("*/score.json"))}
        write_json(
            args.json,
            {
                "machine": describe(),
                "command": "sample-datasets/scripts/choose_recipe.py (see each run's variant, method, iterations)",
                "training": f"synthetic seed 0: {LABELLED} labelled + N unlabelled cases (each run's 'unlabelled', "
                f"{UNLABELLED} where absent; their truth for fully_supervised only), patch 64^3, batch 2, seed 0, "
                "1 torch thread per run",
                "validation": f"synthetic seed {VALIDATION_SEED}, cases 0..{args.validation_cases - 1} (not test data)",
                "pet": "synthetic",
                "runs": rows,
            },
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
