"""``muduo pretrain-teachers``: train and evaluate the stand-in CT and PET teachers."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from mudo_app.errors import InputError

DEFAULT_OUT = Path("sample-datasets/teachers")


def register(sub) -> None:
    p = sub.add_parser(
        "pretrain-teachers", help="train the small stand-in CT and PET teachers on synthetic data",
        description="Train stand-in teachers (3D SAM architecture, 'standin_small') on synthetic phantoms with "
                    "interactive click simulation, then report their zero-shot Dice with 1 and 3 clicks.")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--modality", choices=("ct", "pet", "both"), default="both")
    p.add_argument("--cases", type=int, default=40, help="synthetic training cases (default 40)")
    p.add_argument("--eval-cases", type=int, default=6, help="held-out synthetic cases for the report")
    p.add_argument("--iterations", type=int, default=600)
    p.add_argument("--seed", type=int, default=0, help="training seed; data seeds derive from it")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch CPU threads (default: all cores)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from mudo_app.bench.machine import describe
    from mudo_app.models.sam3d import STANDIN_CT, STANDIN_PET
    from mudo_app.synth import generate_cases
    from mudo_app.models.teachers import save_standin
    from mudo_app.train.teachers import TeacherPretrainSettings, evaluate_clicks, pretrain_teacher, settings_dict

    for name in ("cases", "eval_cases", "iterations", "threads"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1")
    torch.set_num_threads(args.threads)
    data_seed = 1_000 + args.seed
    train = generate_cases(data_seed, 0, args.cases)
    held_out = generate_cases(data_seed, 10_000, args.eval_cases)
    modalities = ["CT", "PET"] if args.modality == "both" else [args.modality.upper()]
    report = {"machine": describe(),
              "command": f"muduo pretrain-teachers --cases {args.cases} --eval-cases {args.eval_cases} "
                         f"--iterations {args.iterations} --seed {args.seed}",
              "teachers": {}}
    for modality in modalities:
        contract = STANDIN_CT if modality == "CT" else STANDIN_PET
        settings = TeacherPretrainSettings(modality=modality, iterations=args.iterations, seed=args.seed)
        t0 = time.time()
        model = pretrain_teacher(train, contract, settings, progress=not args.quiet)
        train_s = time.time() - t0
        scores = evaluate_clicks(model, contract, held_out, modality, (1, 3), progress=not args.quiet)
        provenance = {"settings": settings_dict(settings), "data": f"synthetic phantoms, seed {data_seed}, "
                      f"cases 0..{args.cases - 1}", "train_seconds": round(train_s, 1),
                      "zero_shot_dice": {str(k): v for k, v in scores.items()}, "command": report["command"]}
        fname = "standin_ct.pt" if modality == "CT" else "standin_pet.pt"
        save_standin(args.out / fname, model, settings.architecture, modality, provenance)
        report["teachers"][modality] = provenance
        print(f"{modality} stand-in teacher: {args.out / fname} ({train_s:.0f} s)")
        for k, per in scores.items():
            print(f"  {k} click(s): " + ", ".join(f"{n} {100 * d:.1f}" for n, d in per.items()))
    report_path = args.out / "report.json"
    if report_path.is_file() and len(modalities) == 1:  # keep the other teacher's entry
        previous = json.loads(report_path.read_text()).get("teachers", {})
        report["teachers"] = {**previous, **report["teachers"]}
    report_path.write_text(json.dumps(report, indent=2))
    return 0
