"""Latency of the MONAI Label server as a client sees it (HTTP round trip, MONAILabelClient).

Starts the app on a scratch datastore (4 demo cases at 4 mm + 1 synthetic whole-body case at 2 mm,
synthetic PET) with the shipped student, then measures: prompt-free inference of a demo case and of the
whole-body case, click refinement (first click, and later clicks on the cached embedding) through
each teacher, and the demo inference again while a MuDuo training run is going on.

    .venv/bin/python sample-datasets/scripts/bench_server.py [--out sample-datasets/benchmarks/server_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "sample-datasets" / "demo"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _timed(fn, repeats: int):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return times, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "sample-datasets" / "benchmarks" / "server_cpu.json")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from monailabel.client import MONAILabelClient

    from mudo_app.bench.machine import describe
    from mudo_app.resources import shipped_student

    student = shipped_student()
    if not (DEMO / "datastore").is_dir():
        raise SystemExit("run `make demo` first (the demo datastore is missing)")
    work = Path(tempfile.mkdtemp(prefix="muduo-bench-"))
    store = work / "store"
    for sub in ("pet", "labels/final", "ground_truth"):
        (store / sub).mkdir(parents=True)
    src = DEMO / "datastore"
    for cid in ("syn000", "syn001", "syn005", "syn006"):  # two labelled, two not
        shutil.copy(src / f"{cid}.nii.gz", store)
        shutil.copy(src / "pet" / f"{cid}.nii.gz", store / "pet")
        if (src / "labels" / "final" / f"{cid}.nii.gz").is_file():
            shutil.copy(src / "labels" / "final" / f"{cid}.nii.gz", store / "labels" / "final")
    wb = work / "wb"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "mudo_app.cli",
            "sample-data",
            "--out",
            str(wb),
            "--cases",
            "1",
            "--labelled",
            "0",
            "--seed",
            "77",
            "--spacing",
            "2",
            "2",
            "2",
        ],
        check=True,
        capture_output=True,
    )
    shutil.copy(wb / "syn000.nii.gz", store / "wholebody2mm.nii.gz")
    shutil.copy(wb / "pet" / "syn000.nii.gz", store / "pet" / "wholebody2mm.nii.gz")

    port = _port()
    env = {**os.environ, "PYTHONPATH": "", "MONAI_LABEL_TRACKING_ENABLED": "false"}
    log = open(work / "server.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "monailabel.main",
            "start_server",
            "--app",
            str(REPO / "apps" / "muduo"),
            "--studies",
            str(store),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--conf",
            "student",
            str(student),
            "--conf",
            "model_dir",
            str(work / "model"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=str(work),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/info/", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        client = MONAILabelClient(url, tmpdir=str(work), client_id="bench")
        params = {"result_extension": ".nii.gz", "result_dtype": "uint8"}
        result = {"machine": describe(), "student": str(student.relative_to(REPO)), "pet": "synthetic"}
        first, _ = _timed(lambda: client.infer("muduo_student", "syn005", params), 1)
        demo, _ = _timed(lambda: client.infer("muduo_student", "syn005", params), 3)
        wb_times, (_, wb_params) = _timed(lambda: client.infer("muduo_student", "wholebody2mm", params), 2)
        result["infer_demo_case_s"] = {
            "shape": [120, 80, 200],
            "first_call": round(first[0], 2),
            "median": round(statistics.median(demo), 2),
        }
        result["infer_whole_body_2mm_s"] = {
            "shape": [240, 160, 400],
            "median": round(statistics.median(wb_times), 2),
            "server_side": wb_params["latency"],
        }
        clicks = {}
        for model in ("sam_med3d_ct", "seganypet_pet"):
            click = {"foreground": [[60, 40, 120]], "background": []}
            t0, (_, p0) = _timed(lambda m=model, c=click: client.infer(m, "syn006", c), 1)
            again = {**click, "background": [[62, 40, 118]]}
            cached, (_, p1) = _timed(lambda m=model, c=again: client.infer(m, "syn006", c), 5)
            clicks[model] = {
                "first_click_s": round(t0[0], 3),
                "cached_click_median_s": round(statistics.median(cached), 3),
                "server_side_click_s": p1["latency"]["click"],
                "embedding_reused": p1["embedding_reused"],
            }
        result["click_refinement"] = clicks
        client.train_start("muduo", {"max_iterations": 200})
        time.sleep(8)  # past the subprocess start-up
        during, _ = _timed(lambda: client.infer("muduo_student", "syn005", params), 3)
        status = client.train_status()
        result["infer_demo_case_while_training_s"] = {
            "median": round(statistics.median(during), 2),
            "training_status": status.get("status"),
        }
        client.train_stop()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
