"""A real MuDuo Label server process for tests and scripts: start, stop, poll training, kill training.

Every server binds 127.0.0.1 on a free port; nothing here talks to another address.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(store, student, tmp_path, port, host="127.0.0.1", conf=()):
    cmd = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(REPO / "apps" / "muduo")]
    cmd += ["--studies", str(store), "--host", host, "--port", str(port)]
    for key, value in (("student", student), ("model_dir", tmp_path / "model"), ("train_iterations", 2), *conf):
        cmd += ["--conf", key, str(value)]
    return cmd


ENV = {
    "MONAI_LABEL_TRACKING_ENABLED": "false",
    "MONAI_LABEL_DATASTORE_AUTO_RELOAD": "false",
    "OMP_NUM_THREADS": "2",
}


def start_server(store, student, tmp_path, conf=()):
    """A real server process on 127.0.0.1 (the caller stops it): (process, url, log file)."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", ""), **ENV}
    log = open(tmp_path / "server.log", "w")
    cmd = command(store, student, tmp_path, port, conf=conf)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(tmp_path))
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/auth/", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
        if proc.poll() is not None:
            break
    else:
        proc.kill()
        raise RuntimeError("server did not start:\n" + (tmp_path / "server.log").read_text()[-3000:])
    if proc.poll() is not None:
        raise RuntimeError("server exited:\n" + (tmp_path / "server.log").read_text()[-3000:])
    return proc, url, log


def stop_server(proc, log) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def finished_training(client, timeout_s: float) -> dict:
    """Poll GET /train/ as the Slicer plugin does until the run is DONE, ERROR or STOPPED."""
    deadline = time.time() + timeout_s
    status = client.train_status()
    while status.get("status") not in ("DONE", "ERROR", "STOPPED") and time.time() < deadline:
        time.sleep(1)
        status = client.train_status()
    return status


def model_checksum(url: str) -> str:
    with urllib.request.urlopen(f"{url}/model/info/muduo_student", timeout=10) as r:
        return json.loads(r.read())["checksum"]


def training_process(server_pid: int, timeout_s: float = 60):
    """The server's training subprocess (MONAI Label runs ``monailabel.interfaces.utils.app -m train``)."""
    import psutil

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        for child in psutil.Process(server_pid).children(recursive=True):
            try:
                cmd = child.cmdline()
            except psutil.Error:
                continue
            if "monailabel.interfaces.utils.app" in cmd and "train" in cmd:
                return child
        time.sleep(0.2)
    raise AssertionError("no training subprocess appeared")


def kill_training_at(proc, url, store, delay_s: float, client, iterations: int = 2000) -> dict:
    """Start a run, SIGKILL its process ``delay_s`` after it appears, and return what the server says."""
    import psutil

    before = model_checksum(url)
    runs_dir = store.parent / "model" / "runs"
    runs_before = set(runs_dir.glob("*"))  # an absent folder globs to nothing
    client.train_start("muduo", {"max_iterations": iterations})
    child = training_process(proc.pid)
    time.sleep(delay_s)
    try:
        for p in [*child.children(recursive=True), child]:
            p.kill()
    except psutil.NoSuchProcess:
        pass  # the run ended before the kill: it must then have finished and published
    status = finished_training(client, 60)
    runs = set(runs_dir.glob("*")) - runs_before
    finished = any((run / "FINISHED.json").exists() for run in runs)
    return {
        "status": status,
        "checksum_kept": model_checksum(url) == before,
        "new_runs": sorted(runs),
        "finished": finished,
    }


def _percentile(values: list[float], q: float) -> float | None:
    import numpy as np

    return round(float(np.percentile(values, q, method="nearest")), 3) if values else None


def _status_of(exc: Exception) -> int:
    """The HTTP status a MONAILabelClientException reports (in its message)."""
    import re

    match = re.search(r"Status: (\d{3})", str(exc))
    return int(match.group(1)) if match else 599


def _rss_mb(pid: int) -> float:
    import psutil

    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return round(sum(p.memory_info().rss for p in procs) / 2**20, 1)


def run_load(
    url: str, store: Path, server_pid: int, clients: int = 8, seconds: float = 60.0, train: bool = True, seed: int = 0
) -> dict:
    """``clients`` threads, each a MONAILabelClient, mixing prompt-free inference, next sample, clicks and
    label saves for ``seconds`` (bounded in count and time; loopback only) while a training run goes on,
    and ``GET /info/`` twice a second from here.

    Returns per request kind the count, 5xx and 4xx counts and p50 / p95 latency (s); the label versions
    saved and how many of them are missing from ``label_history/``; the server's memory (RSS of it and
    its children, MB) at start and end.
    """
    import threading

    import numpy as np
    from monailabel.client import MONAILabelClient
    from monailabel.client.client import MONAILabelClientException

    from mudo_app.io.volume import load_volume, save_volume

    store = Path(store)
    cases = sorted(p.name[: -len(".nii.gz")] for p in store.glob("*.nii.gz"))
    truth = {c: load_volume(store / "ground_truth" / f"{c}.nii.gz") for c in cases}
    labelled = [c for c in cases if (store / "labels" / "final" / f"{c}.nii.gz").is_file()]  # re-saved only:
    # the unlabelled cases stay unlabelled, so the training run keeps its unlabelled set
    from mudo_app.io.datastore import PetCtDatastore

    versions = PetCtDatastore(store).label_history
    history0 = {c: len(versions(c)) for c in cases}
    work = store.parent / "load"
    rss_start = _rss_mb(server_pid)
    rows: dict[str, list[tuple[float, int]]] = {}
    saves: dict[str, int] = dict.fromkeys(cases, 0)
    lock = threading.Lock()
    if train:
        MONAILabelClient(url, tmpdir=str(work)).train_start("muduo", {"max_iterations": 100_000})
    deadline = time.time() + seconds

    def worker(k: int) -> None:
        rng = np.random.default_rng(seed + k)
        folder = work / f"client{k}"
        folder.mkdir(parents=True, exist_ok=True)
        client = MONAILabelClient(url, tmpdir=str(folder), client_id=f"load-{k}")
        for n in range(10_000):
            if time.time() >= deadline:
                break
            case = cases[int(rng.integers(len(cases)))]
            kind = ("infer", "next_sample", "click", "save_label")[int(rng.integers(4))]
            started, status = time.perf_counter(), 200
            try:
                if kind == "infer":
                    client.infer("muduo_student", case, {"result_extension": ".nii.gz", "result_dtype": "uint8"})
                elif kind == "next_sample":
                    client.next_sample("random", {})
                elif kind == "click":
                    organ = np.argwhere(truth[case].array == 1)
                    click = organ[int(rng.integers(len(organ)))].tolist()
                    client.infer("sam_med3d_ct", case, {"foreground": [click], "background": [], "label": "liver"})
                else:
                    case = labelled[int(rng.integers(len(labelled)))]
                    path = folder / f"label{n}.nii.gz"
                    save_volume(truth[case], path, dtype=np.uint8)
                    client.save_label(case, str(path), tag="final", params={"client": k})
                    with lock:
                        saves[case] += 1
            except MONAILabelClientException as exc:
                status = _status_of(exc)
            with lock:
                rows.setdefault(kind, []).append((time.perf_counter() - started, status))

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    info = []
    while time.time() < deadline:
        t0 = time.perf_counter()
        with urllib.request.urlopen(f"{url}/info/", timeout=30) as r:
            r.read()
        info.append(time.perf_counter() - t0)
        time.sleep(0.5)
    for t in threads:
        t.join(timeout=120)
    training = MONAILabelClient(url, tmpdir=str(work)).train_status() if train else {}
    if train:
        MONAILabelClient(url, tmpdir=str(work)).train_stop()
    history = {c: len(versions(c)) - history0[c] for c in cases}
    kinds = {
        kind: {
            "requests": len(r),
            "5xx": sum(1 for _, s in r if s >= 500),
            "4xx": sum(1 for _, s in r if 400 <= s < 500),
            "p50_s": _percentile([t for t, _ in r], 50),
            "p95_s": _percentile([t for t, _ in r], 95),
        }
        for kind, r in sorted(rows.items())
    }
    kinds["info"] = {"requests": len(info), "p95_s": _percentile(info, 95), "max_s": round(max(info, default=0), 3)}
    return {
        "clients": clients,
        "seconds": seconds,
        "training_status_during_load": training.get("status"),
        "training_reason": training.get("reason"),
        "kinds": kinds,
        "label_saves": sum(saves.values()),
        "label_versions_lost": sum(max(0, saves[c] - history[c]) for c in cases),
        "server_rss_mb": {"start": rss_start, "end": _rss_mb(server_pid)},
    }


@contextlib.contextmanager
def in_process_app(store: Path, conf: dict, sessions: Path):
    """The app in this process (FastAPI TestClient), configured as MONAI Label's own tests do it:
    settings patched and mirrored in the environment, the app cache cleared before and after."""
    import pytest
    from fastapi.testclient import TestClient
    from monailabel.config import settings
    from monailabel.interfaces.utils.app import clear_cache

    values = {
        "MONAI_LABEL_APP_DIR": str(REPO / "apps" / "muduo"),
        "MONAI_LABEL_STUDIES": str(store),
        "MONAI_LABEL_APP_CONF": conf,
        "MONAI_LABEL_DATASTORE_AUTO_RELOAD": False,
        "MONAI_LABEL_SESSION_PATH": str(sessions),
        "MONAI_LABEL_TRACKING_ENABLED": False,
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in values.items():
            mp.setattr(settings, key, value)
            mp.setenv(key, json.dumps(value) if isinstance(value, dict) else str(value))
        mp.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
        clear_cache()
        from monailabel.app import app

        try:
            with TestClient(app) as client:
                yield client
        finally:
            clear_cache()


def small_datastore(root: Path) -> tuple[Path, Path]:
    """(datastore, student): 4 synthetic 8 mm cases (2 labelled, synthetic PET) and a 3-iteration student."""
    from mudo_app.cli import main as muduo
    from mudo_app.train.config import config_from_dict
    from mudo_app.train.trainer import Trainer

    store = Path(root) / "store"
    args = ["sample-data", "--out", str(store), "--cases", "4", "--labelled", "2", "--seed", "5"]
    if muduo([*args, "--spacing", "8", "8", "8"]) != 0:
        raise RuntimeError("sample-data failed")
    values = {"datastore": str(store), "out": str(Path(root) / "run"), "method": "supervised", "patch": [32] * 3}
    student = Trainer(config_from_dict({**values, "iterations": 3, "threads": 1}), progress=False).run()
    return store, student
