"""A real MONAI Label server process on 127.0.0.1, driven by monailabel.client.MONAILabelClient with
the 3D Slicer plugin's call sequence (info -> next sample -> download -> infer -> submit label ->
train -> poll -> infer with the new model -> click refinement through each teacher)."""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from mudo_app.io.volume import load_volume, save_volume
from tests.lib.harness import (
    ENV,
    command,
    finished_training,
    free_port,
    kill_training_at,
    model_checksum,
    start_server,
    stop_server,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def server(studies, tmp_path):
    store, student = studies
    proc, url, log = start_server(store, student, tmp_path)
    yield url, store
    stop_server(proc, log)


def test_slicer_call_sequence_against_a_real_server(server, tmp_path):
    from monailabel.client import MONAILabelClient

    url, store = server
    client = MONAILabelClient(url, tmpdir=str(tmp_path), client_id="slicer-test")
    info = client.info()
    assert info["labels"]["lesion"] == 13 and info["teachers"]["seganypet_pet"]["stand_in"] is True

    sample = client.next_sample("teacher_disagreement", {})
    image_id = sample["id"]
    assert image_id in {"syn002", "syn003"}  # the unlabelled cases

    with urllib.request.urlopen(f"{url}/datastore/image?image={image_id}", timeout=30) as r:
        (tmp_path / "image.nii.gz").write_bytes(r.read())
    image = load_volume(tmp_path / "image.nii.gz")

    out, params = client.infer("muduo_student", image_id, {"result_extension": ".nrrd", "result_dtype": "uint8"})
    label = load_volume(out)
    assert out.endswith(".nrrd") and label.shape == image.shape and label.array.dtype == np.uint8
    np.testing.assert_allclose(label.affine, image.affine, atol=1e-4)
    assert set(np.unique(label.array)) <= set(range(14)) and params["label_names"]["liver"] == 1
    first_iterations = params["student"]["iterations"]

    truth = load_volume(store / "ground_truth" / f"{image_id}.nii.gz")  # the "clinician's correction"
    save_volume(truth, tmp_path / "corrected.nrrd", dtype=np.uint8)
    client.save_label(
        image_id, str(tmp_path / "corrected.nrrd"), tag="final", params={"label_info": [{"name": "liver", "idx": 1}]}
    )
    saved = load_volume(store / "labels" / "final" / f"{image_id}.nii.gz")
    assert np.array_equal(saved.array, truth.array)

    before = model_checksum(url)
    client.train_start("muduo", {"max_iterations": 2})
    status = finished_training(client, 240)
    assert status["status"] == "DONE", status
    assert model_checksum(url) != before

    _, params = client.infer("muduo_student", image_id, {"result_extension": ".nii.gz", "result_dtype": "uint8"})
    assert params["student"]["iterations"] == 2 and params["student"]["method"] == "muduo"
    assert first_iterations == 3

    organ = np.argwhere(truth.array == 1)
    click = organ[len(organ) // 2].tolist()
    for model in ("sam_med3d_ct", "seganypet_pet"):
        out, params = client.infer(
            model,
            image_id,
            {
                "foreground": [click],
                "background": [],
                "label": "liver",
                "result_extension": ".nrrd",
                "result_dtype": "uint8",
            },
        )
        mask = load_volume(out)
        assert mask.shape == image.shape and set(np.unique(mask.array)) <= {0, 1}
        assert mask.array.sum() > 0 and params["label_names"] == {"liver": 1}
        _, again = client.infer(model, image_id, {"foreground": [click], "background": []})
        assert again["embedding_reused"] is True


def test_stopped_or_failed_training_keeps_the_previous_student_serving(server, tmp_path):
    from monailabel.client import MONAILabelClient

    url, store = server
    client = MONAILabelClient(url, tmpdir=str(tmp_path), client_id="slicer-test")
    before = model_checksum(url)
    client.train_start("muduo", {"max_iterations": 5000})  # stopped by DELETE /train/
    status = client.train_status()
    for _ in range(60):
        if status.get("status") == "RUNNING":
            break
        time.sleep(0.5)
        status = client.train_status()
    assert client.train_stop()["status"] == "STOPPED"
    assert client.train_status()["status"] == "STOPPED" and model_checksum(url) == before
    for path in (store / "labels" / "final").glob("*.nii.gz"):
        path.unlink()  # no labelled case left: the run must fail with that reason
    client.train_start("muduo", {"max_iterations": 2})
    status = finished_training(client, 120)
    assert status["status"] == "ERROR"
    assert any("no labelled case" in line for line in status["details"]), status["details"]
    assert status["reason"].startswith("MuDuo training refused:") and "no labelled case" in status["reason"]
    assert model_checksum(url) == before
    out, params = client.infer("muduo_student", "syn000", {"result_extension": ".nii.gz"})
    assert load_volume(out).shape == load_volume(store / "syn000.nii.gz").shape


def test_a_server_reachable_from_other_machines_refuses_to_start_without_auth(studies, tmp_path):
    store, student = studies
    cmd = command(store, student, tmp_path, free_port(), host="0.0.0.0")
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", ""), **ENV}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=120)
    assert out.returncode != 0
    assert "without authentication: give --conf auth_users FILE" in out.stdout + out.stderr


def _add_user(users, name, password, *roles):
    cmd = [sys.executable, "-m", "lib.security", "add-user", str(users), name, "--roles", *roles]
    subprocess.run(cmd, input=password + "\n", text=True, check=True, cwd=str(REPO), capture_output=True)


def test_authentication_with_the_monai_label_client_and_roles(studies, tmp_path):
    """The stock client logs in (POST /auth/token) and sends its bearer token; without one every route but
    the login ones answers 401; a reader may not save labels (403); the history names who saved."""
    from monailabel.client import MONAILabelClient
    from monailabel.client.client import MONAILabelClientException

    store, student = studies
    users = tmp_path / "users.json"
    _add_user(users, "alice", "correct horse", "annotator")
    _add_user(users, "rob", "reader password", "user")
    proc, url, log = start_server(store, student, tmp_path, conf=(("auth_users", users),))
    try:
        for path in ("/info/", "/datastore/image?image=syn000", "/model/info/muduo_student"):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(f"{url}{path}", timeout=10)
            assert err.value.code == 401 and b"POST /auth/token" in err.value.read()
        client = MONAILabelClient(url, tmpdir=str(tmp_path), client_id="slicer-test")
        assert client.auth_enabled()
        with pytest.raises(MONAILabelClientException):
            client.auth_token("alice", "wrong password")
        client.update_auth(client.auth_token("alice", "correct horse"))
        assert client.auth_valid_token() and client.info()["labels"]["lesion"] == 13
        truth = load_volume(store / "ground_truth" / "syn002.nii.gz")
        save_volume(truth, tmp_path / "corrected.nrrd", dtype=np.uint8)
        client.save_label("syn002", str(tmp_path / "corrected.nrrd"), tag="final", params={})
        (record,) = (store / "label_history" / "syn002").glob("*.json")
        assert json.loads(record.read_text())["user"] == "alice"
        reader = MONAILabelClient(url, tmpdir=str(tmp_path), client_id="reader")
        reader.update_auth(reader.auth_token("rob", "reader password"))
        assert reader.info()["labels"]["liver"] == 1
        with pytest.raises(MONAILabelClientException) as err:
            reader.save_label("syn003", str(tmp_path / "corrected.nrrd"), tag="final", params={})
        assert "Status: 403" in str(err.value) and "lacks the role" in str(err.value)
        assert not (store / "labels" / "final" / "syn003.nii.gz").exists()
    finally:
        stop_server(proc, log)


@pytest.mark.slow
def test_a_training_killed_at_random_points_leaves_the_served_student_serving(studies, tmp_path):
    """Three kill points in CI (sample-datasets/scripts/kill_training.py runs more and writes the README's)."""
    from monailabel.client import MONAILabelClient

    store, student = studies
    proc, url, log = start_server(store, student, tmp_path)
    try:
        client = MONAILabelClient(url, tmpdir=str(tmp_path), client_id="kill-test")
        rng = np.random.default_rng(0)
        for delay in (0.0, *rng.uniform(0.5, 6.0, size=2)):
            out = kill_training_at(proc, url, tmp_path / "studies", float(delay), client)
            assert out["status"]["status"] == "ERROR", out
            assert "killed" in out["status"]["reason"] or "failed" in out["status"]["reason"], out["status"]
            assert out["checksum_kept"]
            assert not any((run / "FINISHED.json").exists() for run in out["new_runs"])
            result, params = client.infer("muduo_student", "syn000", {"result_extension": ".nii.gz"})
            assert load_volume(result).shape == load_volume(store / "syn000.nii.gz").shape
    finally:
        stop_server(proc, log)


@pytest.mark.slow
def test_load_of_eight_clients_while_a_training_runs(studies, tmp_path):
    """8 clients mixing inference, next sample, clicks and label saves for 60 s while a MuDuo training
    runs: no 5xx, /info/ within 1 s throughout, no label version lost; latencies and memory reported."""
    from tests.lib.harness import run_load

    store, student = studies
    proc, url, log = start_server(store, student, tmp_path)
    try:
        seconds = float(os.environ.get("MUDUO_LOAD_SECONDS", "60"))
        report = run_load(url, store, proc.pid, clients=8, seconds=seconds)
    finally:
        stop_server(proc, log)
    (tmp_path / "load.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    assert report["training_status_during_load"] == "RUNNING", report
    requests = {name: k for name, k in report["kinds"].items() if name != "info"}
    assert all(k["requests"] > 0 and k["5xx"] == 0 and k["4xx"] == 0 for k in requests.values()), report
    assert {"infer", "next_sample", "click", "save_label", "info"} <= set(report["kinds"]), report
    assert report["kinds"]["info"]["max_s"] < 1.0, report
    assert report["label_saves"] > 0 and report["label_versions_lost"] == 0, report


@pytest.mark.slow
def test_a_server_killed_during_label_saves_restarts_on_a_consistent_datastore(studies, tmp_path):
    """kill -9 while a client saves labels as fast as it can; the restarted server serves every case, the
    final label is a complete version that is also in the history, and no temporary file is left."""
    import threading

    import psutil
    from monailabel.client import MONAILabelClient
    from monailabel.client.client import MONAILabelClientException

    store, student = studies
    proc, url, log = start_server(store, student, tmp_path)
    truth = load_volume(store / "ground_truth" / "syn000.nii.gz")
    stop = threading.Event()

    def saver():
        client = MONAILabelClient(url, tmpdir=str(tmp_path), client_id="saver")
        for n in range(10_000):
            if stop.is_set():
                return
            label = truth.array.copy()
            label.flat[n] = 13
            save_volume(type(truth)(label, truth.affine), tmp_path / f"v{n}.nii.gz", dtype=np.uint8)
            try:
                client.save_label("syn000", str(tmp_path / f"v{n}.nii.gz"), tag="final", params={})
            except (MONAILabelClientException, OSError):
                return  # the server is gone

    thread = threading.Thread(target=saver, daemon=True)
    thread.start()
    time.sleep(float(np.random.default_rng(1).uniform(1.0, 3.0)))
    for p in [*psutil.Process(proc.pid).children(recursive=True), psutil.Process(proc.pid)]:
        p.kill()
    proc.wait(timeout=20)
    stop.set()
    thread.join(timeout=30)
    log.close()
    from mudo_app.io.datastore import PetCtDatastore

    history = PetCtDatastore(store).label_history("syn000")  # complete versions (no writer's temporary)
    assert len(history) >= 2  # saves happened before the kill
    proc, url, log = start_server(store, student, tmp_path)
    try:
        assert not [p for p in store.rglob(".tmp-*")]
        final = load_volume(store / "labels" / "final" / "syn000.nii.gz")
        assert any(np.array_equal(final.array, load_volume(h).array) for h in history[-2:])
        for h in history:
            load_volume(h)  # every version complete
        client = MONAILabelClient(url, tmpdir=str(tmp_path), client_id="after")
        assert client.info()["labels"]["lesion"] == 13
        out, _ = client.infer("muduo_student", "syn000", {"result_extension": ".nii.gz"})
        assert load_volume(out).shape == truth.shape
    finally:
        stop_server(proc, log)
