"""Make the shipped student (``mudo_app/assets/student/``): train, choose on validation, store fp16.

The student ``make serve`` serves first and ``muduo predict`` uses by default. Two candidates are
trained on the demo datastore (``make demo``: 12 synthetic cases, 5 labelled, generator seed 2026)
with the standard recipe (``sample-datasets/configs/shipped_student.json``: batch Dice, 3,000
iterations, 64^3 patches, seed 0): ``muduo`` (the method, shipped stand-in teachers) and ``supervised``
(the 5 labels only), side by side, one torch thread each, resumable (an interrupted run is resumed by
the next call). The one with the higher mean Dice on *validation* cases (generator seed 3000) is
shipped, its weights stored as fp16; both are also scored on the benchmark's *test* cases (seed 1000),
which choose nothing. ``report.json`` beside the checkpoint holds the scores, the times and this
command. The PET is synthetic.

    .venv/bin/python sample-datasets/scripts/ship_student.py [--work sample-datasets/demo/student] \
        [--runs RUN_DIR ...]   # score and ship already trained runs instead of training
    .venv/bin/python sample-datasets/scripts/ship_student.py --rescore
        # score the shipped checkpoint again after a change of the predictor (the choice stays)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from mudo_app.bench.machine import describe
from mudo_app.bench.scoring import TEST_SEED_OFFSET, VALIDATION_SEED, score_student
from mudo_app.io.atomic import write_json
from mudo_app.models.checkpoint import load_student, save_student
from mudo_app.resources import shipped_student, shipped_student_dir
from mudo_app.synth import PhantomSettings
from mudo_app.synth.writers import generate_cases

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "sample-datasets" / "configs" / "shipped_student.json"
CANDIDATES = ("muduo", "supervised")
VALIDATION_CASES, TEST_CASES = 4, 6


def train_candidates(work: Path) -> dict[str, Path]:
    """Train (or resume) every candidate in ``work/<method>``, all at once, one thread each."""
    jobs, runs = [], {}
    t0 = time.perf_counter()
    for method in CANDIDATES:
        run = work / method
        runs[method] = run
        if (run / "done").is_file():
            continue
        cmd = [sys.executable, "-m", "mudo_app.cli", "train", "--config", str(CONFIG), "--no-progress"]
        cmd += ["--set", f"method={json.dumps(method)}", "--set", f"out={json.dumps(str(run))}"]
        if (run / "state.pt").is_file():
            cmd.append("--resume")
        elif run.exists():  # a run that never reached its first checkpoint: start it again
            shutil.rmtree(run)
        jobs.append((method, run, subprocess.Popen(cmd, cwd=REPO)))
    for method, run, job in jobs:
        if job.wait() != 0:
            raise SystemExit(f"training {method} in {run} failed (exit {job.returncode})")
        (run / "done").write_text(f"{time.perf_counter() - t0:.0f} s wall, candidates trained side by side\n")
    return runs


def rescore(validation, test) -> int:
    """Score the shipped checkpoint again with the current predictor: ``shipped_test`` and
    ``shipped_validation`` are replaced; the candidates' scores, which made the choice, stay as they were."""
    path = shipped_student_dir() / "report.json"
    report = json.loads(path.read_text())
    model, prep, meta = load_student(shipped_student())
    report["shipped_test"] = score_student(model, prep, meta, test)
    report["shipped_validation"] = score_student(model, prep, meta, validation)
    report["rescored"] = {
        "machine": describe(),
        "command": "sample-datasets/scripts/ship_student.py --rescore",
        "note": "shipped_test and shipped_validation scored by the current predictor; candidates: as at the choice",
    }
    write_json(path, report)
    v, t = report["shipped_validation"], report["shipped_test"]
    print(f"shipped {report['chosen']}: validation Dice {100 * v['dice']:.1f}, test Dice {100 * t['dice']:.1f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=REPO / "sample-datasets" / "demo" / "student")
    parser.add_argument("--runs", nargs="+", type=Path, default=None, help="trained runs to choose from")
    parser.add_argument("--threads", type=int, default=2, help="torch threads while scoring")
    parser.add_argument("--rescore", action="store_true", help="only score the shipped checkpoint again")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    validation = generate_cases(VALIDATION_SEED, 0, VALIDATION_CASES, PhantomSettings())
    test = generate_cases(TEST_SEED_OFFSET, 0, TEST_CASES, PhantomSettings())
    if args.rescore:
        return rescore(validation, test)
    runs = {p.name: p for p in args.runs} if args.runs else train_candidates(args.work)
    candidates = {}
    for name, run in runs.items():
        model, prep, meta = load_student(run / "student.pt")
        log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        candidates[name] = {
            "run": str(run),
            "method": meta["provenance"]["config"]["method"],
            "iterations": meta["provenance"]["config"]["iterations"],
            "train_seconds": round(sum(r.get("seconds", 0.0) for r in log), 1),
            "validation": score_student(model, prep, meta, validation),
            "test": score_student(model, prep, meta, test),
        }
        v, t = candidates[name]["validation"], candidates[name]["test"]
        print(f"{name}: validation Dice {100 * v['dice']:.1f}, test Dice {100 * t['dice']:.1f}")
    chosen = max(candidates, key=lambda n: candidates[n]["validation"]["dice"])
    model, prep, meta = load_student(runs[chosen] / "student.pt")
    provenance = {**meta["provenance"], "shipped": {"chosen_on": f"validation seed {VALIDATION_SEED}", "fp16": True}}
    target = save_student(
        shipped_student(),
        model,
        meta["architecture"]["name"],
        meta["architecture"]["kwargs"],
        prep,
        provenance,
        half=True,
    )
    model, prep, meta = load_student(target)  # what users get: the fp16 weights in the fp32 network
    write_json(
        shipped_student_dir() / "report.json",
        {
            "machine": describe(),
            "command": " ".join(["sample-datasets/scripts/ship_student.py", *sys.argv[1:]]),
            "data": "demo datastore (make demo): synthetic seed 2026, 12 cases, 5 labelled; the PET is synthetic",
            "config": str(CONFIG.relative_to(REPO)),
            "validation": f"synthetic seed {VALIDATION_SEED}, cases 0..{VALIDATION_CASES - 1} (the choice)",
            "test": f"synthetic seed {TEST_SEED_OFFSET}, cases 0..{TEST_CASES - 1} (choose nothing)",
            "chosen": chosen,
            "shipped_test": score_student(model, prep, meta, test),
            "shipped_bytes": target.stat().st_size,
            "candidates": candidates,
        },
    )
    print(f"shipped {chosen} ({target.stat().st_size / 1e6:.1f} MB) to {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
