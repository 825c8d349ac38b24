"""Measure the synthetic benchmark's headroom: supervised student on 5 labelled cases vs on all labels.

Usage (from the repository root, after `make setup`):
    .venv/bin/python sample-datasets/scripts/measure_headroom.py [--iterations 800] [--pool 20] [--test 6]

Both students get the same budget (iterations, batch, patch, seed); test cases are held out and never
used for model selection (the last iterate is evaluated). Prints a markdown table and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from mudo_app.bench.machine import describe
from mudo_app.evaluation.metrics import dice_per_class
from mudo_app.labels import ID_TO_NAME, LABEL_IDS
from mudo_app.predict import predict_arrays
from mudo_app.synth import generate_cases
from mudo_app.train.supervised import SupervisedSettings, train_supervised
from mudo_app.transforms.intensity import StudentInput


def evaluate(net, cases):
    per_class = {c: [] for c in LABEL_IDS}
    for case in cases:
        pred = predict_arrays(net, StudentInput(), case.ct.array, case.pet.array, roi=(64, 64, 64))
        for c, d in dice_per_class(case.label.array, pred, LABEL_IDS).items():
            if (case.label.array == c).any():  # score classes present in the truth
                per_class[c].append(d)
    means = {ID_TO_NAME[c]: float(np.mean(v)) for c, v in per_class.items() if v}
    return means, float(np.mean(list(means.values())))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=800)
    ap.add_argument("--pool", type=int, default=20, help="training cases (all labelled in the 'all' run)")
    ap.add_argument("--test", type=int, default=6, help="held-out test cases")
    ap.add_argument("--seed", type=int, default=100, help="data seed")
    ap.add_argument("--json", default=None, help="write results here")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch CPU threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pool = generate_cases(args.seed, 0, args.pool)
    test = generate_cases(args.seed, 1000, args.test)
    settings = SupervisedSettings(iterations=args.iterations)
    results = {}
    for name, cases in (("5 labelled", pool[:5]), (f"all {args.pool} labelled", pool)):
        t = time.time()
        net = train_supervised(cases, settings)
        per_class, mean = evaluate(net, test)
        results[name] = {"mean_dice": mean, "per_class": per_class, "train_s": round(time.time() - t, 1)}
    machine = describe()
    print(f"\nHeadroom on held-out synthetic cases ({machine}; {args.iterations} iterations each)\n")
    names = list(results)
    print("| class | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for cls in results[names[-1]]["per_class"]:
        print(
            f"| {cls} | "
            + " | ".join(f"{100 * results[n]['per_class'].get(cls, float('nan')):.1f}" for n in names)
            + " |"
        )
    print("| **mean** | " + " | ".join(f"**{100 * results[n]['mean_dice']:.1f}**" for n in names) + " |")
    print("| train time (s) | " + " | ".join(str(results[n]["train_s"]) for n in names) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "args": vars(args), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
