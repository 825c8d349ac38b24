"""Which patch sampling and Dice reduction let a 5-label supervised student find lesions.

Trains the supervised student on the benchmark's training cases (generator seed 0, the 5 labelled
ones) once per variant, with one budget and seed, and scores each on *validation* cases from
generator seed 3000, which is neither the benchmark's training seed (0) nor its test seed (1000): the
default is chosen without looking at test labels. Runs are resumable and reused; variants may run
in separate processes (``--variants``), each writing its own ``score.json``; ``--json`` collects
every finished one. The PET is synthetic.

    .venv/bin/python sample-datasets/scripts/lesion_sampling.py --out runs/lesion_sampling \\
        --iterations 1500 --threads 1 [--variants class_uniform lesion_half] \\
        --json sample-datasets/benchmarks/lesion_sampling.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from mudo_app.bench.benchmark import score_student
from mudo_app.bench.machine import describe
from mudo_app.io.atomic import write_json
from mudo_app.models.checkpoint import load_student
from mudo_app.synth import PhantomSettings
from mudo_app.synth.writers import generate_cases, write_dataset
from mudo_app.train.config import config_from_dict
from mudo_app.train.trainer import Trainer

VALIDATION_SEED = 3000
LABELLED = 5
VARIANTS: dict[str, dict] = {
    "class_uniform": {},  # nnU-Net's draw: a present class uniformly (the lesion class 1/13 of the time)
    "batch_dice": {"dice": "batch"},
    "lesion_half": {"lesion_share": 0.5},
    "lesion_half_batch_dice": {"lesion_share": 0.5, "dice": "batch"},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/lesion_sampling"))
    parser.add_argument("--iterations", type=int, default=1500)
    parser.add_argument("--validation-cases", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--json", type=Path, default=None, help="collect every finished variant here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = args.out / "data"
    if not (data / ".complete").is_file():
        write_dataset(data, LABELLED, seed=0, labelled=LABELLED, progress=False)
        (data / ".complete").write_text("")
    validation = generate_cases(VALIDATION_SEED, 0, args.validation_cases, PhantomSettings())
    for name in args.variants:
        run = args.out / "runs" / name
        if (run / "score.json").is_file():
            continue
        cfg = config_from_dict(
            {
                "datastore": str(data),
                "out": str(run),
                "preprocessed": str(args.out / "preprocessed"),
                "method": "supervised",
                "iterations": args.iterations,
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
        write_json(run / "score.json", {"variant": name, "config": VARIANTS[name], "train_seconds": seconds, **score})
        print(f"{name}: Dice {100 * score['dice']:.1f}, lesion {100 * score['per_class_dice'].get('lesion', 0):.1f}")
    if args.json:
        rows = {}
        for name in VARIANTS:
            path = args.out / "runs" / name / "score.json"
            if path.is_file():
                rows[name] = json.loads(path.read_text())
        write_json(
            args.json,
            {
                "machine": describe(),
                "command": f"sample-datasets/scripts/lesion_sampling.py --iterations {args.iterations} "
                f"--validation-cases {args.validation_cases} --threads {args.threads}",
                "training": f"supervised, {LABELLED} labelled synthetic cases (seed 0), {args.iterations} iterations, "
                "patch 64^3, batch 2, seed 0",
                "validation": f"synthetic seed {VALIDATION_SEED}, cases 0..{args.validation_cases - 1} (not test data)",
                "pet": "synthetic",
                "variants": rows,
            },
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
