"""Fault and load checks of the MuDuo Label server, written to a results file for the README.

    .venv/bin/python sample-datasets/scripts/server_faults.py [--kills 10] [--load-seconds 60] \
        [--out sample-datasets/benchmarks/server_faults.json]

On a scratch copy of a small synthetic datastore (8 mm phantoms, synthetic PET) with a freshly trained
student, a real server on 127.0.0.1: (1) a MuDuo training run is SIGKILLed ``--kills`` times at random
points (the first right when its process appears, the others 0.5-30 s later: start-up, data loading, the
prompt network, MuDuo iterations), each time checking that GET /train/ reports the failure with
its reason, that the served student is unchanged and still serves, and that no run folder is marked
finished; (2) 8 MONAILabelClient threads mix inference, next sample, clicks and label saves for
``--load-seconds`` while a training runs (latency per request kind, 4xx/5xx, lost label versions,
server memory). Same harness as the test suite (tests/lib/harness.py); loopback only, bounded.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=12, help="length of each run (a few, to reach its end)")
    parser.add_argument("--load-seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "sample-datasets" / "benchmarks" / "server_faults.json")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    import numpy as np
    from monailabel.client import MONAILabelClient

    from mudo_app.bench.machine import describe
    from mudo_app.io.volume import load_volume
    from tests.lib.harness import kill_training_at, run_load, small_datastore, start_server, stop_server

    work = Path(tempfile.mkdtemp(prefix="muduo-faults-"))
    store, student = small_datastore(work)
    rng = np.random.default_rng(args.seed)
    delays = [0.0, *rng.uniform(0.5, 30.0, size=max(args.kills - 1, 0)).round(2).tolist()]
    kills = []
    proc, url, log = start_server(store, student, work)
    try:
        client = MONAILabelClient(url, tmpdir=str(work), client_id="faults")
        for delay in delays:
            out = kill_training_at(proc, url, store, delay, client, iterations=args.iterations)
            served, _ = client.infer("muduo_student", "syn000", {"result_extension": ".nii.gz"})
            row = {
                "kill_after_s": delay,
                "status": out["status"]["status"],
                "reason": out["status"].get("reason"),
                "served_student_unchanged": out["checksum_kept"],
                "serves_after": load_volume(served).shape == load_volume(store / "syn000.nii.gz").shape,
                "run_marked_finished": out["finished"],
                "last_line_before_kill": (list(out["status"].get("details") or [""]) or [""])[-1][-160:],
            }
            print(json.dumps(row), flush=True)
            kills.append(row)
        load = run_load(url, store, proc.pid, clients=8, seconds=args.load_seconds, seed=args.seed)
        print(json.dumps(load, indent=2), flush=True)
    finally:
        stop_server(proc, log)
    result = {
        "machine": describe(),
        "command": (
            f"server_faults.py --kills {args.kills} --iterations {args.iterations} "
            f"--load-seconds {args.load_seconds:g} --seed {args.seed}"
        ),
        "kills": kills,
        # killed before its end: ERROR, the old student serving, no finished marker; killed after the
        # publish: DONE, the new student serving, the marker written. Anything else is a failure.
        "kills_consistent": sum(
            k["serves_after"]
            and (
                (k["status"] == "ERROR" and k["served_student_unchanged"] and not k["run_marked_finished"])
                or (k["status"] == "DONE" and not k["served_student_unchanged"] and k["run_marked_finished"])
            )
            for k in kills
        ),
        "load": load,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
