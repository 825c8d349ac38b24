"""Device choice for training and prediction: CPU everywhere, CUDA when PyTorch sees a GPU.

The GPU runs themselves are in tests/train/test_trainer.py and tests/test_predict.py, marked
``skipif(not torch.cuda.is_available())`` so a CPU-only run shows them as skipped."""

import json

import pytest
import torch

from mudo_app.cli import main
from mudo_app.errors import InputError
from mudo_app.runtime.devices import resolve_device
from mudo_app.runtime.distributed import launched_by_torchrun, shard_from_env

NO_GPU = not torch.cuda.is_available()


def test_cpu_and_auto():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cpu" if NO_GPU else "cuda")
    with pytest.raises(InputError, match="--device must be one of"):
        resolve_device("tpu", "--device")


def test_single_process_without_torchrun_env(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    assert not launched_by_torchrun()
    shard = shard_from_env(torch.device("cpu"))
    assert (shard.rank, shard.world) == (0, 1)


@pytest.mark.skipif(not NO_GPU, reason="checks the error on a machine without a GPU")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(InputError, match="'cuda' but PyTorch sees no CUDA GPU"):
        resolve_device("cuda")
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"datastore": str(tmp_path), "out": str(tmp_path / "o"), "device": "cuda"}))
    assert main(["train", "--config", str(cfg)]) == 2
    assert "config field 'device' is 'cuda'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    out = tmp_path / "label.nii.gz"
    assert (
        main(
            ["predict", "--ct", str(cfg), "--pet", str(cfg), "--out", str(out), "--model", str(cfg), "--device", "cuda"]
        )
        == 2
    )
    assert "--device is 'cuda'" in capsys.readouterr().err
    assert not out.exists()
