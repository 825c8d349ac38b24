"""Peak memory of MuDuo training as the datastore grows: 6 vs 24 synthetic whole-body cases at 3 mm.

Makes the two datastores (5 labelled cases each, the rest unlabelled; synthetic PET), then runs
``muduo train`` (MuDuo, stand-in teachers, CPU, 2 threads) on each in its own process with nothing else
running, and records the process's peak resident memory (``wait4``) and its seconds per iteration.
``--baseline DIR`` (a checkout of an older commit) runs that commit's trainer on the same data too.

    .venv/bin/python sample-datasets/scripts/training_memory.py --out sample-datasets/benchmarks/training_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from mudo_app.bench.machine import checkout_commit, describe, measured_run
from mudo_app.io.atomic import write_json

SIZES = (6, 24)
LABELLED = 5


def _train(store: Path, out: Path, iterations: int, cwd: Path | None = None, env: dict | None = None) -> dict:
    config = {
        "datastore": str(store),
        "out": str(out),
        "method": "muduo",
        "patch": [64, 64, 64],
        "iterations": iterations,
        "prompt_net_iterations": 20,
        "checkpoint_every": iterations,
        "threads": 2,
        "device": "cpu",
    }
    path = out.with_suffix(".json")
    path.write_text(json.dumps(config))
    cmd = [sys.executable, "-m", "mudo_app.cli", "train", "--config", str(path), "--no-progress"]
    run = measured_run(cmd, env, cwd)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return {
        "peak_rss_gib": run["peak_rss_gib"],
        "seconds_total": round(run["seconds"], 1),
        "last_record": {k: log[-1][k] for k in ("loss", "cache_bytes", "cache_entries") if k in log[-1]},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--baseline", type=Path, default=None, help="a checkout of an older commit, measured too")
    parser.add_argument("--out", type=Path, default=None, help="results (JSON)")
    args = parser.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="train-memory-")).resolve()
    rows = []
    for n in SIZES:
        store = work / f"store{n}"
        if not (store / ".complete").is_file():
            spacing = ["--spacing", "3", "3", "3"]
            make = ["sample-data", "--out", str(store), "--cases", str(n), "--labelled", str(LABELLED), "--quiet"]
            subprocess.run([sys.executable, "-m", "mudo_app.cli", *make, "--seed", "2026", *spacing], check=True)
            (store / ".complete").write_text("")
        row = {"cases": n, "labelled": LABELLED, "this commit": _train(store, work / f"run{n}", args.iterations)}
        if args.baseline:
            env = {**os.environ, "PYTHONPATH": str(args.baseline.resolve())}
            base = _train(store, work / f"base{n}", args.iterations, cwd=args.baseline.resolve(), env=env)
            row["baseline"] = base
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {
        "machine": describe(),
        "data": "synthetic whole-body phantoms at 3 mm (muduo sample-data --spacing 3 3 3 --seed 2026), synthetic PET",
        "config": f"muduo, stand-in teachers, 64^3 patches, {args.iterations} iterations, 2 threads, CPU",
        "runs": rows,
        "rss_ratio_24_vs_6": round(rows[1]["this commit"]["peak_rss_gib"] / rows[0]["this commit"]["peak_rss_gib"], 3),
    }
    if args.baseline:
        result["baseline_commit"] = checkout_commit(args.baseline)
        result["baseline_rss_ratio_24_vs_6"] = round(
            rows[1]["baseline"]["peak_rss_gib"] / rows[0]["baseline"]["peak_rss_gib"], 3
        )
    print(json.dumps(result, indent=2))
    if args.out:
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
