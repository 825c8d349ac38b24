"""Prompt-free inference cost: a whole-body 2 x 400 x 400 x 326 case and a demo case, fp32 and bf16.

Each measurement runs in a fresh subprocess so that its peak resident memory (``ru_maxrss``) is its
own. The whole-body volume is random (CT ~ N(0, 300) HU, PET ~ Gamma(1, 1) SUV): the cost of a
sliding window does not depend on the content.

    python -m mudo_app.bench.inference_bench [--model CKPT] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from mudo_app.io.atomic import atomic_write

WHOLE_BODY = (400, 400, 326)
DEMO = (120, 80, 200)


def _one(shape, model_path: str, precision: str, threads: int) -> dict:
    import numpy as np
    import torch

    from mudo_app.models.checkpoint import load_student, training_patch
    from mudo_app.models.student import build_student
    from mudo_app.predict import predict_arrays
    from mudo_app.runtime.devices import resolve_precision
    from mudo_app.transforms.intensity import StudentInput

    torch.set_num_threads(threads)
    if model_path:
        model, prep, meta = load_student(model_path)
        roi = training_patch(meta)
    else:
        model, prep, roi = build_student("unet_lite").eval(), StudentInput(), (64, 64, 64)
    rng = np.random.default_rng(0)
    ct = rng.normal(0, 300, shape).astype(np.float32)
    pet = rng.gamma(1.0, 1.0, shape).astype(np.float32)
    started = time.perf_counter()
    predict_arrays(model, prep, ct, pet, roi=roi, overlap=0.25, precision=precision)
    seconds = time.perf_counter() - started
    return {
        "shape": [2, *shape],
        "precision": resolve_precision(precision),
        "roi": list(roi),
        "overlap": 0.25,
        "seconds": round(seconds, 2),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }


def _bf16_agreement(model_path: str):
    """Voxel agreement and per-class Dice difference of bf16 vs fp32 label maps on the demo datastore's
    unlabelled cases (None when ``make demo`` has not run)."""
    import numpy as np

    from mudo_app.evaluation.metrics import mean_dice
    from mudo_app.io.datastore import PetCtDatastore
    from mudo_app.io.volume import load_volume
    from mudo_app.models.checkpoint import load_student, training_patch
    from mudo_app.predict import predict_arrays
    from mudo_app.resources import demo_datastore

    root = demo_datastore()
    if root is None or not root.is_dir():
        return None
    store = PetCtDatastore(root)
    model, prep, meta = load_student(model_path)
    agree, delta = [], []
    for cid in store.unlabelled_ids():
        case = store.load_case(cid)
        truth = load_volume(store.ground_truth_path(cid)).array
        a, b = (
            predict_arrays(model, prep, case.ct.array, case.pet.array, roi=training_patch(meta), precision=p)
            for p in ("fp32", "bf16")
        )
        agree.append(float((a == b).mean()))
        delta.append(mean_dice(truth, b) - mean_dice(truth, a))
    return {
        "cases": len(agree),
        "voxel_agreement_min": round(min(agree), 5),
        "mean_dice_change_bf16_minus_fp32": round(float(np.mean(delta)), 5),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="student checkpoint (default: an untrained unet_lite)")
    parser.add_argument("--out", type=Path, default=None, help="write the results here (JSON)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", nargs=3, metavar=("X", "PRECISION", "KIND"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        shape = WHOLE_BODY if args.child[2] == "whole_body" else DEMO
        print(json.dumps(_one(shape, args.model, args.child[1], args.threads)))
        return 0
    from mudo_app.bench.machine import describe

    rows = []
    for kind in ("whole_body", "demo"):
        for precision in ("fp32", "bf16"):
            cmd = [
                sys.executable,
                "-m",
                "mudo_app.bench.inference_bench",
                "--model",
                args.model,
                "--threads",
                str(args.threads),
                "--child",
                "x",
                precision,
                kind,
            ]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            rows.append({"case": kind, **json.loads(out)})
            print(rows[-1], flush=True)
    agreement = _bf16_agreement(args.model) if args.model else None
    result = {
        "machine": describe(),
        "model": args.model or "untrained unet_lite",
        "runs": rows,
        "bf16_vs_fp32_on_demo_cases": agreement,
        "note": "peak_rss_gib is the whole process (inputs, model, logits); content is random",
    }
    if args.out:
        with atomic_write(args.out) as tmp:
            tmp.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
