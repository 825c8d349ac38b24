from pathlib import Path

import pytest

from lib.configs.muduo_train import train_config
from mudo_app.errors import InputError
from mudo_app.train.config import ITERATIONS_PER_EPOCH


def _config(request, init_from=None):
    return train_config(request, "/data/store", 300, Path("/runs/x"), init_from)


def test_request_maps_onto_the_training_config(tmp_path):
    student = tmp_path / "s.pt"
    student.write_bytes(b"x")
    assert _config({}).iterations == 300 and _config({}).init_from is None
    assert _config({"max_epochs": 2}).iterations == 2 * ITERATIONS_PER_EPOCH
    assert _config({"max_epochs": 2, "max_iterations": 7}).iterations == 7  # the explicit length wins
    c = _config(
        {
            "seed": "4",
            "k_points": 1,
            "lr": "0.01",
            "train_batch_size": 4,
            "method": "supervised",
            "model": "muduo",
            "gpus": "all",
            "client_id": "slicer",
        },
        student,
    )
    assert (c.seed, c.k_points, c.lr, c.batch_labelled, c.method) == (4, 1, 0.01, 4, "supervised")
    assert c.init_from == str(student) and _config({"pretrained": "false"}, student).init_from is None


@pytest.mark.parametrize(
    "request_body,message",
    [
        ({"learning_speed": 3}, "unknown training parameter"),
        ({"max_iterations": 0}, "'max_iterations' must be at least 1"),
        ({"max_iterations": "ten"}, "'max_iterations' must be an integer"),
        ({"max_iterations": True}, "'max_iterations' must be an integer"),
        ({"seed": -1}, "'seed' must be at least 0"),
        ({"lr": "fast"}, "'lr' must be a number"),
        ({"method": "magic"}, "'method'"),
    ],
)
def test_bad_requests_name_the_key(request_body, message):
    with pytest.raises(InputError, match=message):
        _config(request_body)


def test_the_failure_reason_of_a_run_is_found_in_its_last_lines():
    from lib.trainers.muduo import failure_reason

    assert failure_reason(["x", "[..] (lib.trainers.muduo:80) - MuDuo training refused: no labelled case"]) == (
        "MuDuo training refused: no labelled case"
    )
    assert failure_reason(["Traceback", "mudo_app.errors.InputError: no labelled case in /d"]) == (
        "MuDuo training refused: no labelled case in /d"
    )
    assert (
        failure_reason(["  File x", "RuntimeError: CUDA out of memory"]) == "MuDuo training failed: CUDA out of memory"
    )
    assert "killed" in failure_reason(["iteration 12/2000"])


def test_a_run_killed_after_publishing_is_reported_done():
    from lib.trainers.muduo import explain_end

    published = {"status": "ERROR", "details": ["... - MuDuo training done: published /m/muduo_student.pt"]}
    assert explain_end(published)["status"] == "DONE" and "after it had published" in explain_end(published)["note"]
    killed = {"status": "ERROR", "details": ["muduo: 40%"]}
    assert explain_end(killed)["status"] == "ERROR" and "killed" in explain_end(killed)["reason"]
    assert explain_end({"status": "RUNNING"}) == {"status": "RUNNING", "details": []}
