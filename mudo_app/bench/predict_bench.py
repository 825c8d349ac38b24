"""`muduo predict` end to end (start, imports, read, preprocess, infer, write, exit) on whole-body cases.

Makes ``--cases`` whole-body 2 x 400 x 400 x 326 cases (random: CT ~ N(0, 300) HU, PET ~ Gamma(1, 1)
SUV, float32 ``.nii.gz``, seeded; the cost of a sliding window does not depend on the content, and
random voxels are the slow case for gzip), then times, each in its own process and with nothing else
running: the one-case command on every case, and the folder command once over all of them. Wall
time and peak resident memory come from ``wait4`` on each process. The labels of both ways must be
byte-identical.

    python -m mudo_app.bench.predict_bench [--model CKPT] [--cases 8] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from mudo_app.io.atomic import write_json

WHOLE_BODY = (400, 400, 326)


def _make_cases(folder: Path, n: int) -> None:
    import numpy as np

    from mudo_app.io.volume import Volume, save_volume

    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    for c in range(n):
        rng = np.random.default_rng(c)
        save_volume(Volume(rng.normal(0, 300, WHOLE_BODY).astype(np.float32), affine), folder / f"wb{c}_0000.nii.gz")
        save_volume(Volume(rng.gamma(1.0, 1.0, WHOLE_BODY).astype(np.float32), affine), folder / f"wb{c}_0001.nii.gz")


def _untrained(path: Path) -> None:
    import torch

    from mudo_app.models.checkpoint import save_student
    from mudo_app.models.student import build_student

    torch.manual_seed(0)
    note = {"note": "untrained, for timing", "config": {"patch": [64, 64, 64]}}
    save_student(path, build_student("unet_lite"), "unet_lite", provenance=note)


def _summary(one: list[dict], many: dict, cases: int) -> dict:
    """The one-case runs, their (upper) median and peak memory, the folder run and its speed-up."""
    return {
        "one_case": one,
        "one_case_median_seconds": statistics.median_high(r["seconds"] for r in one),
        "one_case_peak_rss_gib": max(r["peak_rss_gib"] for r in one),
        "folder": {"cases": cases, **many},
        "folder_speed_up": round(sum(r["seconds"] for r in one) / many["seconds"], 2),
    }


def _same_labels(a: Path, b: Path, cases: int) -> bool:
    """Whether two output folders hold byte-identical label files of every case."""
    return all((a / f"wb{c}.nii.gz").read_bytes() == (b / f"wb{c}.nii.gz").read_bytes() for c in range(cases))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="student checkpoint (default: an untrained unet_lite)")
    parser.add_argument("--cases", type=int, default=8, help="whole-body cases to make and predict")
    parser.add_argument("--out", type=Path, default=None, help="write the results here (JSON)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="a checkout of an older commit: its one-case command is timed on every case too, right after "
        "ours, and its folder command after ours",
    )
    args = parser.parse_args(argv)
    from mudo_app.bench.machine import checkout_commit, describe, measured_run

    work = Path(args.work or tempfile.mkdtemp(prefix="predict-bench-")).resolve()
    src, single, folder = work / "imagesTs", work / "single", work / "folder"
    for d in (src, single, folder):
        d.mkdir(parents=True, exist_ok=True)
    try:
        model = (args.model or work / "untrained.pt").resolve()
        if args.model is None:
            _untrained(model)
        if len(list(src.glob("*_0001.nii.gz"))) != args.cases:
            _make_cases(src, args.cases)
            os.sync()  # the new files' write-back would otherwise compete with the first timed runs
            time.sleep(5)
        muduo = [sys.executable, "-m", "mudo_app.cli", "predict", "--model", str(model), "--no-progress"]
        env = {**os.environ, "PYTHONPATH": str(args.baseline.resolve())} if args.baseline else None
        old = [a for a in muduo if a != "--no-progress"]  # older commands may not know it
        one, baseline = [], []
        for c in range(args.cases):
            ct, pet = src / f"wb{c}_0000.nii.gz", src / f"wb{c}_0001.nii.gz"
            out = single / f"wb{c}.nii.gz"
            one.append(measured_run([*muduo, "--ct", str(ct), "--pet", str(pet), "--out", str(out)]))
            print("one case", one[-1], flush=True)
            if args.baseline:  # right after, so that both see the same drift of the machine's speed
                cmd = [*old, "--ct", str(ct), "--pet", str(pet), "--out", str(work / "baseline.nii.gz")]
                baseline.append(measured_run(cmd, env, cwd=args.baseline))  # its own folder first on sys.path
                print("baseline one case", baseline[-1], flush=True)
        many = measured_run([*muduo, "--input", str(src), "--output", str(folder)])
        print("folder", many, flush=True)
        if args.baseline:
            old_folder = work / "baseline_folder"
            shutil.rmtree(old_folder, ignore_errors=True)
            cmd = [*old, "--input", str(src), "--output", str(old_folder)]
            baseline_many = measured_run(cmd, env, cwd=args.baseline)
            print("baseline folder", baseline_many, flush=True)
        identical = _same_labels(single, folder, args.cases)
        result = {
            "machine": describe(),
            "model": str(args.model) if args.model else "untrained unet_lite (64^3 windows)",
            "case": {"shape": [2, *WHOLE_BODY], "content": "random (seeded), float32 .nii.gz"},
            "command": "muduo predict --ct CT --pet PET --out LABEL (precision auto, overlap 0.25)",
            **_summary(one, many, args.cases),
            "labels_identical": identical,
        }
        if args.baseline:
            result["baseline"] = {
                "commit": checkout_commit(args.baseline),
                **_summary(baseline, baseline_many, args.cases),
                "labels_identical_to_ours": _same_labels(folder, old_folder, args.cases),
            }
        print(json.dumps(result, indent=2))
        if args.out:
            write_json(args.out, result)
        return 0 if identical else 1
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
