"""Active learning, simulated: does ``teacher_disagreement`` pick better cases to label than ``random``?

The loop a clinic runs, on synthetic data whose truth is known (the PET is synthetic):

1. **round 0**: a student trained on the 5 labelled cases of the standard preset's training data
   (generator seed 0, 5 labelled + 15 unlabelled cases), one per seed;
2. **choose** 5 of the 15 unlabelled cases, either by ``teacher_disagreement`` (the server's strategy,
   :func:`mudo_app.distill.disagreement.disagreement`: round-0 student + shipped stand-in teachers; the
   5 highest scores) or ``random`` (5 drawn with the seed);
3. **round 1**: "label" them (their synthetic truth from ``ground_truth/`` becomes the final label in
   a copy of the datastore) and retrain from scratch with the same recipe and budget on 10 labels.

Every student is scored on the benchmark's test cases (generator seed 1000), which choose nothing:
the strategy, the recipe (``standard`` preset's: batch Dice) and the budget are fixed beforehand.
Runs are resumable (finished students and selections are reused).

    .venv/bin/python sample-datasets/scripts/active_learning.py --out runs/active_learning \
        --json sample-datasets/benchmarks/active_learning.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from mudo_app.bench.machine import describe
from mudo_app.bench.scoring import TEST_SEED_OFFSET, score_student
from mudo_app.distill.disagreement import case_disagreement
from mudo_app.io.atomic import write_json
from mudo_app.io.datastore import PetCtDatastore
from mudo_app.io.volume import load_volume
from mudo_app.models.checkpoint import load_student, training_patch
from mudo_app.models.teachers import load_teacher
from mudo_app.predict import predict_arrays
from mudo_app.synth import PhantomSettings
from mudo_app.synth.writers import generate_cases, write_dataset
from mudo_app.train.config import config_from_dict
from mudo_app.train.trainer import Trainer

LABELLED, UNLABELLED, ADDED = 5, 15, 5
STRATEGIES = ("teacher_disagreement", "random")
RECIPE = {"method": "supervised", "dice": "batch"}  # the standard preset's recipe, supervised


def train(store: Path, run: Path, preprocessed: Path, seed: int, iterations: int, threads: int) -> float | None:
    """Train (or resume, or reuse) one student; the seconds it took, None when it was already there."""
    if (run / "done").is_file():
        return None
    cfg = config_from_dict(
        {
            "datastore": str(store),
            "out": str(run),
            "preprocessed": str(preprocessed),
            "iterations": iterations,
            "checkpoint_every": 250,
            "threads": threads,
            "seed": seed,
            **RECIPE,
        }
    )
    t0 = time.perf_counter()
    Trainer(cfg, progress=False).run(resume=(run / "state.pt").is_file())
    (run / "done").write_text("")
    return round(time.perf_counter() - t0, 1)


def disagreement_scores(store: PetCtDatastore, student: Path) -> dict[str, float]:
    """The server strategy's score of every unlabelled case, with the round-0 ``student``."""
    model, prep, meta = load_student(student)
    teachers = (load_teacher("CT"), load_teacher("PET"))
    scores = {}
    for cid in store.unlabelled_ids():
        case = store.load_case(cid)
        label = predict_arrays(model, prep, case.ct.array, case.pet.array, roi=training_patch(meta))
        scores[cid] = float(case_disagreement(label, case.ct, case.pet, teachers)["score"])
    return scores


def choose(strategy: str, scores: dict[str, float], seed: int) -> list[str]:
    """The ``ADDED`` cases ``strategy`` sends to the annotator (ties broken by case id)."""
    if strategy == "teacher_disagreement":
        return [c for _, c in sorted((-s, c) for c, s in scores.items())[:ADDED]]
    rng = np.random.default_rng(seed)
    return sorted(str(c) for c in rng.choice(sorted(scores), size=ADDED, replace=False))


def labelled_copy(pool: Path, target: Path, cases: list[str]) -> Path:
    """A copy of ``pool`` in which ``cases`` carry their synthetic truth as the final label."""
    if (target / ".complete").is_file():
        return target
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(pool, target)
    store = PetCtDatastore(target)
    for cid in cases:
        store.save_label(cid, load_volume(store.ground_truth_path(cid), f"{cid} ground truth"), user="simulation")
    (target / ".complete").write_text("")
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/active_learning"))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=1500)
    parser.add_argument("--test-cases", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pool = args.out / "data"
    if not (pool / ".complete").is_file():
        shutil.rmtree(pool, ignore_errors=True)
        write_dataset(pool, LABELLED + UNLABELLED, seed=0, labelled=LABELLED, progress=False)
        (pool / ".complete").write_text("")
    test = generate_cases(TEST_SEED_OFFSET, 0, args.test_cases, PhantomSettings())
    preprocessed = args.out / "preprocessed"
    rows = []
    for seed in args.seeds:
        round0 = args.out / "round0" / f"seed{seed}"
        seconds0 = train(pool, round0, preprocessed, seed, args.iterations, args.threads)
        picks_file = round0 / "disagreement.json"
        if not picks_file.is_file():
            write_json(picks_file, disagreement_scores(PetCtDatastore(pool), round0 / "student.pt"))
        scores = json.loads(picks_file.read_text())
        row: dict = {"seed": seed, "round0": {"train_seconds": seconds0, **_score(round0, test)}}
        for strategy in STRATEGIES:
            picked = choose(strategy, scores, seed)
            store = labelled_copy(pool, args.out / "stores" / f"{strategy}-seed{seed}", picked)
            run = args.out / "round1" / f"{strategy}-seed{seed}"
            seconds = train(store, run, preprocessed, seed, args.iterations, args.threads)
            row[strategy] = {"cases": picked, "train_seconds": seconds, **_score(run, test)}
            print(f"seed {seed} {strategy}: {picked} -> Dice {100 * row[strategy]['dice']:.1f}")
        row["disagreement_scores"] = scores
        rows.append(row)
    summary = {
        name: {
            "dice_mean": float(np.mean([r[name]["dice"] for r in rows])),
            "dice_std": float(np.std([r[name]["dice"] for r in rows])),
            "lesion_dice_mean": float(np.mean([r[name]["lesion_autopet"]["dice"] for r in rows])),
        }
        for name in ("round0", *STRATEGIES)
    }
    for name, s in summary.items():
        dice, std, lesion = (100 * s[k] for k in ("dice_mean", "dice_std", "lesion_dice_mean"))
        print(f"{name}: Dice {dice:.1f} +- {std:.1f}, lesion {lesion:.1f}")
    if args.json:
        write_json(
            args.json,
            {
                "machine": describe(),
                "command": f"sample-datasets/scripts/active_learning.py --iterations {args.iterations} "
                f"--seeds {' '.join(map(str, args.seeds))}",
                "pool": f"synthetic seed 0: {LABELLED} labelled + {UNLABELLED} unlabelled; {ADDED} added per strategy",
                "recipe": {**RECIPE, "iterations": args.iterations, "patch": "64^3", "batch": 2},
                "test": f"synthetic seed {TEST_SEED_OFFSET}, cases 0..{args.test_cases - 1} (choose nothing)",
                "teachers": "shipped stand-ins (mudo_app/assets/teachers)",
                "pet": "synthetic",
                "summary": summary,
                "per_seed": rows,
            },
        )
    return 0


def _score(run: Path, test) -> dict:
    model, prep, meta = load_student(run / "student.pt")
    return score_student(model, prep, meta, test)


if __name__ == "__main__":
    raise SystemExit(main())
