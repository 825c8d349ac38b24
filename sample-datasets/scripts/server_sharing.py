"""Background training and interactive inference sharing the cores of one server, measured.

Starts the server (same harness as the tests) on a copy of the demo datastore (`make demo`) with a
briefly trained student, and for each thread setting measures: prompt-free inference of a demo case
alone; a MuDuo training run of ``--iterations`` alone (its seconds per iteration from ``log.jsonl``);
and the same run again while a client asks for inferences back to back (their latencies, and the
run's seconds per iteration). Settings: the server's thread budgets (``train_threads`` 1, inference
the cores left), and every task taking every core (``train_threads`` 2, ``infer_threads`` 2, what the
server did before the budgets).

    .venv/bin/python sample-datasets/scripts/server_sharing.py --out sample-datasets/benchmarks/server_sharing.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

SETTINGS = {
    "thread budgets (defaults: train_threads 1, inference the cores left)": (),
    "every task on every core (train_threads 2, infer_threads 2)": (("train_threads", 2), ("infer_threads", 2)),
}


def _run_log(model_dir: Path, before: set[Path]) -> list[dict]:
    runs = [p for p in (model_dir / "runs").iterdir() if p.is_dir() and p not in before and p.name != "check"]
    log = max(runs, key=lambda p: p.stat().st_mtime) / "log.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()]


def _per_iteration(log: list[dict]) -> float:
    steady = [r["seconds"] for r in log[5:]]
    return round(sum(steady) / len(steady), 3)


def _measure(client, model_dir: Path, iterations: int) -> dict:
    """Inference alone, a training run alone, then a run with inferences back to back."""
    from tests.lib.harness import finished_training

    def infer() -> float:
        t = time.perf_counter()
        client.infer("muduo_student", "syn005", {})
        return time.perf_counter() - t

    infer()  # the student loaded
    alone = [infer() for _ in range(5)]
    runs = model_dir / "runs"
    before = set(runs.iterdir()) if runs.is_dir() else set()
    client.train_start("muduo", {"max_iterations": iterations})
    finished_training(client, 1800)
    train_alone = _run_log(model_dir, before)
    before = set(runs.iterdir())
    client.train_start("muduo", {"max_iterations": iterations})
    during: list[float] = []
    done = threading.Event()

    def ask() -> None:
        while not done.is_set():
            during.append(infer())

    asker = threading.Thread(target=ask)
    asker.start()
    status = finished_training(client, 1800)
    done.set()
    asker.join()
    train_shared = _run_log(model_dir, before)
    return {
        "infer_alone_median_s": round(statistics.median(alone), 3),
        "train_alone_s_per_iteration": _per_iteration(train_alone),
        "infer_during_training_median_s": round(statistics.median(during), 3),
        "infer_during_training_p90_s": round(sorted(during)[int(0.9 * (len(during) - 1))], 3),
        "inferences_during_training": len(during),
        "train_during_inference_s_per_iteration": _per_iteration(train_shared),
        "training_status": status.get("status"),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    from monailabel.client import MONAILabelClient

    from mudo_app.bench.machine import describe
    from mudo_app.io.atomic import write_json
    from mudo_app.train.config import config_from_dict
    from mudo_app.train.trainer import Trainer
    from tests.lib.harness import start_server, stop_server

    demo = REPO / "sample-datasets" / "demo" / "datastore"
    if not (demo / "pet").is_dir():
        print(f"no demo datastore at {demo}: run `make demo` first", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="server-sharing-"))
    store = work / "store"
    shutil.copytree(demo, store)
    values = {"datastore": str(store), "out": str(work / "student"), "method": "supervised", "iterations": 20}
    student = Trainer(config_from_dict({**values, "threads": 2}), progress=False).run()
    results = {}
    try:
        for name, conf in SETTINGS.items():
            folder = work / f"setting{len(results)}"
            folder.mkdir()
            proc, url, log = start_server(store, student, folder, conf=conf)
            try:
                results[name] = _measure(MONAILabelClient(url), folder / "model", args.iterations)
                print(name, json.dumps(results[name]), flush=True)
            finally:
                stop_server(proc, log)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "machine": describe(),
        "setup": f"demo datastore (12 cases, 4 mm), MuDuo runs of {args.iterations} iterations, "
        "inference of one demo case (120 x 80 x 200) by a unet_lite student (20 supervised iterations)",
        "settings": results,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
