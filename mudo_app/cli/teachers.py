"""``muduo pretrain-teachers`` and ``muduo evaluate-teachers``: the stand-in CT and PET teachers."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mudo_app.errors import InputError
from mudo_app.io.atomic import write_json
from mudo_app.resources import standin_teacher_dir

DEFAULT_OUT = standin_teacher_dir()  # where load_teacher() finds the stand-ins


DEFAULT_WORK = Path("runs/teachers")  # resumable training states


def register(sub) -> None:
    p = sub.add_parser(
        "pretrain-teachers",
        help="train the small stand-in CT and PET teachers on the synthetic foundation corpus",
        description="Train stand-in teachers (3D SAM architecture, 'standin_small') on the synthetic foundation "
        "corpus (mudo_app.synth.foundation: its own seeds, broader variation than any benchmark) with "
        "interactive click simulation, then report their zero-shot Dice on held-out corpus cases. "
        "Resumable: an interrupted run continues from its state in --work.",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--work", type=Path, default=DEFAULT_WORK, help=f"training states (default {DEFAULT_WORK})")
    p.add_argument("--modality", choices=("ct", "pet", "both"), default="both")
    p.add_argument("--cases", type=int, default=80, help="foundation corpus training cases (default 80)")
    p.add_argument("--eval-cases", type=int, default=6, help="held-out corpus cases for the report")
    p.add_argument("--iterations", type=int, default=2500)
    p.add_argument("--seed", type=int, default=0, help="training seed (crops, clicks, initial weights)")
    p.add_argument(
        "--objects-per-crop",
        type=int,
        default=1,
        help="click sessions per training crop: the picked object and others the crop holds (default 1)",
    )
    p.add_argument(
        "--lesion-share",
        type=float,
        default=0.25,
        help="fraction of training crops centred on one lesion (0: organs only, no lesion object; default 0.25)",
    )
    p.add_argument(
        "--multimask",
        action="store_true",
        help="also train the decoder's three candidate masks on the one-click step (SAM's ambiguity-aware "
        "output) and report the one-click Dice of the candidate with the highest predicted IoU",
    )
    p.add_argument(
        "--dense-weight",
        type=float,
        default=0.0,
        help="weight of an auxiliary dense segmentation loss on the image encoder (a training-only head "
        "predicts every class of each crop's label map; not part of the saved teacher; default 0: none)",
    )
    p.add_argument(
        "--dense-pretrain-iterations",
        type=int,
        default=0,
        help="first train the image encoder alone on that dense loss for this many steps (no prompts; AdamW "
        "at 1e-3, warm-up cosine), then the --iterations click steps (default 0: no such stage)",
    )
    p.add_argument(
        "--decoder-iterations",
        type=int,
        default=0,
        help="after the click steps, train the prompt encoder and mask decoder alone (image encoder frozen) for "
        "this many more click steps (AdamW at 4e-4, warm-up cosine); a finished run's state in --work is "
        "extended by this stage (default 0: no such stage)",
    )
    _common(p)
    p.set_defaults(run=run_pretrain)

    p = sub.add_parser(
        "evaluate-teachers",
        help="zero-shot click Dice of the CT and PET teachers on held-out synthetic cases",
        description="Evaluate teachers (the shipped stand-ins, or official checkpoints given by path) on held-out "
        "foundation corpus cases: 1 and 3 simulated clicks per object, the first at the deepest voxel and at a "
        "random voxel of the object, and the answer to an imperfect mask prompt alone.",
    )
    p.add_argument("--ct", type=Path, default=None, help="CT teacher checkpoint (default: the shipped stand-in)")
    p.add_argument("--pet", type=Path, default=None, help="PET teacher checkpoint (default: the shipped stand-in)")
    p.add_argument("--eval-cases", type=int, default=6)
    p.add_argument("--json", type=Path, default=None, help="write the report here")
    p.add_argument(
        "--multimask",
        action="store_true",
        help="also report one click answered by the multimask candidate with the highest predicted IoU "
        "(for teachers trained with pretrain-teachers --multimask)",
    )
    _common(p)
    p.set_defaults(run=run_evaluate)


def _common(p) -> None:
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch CPU threads (default: all cores)")
    p.add_argument("--quiet", action="store_true")


def _check_positive(args, names) -> None:
    for name in names:
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1")


def _held_out(args):
    from mudo_app.synth.foundation import foundation_cases

    return foundation_cases(0, args.eval_cases, held_out=True)


def _held_out_text(args) -> str:
    from mudo_app.synth.foundation import FOUNDATION_HELD_OUT_SEED

    return f"synthetic foundation corpus, held-out seed {FOUNDATION_HELD_OUT_SEED}, cases 0..{args.eval_cases - 1}"


def _mean(per: dict[str, float]) -> float:
    return float(sum(per.values()) / len(per)) if per else float("nan")


CLICK_REPORTS = (  # (first click, one-click answer from the multimask candidates, report key)
    ("deepest", False, "zero_shot_dice"),
    ("random", False, "random_first_click_dice"),
    ("deepest", True, "multimask_dice"),
    ("random", True, "random_first_click_multimask_dice"),
)


def _evaluate(teacher_model, contract, modality, held_out, args, multimask: bool) -> dict:
    """The click and mask-prompt report of one teacher; the multimask rows only when ``multimask``."""
    from mudo_app.train.teacher_eval import evaluate_clicks, evaluate_mask_prompts

    out: dict[str, Any] = {}
    for first, candidates, key in CLICK_REPORTS:
        if candidates and not multimask:
            continue
        scores = evaluate_clicks(
            teacher_model,
            contract,
            held_out,
            modality,
            (1, 3),
            progress=not args.quiet,
            first=first,
            multimask=candidates,
        )
        out[key] = {str(k): v for k, v in scores.items()}
        out[key.replace("_dice", "_mean")] = {str(k): _mean(v) for k, v in scores.items()}
        how = ", one-click answer from the multimask candidates" if candidates else ""
        for k, per in scores.items():
            print(
                f"  {modality} {k} click(s), first {first}{how}: mean {100 * _mean(per):.1f}; "
                + ", ".join(f"{n} {100 * d:.1f}" for n, d in per.items())
            )
    out["mask_prompt"] = evaluate_mask_prompts(teacher_model, contract, held_out, modality, progress=not args.quiet)
    m = out["mask_prompt"]
    print(
        f"  {modality} mask prompt of Dice {100 * m['prompt_dice']:.1f} -> answer {100 * m['answer_dice']:.1f} "
        f"({100 * m['answer_better_fraction']:.0f} % of {m['objects']} organs better)"
    )
    return out


def run_pretrain(args: argparse.Namespace) -> int:
    import torch

    from mudo_app.bench.machine import describe
    from mudo_app.models.sam3d import STANDIN_CT, STANDIN_PET
    from mudo_app.models.teachers import save_standin
    from mudo_app.synth.foundation import FOUNDATION_SEED, foundation_cases
    from mudo_app.train.teacher_state import training_seconds
    from mudo_app.train.teachers import TeacherPretrainSettings, pretrain_teacher

    _check_positive(args, ("cases", "eval_cases", "threads"))
    modalities = ["CT", "PET"] if args.modality == "both" else [args.modality.upper()]
    try:  # the recipe checks its own fields; its message names the field, the user's error names the flag
        settings = {
            m: TeacherPretrainSettings(
                modality=m,
                iterations=args.iterations,
                seed=args.seed,
                objects_per_crop=args.objects_per_crop,
                lesion_share=args.lesion_share,
                multimask=args.multimask,
                dense_weight=args.dense_weight,
                dense_pretrain_iterations=args.dense_pretrain_iterations,
                decoder_iterations=args.decoder_iterations,
            )
            for m in modalities
        }
    except ValueError as e:
        field, _, rest = str(e).partition(" ")
        raise InputError(f"--{field.replace('_', '-')} {rest}") from e
    torch.set_num_threads(args.threads)
    train = foundation_cases(0, args.cases)
    held_out = _held_out(args)
    command = (
        f"muduo pretrain-teachers --cases {args.cases} --eval-cases {args.eval_cases} "
        f"--iterations {args.iterations} --seed {args.seed} --objects-per-crop {args.objects_per_crop} "
        f"--lesion-share {args.lesion_share:g}"
        + (" --multimask" if args.multimask else "")
        + (f" --dense-weight {args.dense_weight:g}" if args.dense_weight > 0 else "")
        + (f" --dense-pretrain-iterations {args.dense_pretrain_iterations}" if args.dense_pretrain_iterations else "")
        + (f" --decoder-iterations {args.decoder_iterations}" if args.decoder_iterations else "")
    )
    teachers: dict[str, Any] = {}
    report = {"machine": describe(), "command": command, "held_out": _held_out_text(args), "teachers": teachers}
    for modality in modalities:
        contract = STANDIN_CT if modality == "CT" else STANDIN_PET
        state = args.work / f"standin_{modality.lower()}.state.pt"
        model = pretrain_teacher(train, contract, settings[modality], progress=not args.quiet, state_path=state)
        train_s = training_seconds(state)
        fname = "standin_ct.pt" if modality == "CT" else "standin_pet.pt"
        print(f"{modality} stand-in teacher: {args.out / fname} ({train_s:.0f} s of training, all sessions)")
        provenance = {
            "settings": asdict(settings[modality]),
            "train_seconds": round(train_s, 1),
            "command": command,
            "threads": args.threads,
            "data": f"synthetic foundation corpus, seed {FOUNDATION_SEED}, cases 0..{args.cases - 1}",
            **_evaluate(model, contract, modality, held_out, args, settings[modality].multimask),
        }
        save_standin(args.out / fname, model, settings[modality].architecture, modality, provenance)
        teachers[modality] = provenance
    report_path = args.out / "report.json"
    if report_path.is_file() and len(modalities) == 1:  # keep the other teacher's entry
        previous = json.loads(report_path.read_text()).get("teachers", {})
        report["teachers"] = {**previous, **teachers}
    write_json(report_path, report)
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    import torch

    from mudo_app.bench.machine import describe
    from mudo_app.models.teachers import load_teacher

    _check_positive(args, ("eval_cases", "threads"))
    torch.set_num_threads(args.threads)
    held_out = _held_out(args)
    teachers: dict[str, Any] = {}
    report = {"machine": describe(), "held_out": _held_out_text(args), "teachers": teachers}
    for modality, path in (("CT", args.ct), ("PET", args.pet)):
        teacher = load_teacher(modality, path)
        print(teacher.describe())
        teachers[modality] = {
            "checkpoint": teacher.checkpoint,
            "standin": teacher.standin,
            **_evaluate(teacher.model, teacher.contract, modality, held_out, args, args.multimask),
        }
    if args.json:
        write_json(args.json, report)
    return 0
