"""Thread budgets: background training and inference share the cores instead of oversubscribing them."""

import os

import pytest
import torch

from lib.configs.muduo_train import train_config
from lib.configs.server import Resources, ServerConfig
from mudo_app.errors import InputError


def _cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def test_inference_takes_the_cores_a_running_training_leaves(tmp_path):
    conf = ServerConfig.from_conf(str(tmp_path), {})
    assert (conf.train_threads, conf.infer_threads) == (1, 0)
    assert conf.inference_threads(training=False) == _cores()
    assert conf.inference_threads(training=True) == max(1, _cores() - 1)
    fixed = ServerConfig.from_conf(str(tmp_path), {"infer_threads": "3", "train_threads": "2"})
    assert fixed.inference_threads(training=True) == fixed.inference_threads(training=False) == 3
    greedy = ServerConfig.from_conf(str(tmp_path), {"train_threads": "64"})
    assert greedy.inference_threads(training=True) == 1  # never none


def test_bad_thread_settings_are_refused(tmp_path):
    with pytest.raises(InputError, match="train_threads must be in"):
        ServerConfig.from_conf(str(tmp_path), {"train_threads": "0"})
    with pytest.raises(InputError, match="infer_threads must be an integer"):
        ServerConfig.from_conf(str(tmp_path), {"infer_threads": "two"})


def test_the_training_run_gets_train_threads(tmp_path):
    config = train_config({}, str(tmp_path), 10, tmp_path / "run", threads=1)
    assert config.threads == 1


def test_server_runs_share_one_preprocessed_folder(tmp_path):
    from lib.trainers.muduo import MuDuoTrainTask

    conf = ServerConfig.from_conf(str(tmp_path), {"model_dir": str(tmp_path / "model"), "train_threads": "2"})
    task = MuDuoTrainTask(Resources(conf), str(tmp_path / "store"))
    config = task.check({"max_iterations": 5})
    assert config.preprocessed == str(conf.model_dir / "preprocessed") and config.threads == 2


def test_use_inference_threads_sets_torch(tmp_path):
    before = torch.get_num_threads()
    try:
        resources = Resources(ServerConfig.from_conf(str(tmp_path), {"infer_threads": "1"}))
        assert resources.use_inference_threads() == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
