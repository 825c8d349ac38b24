"""GPU check: the demo's MuDuo run trained on CUDA, its speed and memory, and whole-body inference.

Builds the demo datastore (`make demo`'s: 12 synthetic PET/CT cases, seed 2026, 5 labelled; the PET
is synthetic), trains the demo config (`sample-datasets/configs/demo_student.json`) with
``device: cuda``, times the iterations after a warm-up (stop, then resume: the resumed part re-fills
the teachers' embedding cache, so its time includes that), scores the student on the 7 unlabelled
cases' ground truth, and times whole-body (2 x 400 x 400 x 326) inference on the GPU.

    python sample-datasets/scripts/gpu_check.py --out gpu_check.json [--work DIR] [--score-only CKPT] [--iterations N]

``--score-only CKPT`` skips training and scores a student on the same cases (to compare the CPU-trained
demo student with the GPU-trained one, on a machine where ``make demo`` ran).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
WARM_UP = 50


def demo_datastore(work: Path) -> Path:
    from mudo_app.cli import main

    root = REPO / "sample-datasets" / "demo" / "datastore"
    if root.is_dir():
        return root
    root = work / "datastore"
    if not root.is_dir():
        assert main(["sample-data", "--out", str(root), "--cases", "12", "--labelled", "5", "--seed", "2026"]) == 0
    return root


def score(student: Path, datastore: Path, device: torch.device) -> dict:
    """Mean Dice (%, 13 classes, absent classes count 0) on the unlabelled cases' ground truth."""
    from mudo_app.evaluation.metrics import mean_dice
    from mudo_app.io.datastore import PetCtDatastore
    from mudo_app.io.volume import load_volume
    from mudo_app.models.checkpoint import load_student, training_patch
    from mudo_app.predict import predict_arrays

    store = PetCtDatastore(datastore)
    model, prep, meta = load_student(student, device)
    dice = []
    for cid in store.unlabelled_ids():
        case = store.load_case(cid)
        truth = load_volume(store.ground_truth_path(cid)).array
        pred = predict_arrays(model, prep, case.ct.array, case.pet.array, roi=training_patch(meta), precision="fp32")
        dice.append(mean_dice(truth, pred))
    return {"cases": len(dice), "mean_dice_pct": round(100 * float(np.mean(dice)), 1)}


def train(datastore: Path, work: Path, device: torch.device, iterations: int = 0) -> dict:
    from mudo_app.train.config import load_config
    from mudo_app.train.trainer import Trainer

    config = load_config(
        REPO / "sample-datasets" / "configs" / "demo_student.json",
        {"datastore": str(datastore), "out": str(work / "student"), "device": device.type},
    )
    if iterations:
        config = config.replace(iterations=iterations)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    Trainer(config, progress=True).run(stop_after=WARM_UP)  # prompt network, first embeddings, kernels
    warm = time.perf_counter() - started
    started = time.perf_counter()
    path = Trainer(config, progress=True).run(resume=True)
    rest = time.perf_counter() - started
    n = config.iterations - WARM_UP
    out = {
        "iterations": config.iterations,
        "warm_up_iterations": WARM_UP,
        "warm_up_seconds": round(warm, 1),
        "seconds_per_iteration_after_warm_up": round(rest / n, 4),
        "student": str(path),
    }
    if device.type == "cuda":
        out["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def whole_body(device: torch.device) -> list:
    from mudo_app.models.student import build_student
    from mudo_app.predict import predict_arrays
    from mudo_app.transforms.intensity import StudentInput

    net = build_student("unet_lite").eval().to(device)
    rng = np.random.default_rng(0)
    shape = (400, 400, 326)
    ct = rng.normal(0, 300, shape).astype(np.float32)
    pet = rng.gamma(1.0, 1.0, shape).astype(np.float32)
    rows = []
    for precision in ("fp32", "bf16"):
        predict_arrays(
            net, StudentInput(), ct[:96, :96, :96], pet[:96, :96, :96], roi=(64, 64, 64), precision=precision
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        predict_arrays(net, StudentInput(), ct, pet, roi=(64, 64, 64), overlap=0.25, precision=precision)
        rows.append({"shape": [2, *shape], "precision": precision, "seconds": round(time.perf_counter() - started, 2)})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="results (JSON)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--score-only", type=Path, default=None, help="only score this student checkpoint")
    parser.add_argument("--iterations", type=int, default=0, help="override the demo config's iterations (a smoke run)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    result = {
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "device": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor(),
            "cpu_threads": torch.get_num_threads(),
        },
        "data": "make demo's datastore (12 synthetic PET/CT cases, seed 2026, 5 labelled); PET is synthetic",
    }
    started = time.perf_counter()
    datastore = demo_datastore(work)
    result["datastore_seconds"] = round(time.perf_counter() - started, 1)
    if args.score_only:
        result["score"] = {"student": str(args.score_only), **score(args.score_only, datastore, device)}
    else:
        result["training"] = train(datastore, work, device, args.iterations)
        result["score"] = score(Path(result["training"]["student"]), datastore, device)
        result["whole_body_inference"] = whole_body(device)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
