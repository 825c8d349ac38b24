"""Seconds per training iteration of the demo config: MuDuo vs supervised-only, measured in one run.

Trains the demo config (``sample-datasets/configs/demo_student.json``) for ``--iterations`` with
``method`` muduo and then supervised, each in its own process with nothing else running, and averages
the per-iteration seconds ``log.jsonl`` records over iterations 21 to the end (the first 20 hold the
start-up and most of the embedding cache's misses).

    .venv/bin/python sample-datasets/scripts/iteration_speed.py [--device cpu|cuda] --out FILE.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from mudo_app.bench.machine import describe
from mudo_app.io.atomic import write_json

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "sample-datasets" / "configs" / "demo_student.json"
DEMO_STORE = REPO / "sample-datasets" / "demo" / "datastore"


def _run(method: str, store: Path, out: Path, iterations: int, device: str, threads: int) -> dict:
    sets = {
        "datastore": str(store),
        "out": str(out),
        "method": method,
        "iterations": iterations,
        "checkpoint_every": iterations,
        "device": device,
        "threads": threads,
    }
    cmd = [sys.executable, "-m", "mudo_app.cli", "train", "--config", str(CONFIG), "--no-progress"]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={json.dumps(value)}"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steady = [r["seconds"] for r in log[20:]]
    return {
        "method": method,
        "iterations_timed": f"21-{len(log)}",
        "seconds_per_iteration": round(sum(steady) / len(steady), 4),
        "last_20_seconds": round(sum(steady[-20:]) / len(steady[-20:]), 4),
        "encoder_calls": {k: log[-1][k] for k in ("ct_encoder_calls", "pet_encoder_calls") if k in log[-1]},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datastore", type=Path, default=DEMO_STORE, help="default: the demo datastore (make demo)")
    parser.add_argument("--iterations", type=int, default=120)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="results (JSON)")
    args = parser.parse_args(argv)
    if not (args.datastore / "pet").is_dir():
        print(f"no datastore at {args.datastore}: run `make demo` (or pass --datastore)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="iteration-speed-") as work:
        runs = [
            _run(m, args.datastore, Path(work) / m, args.iterations, args.device, args.threads)
            for m in ("muduo", "supervised")
        ]
    muduo, supervised = runs
    result = {
        "machine": describe(args.device),
        "config": f"{CONFIG.relative_to(REPO)} (iterations {args.iterations}, device {args.device})",
        "runs": runs,
        "muduo_over_supervised": round(muduo["seconds_per_iteration"] / supervised["seconds_per_iteration"], 2),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
