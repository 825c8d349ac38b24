"""End-to-end training runs on a coarse (8 mm) synthetic datastore: a few iterations each."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from mudo_app.cli import main
from mudo_app.errors import InputError
from mudo_app.models.checkpoint import load_student
from mudo_app.train.config import config_from_dict
from mudo_app.train.data import load_training_set
from mudo_app.train.patch_reader import PatchReader
from mudo_app.train.trainer import Trainer

GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
PATCH = [32, 32, 32]  # 256 mm at 8 mm: the stand-in teachers' box


@pytest.fixture(scope="module")
def datastore(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds") / "store"
    assert (
        main(
            [
                "sample-data",
                "--out",
                str(root),
                "--cases",
                "5",
                "--labelled",
                "2",
                "--seed",
                "3",
                "--spacing",
                "8",
                "8",
                "8",
            ]
        )
        == 0
    )
    return root


def _config(datastore, out, **kw):
    base = {
        "datastore": str(datastore),
        "out": str(out),
        "patch": PATCH,
        "iterations": 4,
        "prompt_net_iterations": 3,
        "checkpoint_every": 2,
        "threads": 1,
        "device": "cpu",
    }
    return config_from_dict({**base, **kw})


def _log(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_muduo_run_writes_a_loadable_student_and_caches_embeddings(datastore, tmp_path):
    out = tmp_path / "run"
    path = Trainer(_config(datastore, out, iterations=6), progress=False).run()
    model, prep, meta = load_student(path)
    prov = meta["provenance"]
    assert prov["method"] == "muduo" and prov["iterations"] == 6 and len(prov["data"]["labelled"]) == 2
    assert any("STAND-IN" in t for t in prov["teachers"])
    log = _log(out)
    assert [r["iteration"] for r in log] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(r["loss"]) for r in log)
    assert 0 < log[0]["kept"] <= 1 and log[0]["lambda"] < log[-1]["lambda"] <= 0.1
    # 2 unlabelled patches per iteration, each teacher: decoders run 13 classes per patch,
    # encoders at most once per patch position (positions repeat, so fewer calls than patches)
    assert log[-1]["ct_decoder_calls"] == 6 * 2 * 13
    assert log[-1]["ct_encoder_calls"] <= 12 and log[-1]["pet_encoder_calls"] <= 12
    assert (out / "prompt_net.pt").is_file() and (out / "config.json").is_file()


def test_truth_diagnostics_are_logged_and_change_nothing_of_the_training(datastore, tmp_path):
    plain = Trainer(_config(datastore, tmp_path / "plain"), progress=False)
    plain.run()
    Trainer(_config(datastore, tmp_path / "seen", truth_dice_every=2), progress=False).run()
    a, b = _log(tmp_path / "plain"), _log(tmp_path / "seen")
    np.testing.assert_array_equal([r["loss"] for r in a], [r["loss"] for r in b])  # the truth never reaches it
    reports = [(r["iteration"], r["truth_dice"]) for r in b if "truth_dice" in r]
    assert [i for i, _ in reports] == [2, 4]
    for _, rep in reports:
        assert rep["samples"] == 4  # 2 unlabelled patches x 2 iterations
        assert set(rep) == {"samples", "student", "student_kept", "ct_teacher", "pet_teacher", "pseudo_label"}
        assert rep["student"] and all(0 <= d <= 1 for d in rep["student"].values())
    assert not any("truth_dice" in r for r in a)


def test_truth_diagnostics_need_the_ground_truth(datastore, tmp_path):
    import shutil

    copy = tmp_path / "store"
    shutil.copytree(datastore, copy)
    (copy / "ground_truth" / "syn004.nii.gz").unlink()  # an unlabelled case (syn000 and syn001 are labelled)
    with pytest.raises(InputError, match="needs the ground truth of every unlabelled case.*syn004"):
        Trainer(_config(copy, tmp_path / "run", truth_dice_every=2), progress=False).run()


@pytest.mark.parametrize("method", ["supervised", "mean_teacher", "fully_supervised"])
def test_baselines_run_in_the_same_harness(datastore, tmp_path, method):
    path = Trainer(_config(datastore, tmp_path / method, method=method, iterations=2), progress=False).run()
    _, _, meta = load_student(path)
    n_lab = len(meta["provenance"]["data"]["labelled"])
    assert n_lab == (5 if method == "fully_supervised" else 2)
    log = _log(tmp_path / method)
    for r in log:  # the loss is the supervised term plus lambda times the consistency term
        assert r["loss"] == pytest.approx(r["supervised"] + r["lambda"] * r["consistency"], rel=1e-6)
    if method == "mean_teacher":  # noisy student vs EMA teacher: a real consistency term
        assert all(r["consistency"] > 0 and r["lambda"] > 0 for r in log), log
    else:  # supervised baselines: no consistency term at all
        assert all(r["consistency"] == 0.0 and r["loss"] == r["supervised"] for r in log), log


def test_lesion_paste_and_lesion_weight_change_what_the_student_learns_from(datastore, tmp_path):
    """``lesion_paste`` puts a labelled lesion into the patches (more lesion voxels, another loss);
    ``lesion_weight`` weights the lesion class in both terms of the loss; neither changes the draws."""
    runs = {}
    for name, extra in {"plain": {}, "paste": {"lesion_paste": 1.0}, "weight": {"lesion_weight": 3.0}}.items():
        cfg = _config(datastore, tmp_path / name, method="supervised", iterations=2, **extra)
        trainer = Trainer(cfg, progress=False)
        trainer.run()
        runs[name] = (trainer, _log(tmp_path / name))
    paste = runs["paste"][0]
    data = load_training_set(paste.config, unlabelled=None)
    assert any(c.lesion_counts for c in data.labelled), "the fixture's labelled cases should have lesions"
    draws = paste._draw(data)
    assert len(draws.pastes) == len(draws.labelled) and all(p is not None for p in draws.pastes)
    reader = PatchReader(data, PATCH)
    try:
        with_paste = reader.submit(*paste._local(draws)).result()
        without = reader.submit(draws.labelled, draws.unlabelled).result()
    finally:
        reader.close()
    assert sum((y == 13).sum() for y in with_paste.labels) > sum((y == 13).sum() for y in without.labels)
    weight = runs["weight"][0].loss_fn.dice.class_weight
    assert weight.tolist() == [1.0] * 13 + [3.0]
    assert runs["plain"][0].loss_fn.dice.class_weight is None
    plain = [r["loss"] for r in runs["plain"][1]]
    assert [r["loss"] for r in runs["paste"][1]] != plain and [r["loss"] for r in runs["weight"][1]] != plain


def test_resume_reproduces_an_uninterrupted_run(datastore, tmp_path):
    Trainer(_config(datastore, tmp_path / "full", iterations=4), progress=False).run()
    Trainer(_config(datastore, tmp_path / "part", iterations=4), progress=False).run(stop_after=2)  # interrupted
    assert len(_log(tmp_path / "part")) == 2
    with pytest.raises(InputError, match="already holds a run"):
        Trainer(_config(datastore, tmp_path / "part", iterations=4), progress=False).run()
    # iterations, threads and device may change on resume (the same run), nothing else
    Trainer(_config(datastore, tmp_path / "part", iterations=5, threads=2, device="auto"))._check_out(resume=True)
    Trainer(_config(datastore, tmp_path / "part", iterations=4), progress=False).run(resume=True)
    full, part = _log(tmp_path / "full"), _log(tmp_path / "part")
    assert [r["iteration"] for r in part] == [1, 2, 3, 4]
    np.testing.assert_allclose([r["loss"] for r in part], [r["loss"] for r in full], rtol=1e-6)
    a = torch.load(tmp_path / "full" / "student.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "part" / "student.pt", weights_only=True)["state_dict"]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    with pytest.raises(InputError, match="differs from this config"):
        Trainer(_config(datastore, tmp_path / "part", iterations=4, lr=0.1), progress=False).run(resume=True)


def test_bad_training_input_exits_2(datastore, tmp_path, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"datastore": str(datastore), "out": str(tmp_path / "o"), "patch": PATCH, "bogus": 1}))
    assert main(["train", "--config", str(cfg)]) == 2
    assert "unknown config key(s) ['bogus']" in capsys.readouterr().err
    empty = tmp_path / "empty"
    assert (
        main(["sample-data", "--out", str(empty), "--cases", "2", "--labelled", "0", "--spacing", "8", "8", "8"]) == 0
    )
    cfg.write_text(json.dumps({"datastore": str(empty), "out": str(tmp_path / "o"), "patch": PATCH}))
    assert main(["train", "--config", str(cfg)]) == 2
    assert "no labelled case" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    cfg.write_text(json.dumps({"datastore": str(datastore), "out": str(tmp_path / "o"), "patch": PATCH}))
    assert main(["train", "--config", str(cfg), "--set", "embedding_cache_mb=0.01"]) == 2  # 10 KiB
    assert "'embedding_cache_mb' of 10485 bytes cannot hold one teacher embedding" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # refused before anything is read or written


def _torchrun(cfg, nproc):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(port),
        "-m",
        "mudo_app.cli",
        "train",
        "--config",
        str(cfg),
        "--no-progress",
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_ddp_two_processes_match_single_process(datastore, tmp_path):
    """torchrun, 2 CPU processes (gloo): same losses as one process on the same global batch, and
    identical replicas (the trainer checks parameter checksums across ranks at the end)."""
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(_config(datastore, tmp_path / "ddp", iterations=3, device="cpu").to_dict()))
    res = _torchrun(cfg, 2)
    assert res.returncode == 0, res.stderr[-3000:]
    Trainer(_config(datastore, tmp_path / "single", iterations=3, device="cpu"), progress=False).run()
    ddp, single = _log(tmp_path / "ddp"), _log(tmp_path / "single")
    for key in ("loss", "supervised", "consistency"):
        np.testing.assert_allclose([r[key] for r in ddp], [r[key] for r in single], rtol=1e-4, atol=1e-6)
    assert json.loads((tmp_path / "ddp" / "config.json").read_text())["iterations"] == 3
    _, _, meta = load_student(tmp_path / "ddp" / "student.pt")
    assert meta["provenance"]["processes"] == 2 and meta["provenance"]["backend"] == "gloo"


@GPU
def test_gpu_training_follows_cpu_training(datastore, tmp_path):
    """The same seeded MuDuo run on the GPU (TF32 off) and on the CPU: same initial weights and draws,
    so the supervised losses agree closely; the checkpoint loads on the CPU and names the GPU."""
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        gpu = Trainer(_config(datastore, tmp_path / "gpu", iterations=3, device="cuda"), progress=False).run()
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    Trainer(_config(datastore, tmp_path / "cpu", iterations=3, device="cpu"), progress=False).run()
    g, c = _log(tmp_path / "gpu"), _log(tmp_path / "cpu")
    np.testing.assert_allclose([r["supervised"] for r in g], [r["supervised"] for r in c], rtol=1e-3)
    assert all(np.isfinite(r["consistency"]) for r in g) and g[-1]["ct_decoder_calls"] == 3 * 2 * 13
    model, _, meta = load_student(gpu)
    assert next(model.parameters()).device.type == "cpu"
    assert meta["provenance"]["device"] == torch.cuda.get_device_name(0)


@GPU
def test_torchrun_on_gpu_uses_nccl(datastore, tmp_path):
    """One process per GPU (as many as this machine has, at most 2), nccl; the replica check runs."""
    nproc = min(2, torch.cuda.device_count())
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(_config(datastore, tmp_path / "ddp", iterations=2, device="cuda").to_dict()))
    res = _torchrun(cfg, nproc)
    assert res.returncode == 0, res.stderr[-3000:]
    _, _, meta = load_student(tmp_path / "ddp" / "student.pt")
    assert meta["provenance"]["backend"] == "nccl" and meta["provenance"]["processes"] == nproc


def test_two_nodes_on_the_loopback_address_match_single_process(datastore, tmp_path):
    """The multi-node path: two torchrun launches (one per "node", one process each) meet through a
    c10d rendezvous on 127.0.0.1, as two machines would through the first one's address; the losses
    equal one process's on the same global batch."""
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(_config(datastore, tmp_path / "nodes", iterations=3, device="cpu").to_dict()))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    launches = [
        subprocess.Popen(
            [
                *(sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1"),
                *("--node_rank", str(node), "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}"),
                *("--rdzv-id", "muduo-test", "-m", "mudo_app.cli", "train", "--config", str(cfg), "--no-progress"),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for node in (0, 1)
    ]
    results = [p.communicate(timeout=300) for p in launches]
    assert all(p.returncode == 0 for p in launches), [err[-2000:] for _, err in results]
    Trainer(_config(datastore, tmp_path / "single", iterations=3, device="cpu"), progress=False).run()
    nodes, single = _log(tmp_path / "nodes"), _log(tmp_path / "single")
    for key in ("loss", "supervised", "consistency"):
        np.testing.assert_allclose([r[key] for r in nodes], [r[key] for r in single], rtol=1e-4, atol=1e-6)
    _, _, meta = load_student(tmp_path / "nodes" / "student.pt")
    assert meta["provenance"]["processes"] == 2 and meta["provenance"]["backend"] == "gloo"
