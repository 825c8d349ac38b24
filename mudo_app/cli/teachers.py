"""``muduo pretrain-teachers`` and ``muduo evaluate-teachers``: the stand-in CT and PET teachers."""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mudo_app.errors import InputError
from mudo_app.io.atomic import atomic_write
from mudo_app.resources import standin_teacher_dir

DEFAULT_OUT = standin_teacher_dir()  # where load_teacher() finds the stand-ins
HELD_OUT_FIRST = 10_000  # held-out synthetic case indices start here (training uses 0..cases-1)


def register(sub) -> None:
    p = sub.add_parser(
        "pretrain-teachers",
        help="train the small stand-in CT and PET teachers on synthetic data",
        description="Train stand-in teachers (3D SAM architecture, 'standin_small') on synthetic phantoms with "
        "interactive click simulation, then report their zero-shot Dice with 1 and 3 clicks.",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--modality", choices=("ct", "pet", "both"), default="both")
    p.add_argument("--cases", type=int, default=40, help="synthetic training cases (default 40)")
    p.add_argument("--eval-cases", type=int, default=6, help="held-out synthetic cases for the report")
    p.add_argument("--iterations", type=int, default=500)
    p.add_argument("--seed", type=int, default=0, help="training seed; the data seed is 1000 + seed")
    _common(p)
    p.set_defaults(run=run_pretrain)

    p = sub.add_parser(
        "evaluate-teachers",
        help="zero-shot click Dice of the CT and PET teachers on held-out synthetic cases",
        description="Evaluate teachers (the shipped stand-ins, or official checkpoints given by path) with 1 and "
        "3 simulated clicks per object on held-out synthetic cases.",
    )
    p.add_argument("--ct", type=Path, default=None, help="CT teacher checkpoint (default: the shipped stand-in)")
    p.add_argument("--pet", type=Path, default=None, help="PET teacher checkpoint (default: the shipped stand-in)")
    p.add_argument("--eval-cases", type=int, default=6)
    p.add_argument("--seed", type=int, default=0, help="as in pretrain-teachers: held-out data seed 1000 + seed")
    p.add_argument("--json", type=Path, default=None, help="write the report here")
    _common(p)
    p.set_defaults(run=run_evaluate)


def _common(p) -> None:
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch CPU threads (default: all cores)")
    p.add_argument("--quiet", action="store_true")


def _check_positive(args, names) -> None:
    for name in names:
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1")


def _data_seed(args) -> int:
    return 1_000 + args.seed


def _held_out(args):
    from mudo_app.synth import generate_cases

    return generate_cases(_data_seed(args), HELD_OUT_FIRST, args.eval_cases)


def _evaluate(teacher_model, contract, modality, held_out, args) -> dict:
    from mudo_app.train.teachers import evaluate_clicks

    scores = evaluate_clicks(teacher_model, contract, held_out, modality, (1, 3), progress=not args.quiet)
    for k, per in scores.items():
        print(f"  {modality} {k} click(s): " + ", ".join(f"{n} {100 * d:.1f}" for n, d in per.items()))
    return {str(k): v for k, v in scores.items()}


def run_pretrain(args: argparse.Namespace) -> int:
    import torch

    from mudo_app.bench.machine import describe
    from mudo_app.models.sam3d import STANDIN_CT, STANDIN_PET
    from mudo_app.models.teachers import save_standin
    from mudo_app.synth import generate_cases
    from mudo_app.train.teachers import TeacherPretrainSettings, pretrain_teacher

    _check_positive(args, ("cases", "eval_cases", "iterations", "threads"))
    torch.set_num_threads(args.threads)
    data_seed = _data_seed(args)
    train = generate_cases(data_seed, 0, args.cases)
    held_out = _held_out(args)
    modalities = ["CT", "PET"] if args.modality == "both" else [args.modality.upper()]
    command = (
        f"muduo pretrain-teachers --cases {args.cases} --eval-cases {args.eval_cases} "
        f"--iterations {args.iterations} --seed {args.seed}"
    )
    teachers: dict[str, Any] = {}
    report = {"machine": describe(), "command": command, "teachers": teachers}
    for modality in modalities:
        contract = STANDIN_CT if modality == "CT" else STANDIN_PET
        settings = TeacherPretrainSettings(modality=modality, iterations=args.iterations, seed=args.seed)
        t0 = time.time()
        model = pretrain_teacher(train, contract, settings, progress=not args.quiet)
        train_s = time.time() - t0
        fname = "standin_ct.pt" if modality == "CT" else "standin_pet.pt"
        print(f"{modality} stand-in teacher: {args.out / fname} ({train_s:.0f} s)")
        provenance = {
            "settings": asdict(settings),
            "train_seconds": round(train_s, 1),
            "command": command,
            "data": f"synthetic phantoms, seed {data_seed}, cases 0..{args.cases - 1}",
            "zero_shot_dice": _evaluate(model, contract, modality, held_out, args),
        }
        save_standin(args.out / fname, model, settings.architecture, modality, provenance)
        teachers[modality] = provenance
    report_path = args.out / "report.json"
    if report_path.is_file() and len(modalities) == 1:  # keep the other teacher's entry
        previous = json.loads(report_path.read_text()).get("teachers", {})
        report["teachers"] = {**previous, **teachers}
    with atomic_write(report_path) as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    import torch

    from mudo_app.bench.machine import describe
    from mudo_app.models.teachers import load_teacher

    _check_positive(args, ("eval_cases", "threads"))
    torch.set_num_threads(args.threads)
    held_out = _held_out(args)
    teachers: dict[str, Any] = {}
    report = {
        "machine": describe(),
        "held_out": f"synthetic seed {_data_seed(args)}, cases "
        f"{HELD_OUT_FIRST}..{HELD_OUT_FIRST + args.eval_cases - 1}",
        "teachers": teachers,
    }
    for modality, path in (("CT", args.ct), ("PET", args.pet)):
        teacher = load_teacher(modality, path)
        print(teacher.describe())
        teachers[modality] = {
            "checkpoint": teacher.checkpoint,
            "standin": teacher.standin,
            "zero_shot_dice": _evaluate(teacher.model, teacher.contract, modality, held_out, args),
        }
    if args.json:
        with atomic_write(args.json) as tmp:
            tmp.write_text(json.dumps(report, indent=2))
    return 0
