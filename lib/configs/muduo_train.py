"""The ``POST /train/muduo`` request body mapped onto :class:`mudo_app.train.config.TrainConfig`.

Accepted keys: ``max_iterations`` (run length), MONAI Label's ``max_epochs`` (one epoch =
``mudo_app.train.config.ITERATIONS_PER_EPOCH`` iterations), ``train_batch_size`` (labelled patches per iteration),
``pretrained`` (warm start from the served student, default true), ``seed``, ``method``, and the MuDuo
switches ``filter``, ``teachers``, ``k_points``, ``lr``. Keys MONAI Label itself adds are ignored;
anything else is refused with the list of accepted keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mudo_app.errors import InputError
from mudo_app.train.config import ITERATIONS_PER_EPOCH, TrainConfig, config_from_dict

OWN_KEYS = {
    "max_iterations",
    "max_epochs",
    "train_batch_size",
    "pretrained",
    "seed",
    "method",
    "filter",
    "teachers",
    "k_points",
    "lr",
}
# added by MONAI Label's train endpoint / task runner or sent by the 3D Slicer plugin; not used here
PLATFORM_KEYS = {
    "model",
    "bundle_path",
    "name",
    "device",
    "client_id",
    "tracking",
    "tracking_uri",
    "tracking_experiment_name",
    "multi_gpu",
    "gpus",
    "val_split",
    "val_batch_size",
    "dataset",
    "dataloader",
    "early_stop_patience",
    "local_rank",
    "run_id",
    "enqueue",
}


def train_config(
    request: dict[str, Any],
    studies: str,
    default_iterations: int,
    out: Path,
    init_from: Path | None = None,
    ct_teacher: Path | None = None,
    pet_teacher: Path | None = None,
    max_iterations: int = 100_000,
    threads: int | None = None,
    preprocessed: Path | None = None,
) -> TrainConfig:
    """A checked TrainConfig for one server training run (InputError names a bad key or value);
    ``max_iterations``: the longest run a request may ask for (``--conf max_train_iterations``);
    ``threads``: the run's torch threads (``--conf train_threads``: it shares the cores with inference);
    ``preprocessed``: the preprocessed cases' folder, shared by the server's runs (a case changed by a
    new label is preprocessed again, the others are reused)."""
    unknown = sorted(set(request) - OWN_KEYS - PLATFORM_KEYS)
    if unknown:
        raise InputError(f"unknown training parameter(s) {unknown}; accepted: {sorted(OWN_KEYS)}")
    iterations = default_iterations
    if request.get("max_epochs") is not None:
        iterations = _positive_int(request, "max_epochs") * ITERATIONS_PER_EPOCH
    if request.get("max_iterations") is not None:
        iterations = _positive_int(request, "max_iterations")
    if iterations > max_iterations:
        raise InputError(
            f"training parameter 'max_iterations': {iterations} exceeds this server's limit {max_iterations}"
        )
    pretrained = _flag(request, "pretrained", default=True)
    values = {
        "datastore": str(studies),
        "out": str(out),
        "iterations": iterations,
        "init_from": str(init_from) if (pretrained and init_from and Path(init_from).is_file()) else None,
        "ct_teacher": str(ct_teacher) if ct_teacher else None,
        "pet_teacher": str(pet_teacher) if pet_teacher else None,
        "threads": threads,
        "preprocessed": str(preprocessed) if preprocessed else None,
    }
    if request.get("train_batch_size") is not None:
        values["batch_labelled"] = _positive_int(request, "train_batch_size")
    if request.get("seed") is not None:
        values["seed"] = _positive_int(request, "seed", minimum=0)
    if request.get("k_points") is not None:
        values["k_points"] = _positive_int(request, "k_points")
    if request.get("lr") is not None:
        values["lr"] = _number(request, "lr")
    for key in ("method", "filter", "teachers"):
        if request.get(key) is not None:
            values[key] = request[key]
    return config_from_dict(values)


def _positive_int(request: dict[str, Any], key: str, minimum: int = 1) -> int:
    """An integer (or a string of one: a UI may send text) of at least ``minimum``."""
    value = request[key]
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().lstrip("-").isdigit():
        raise InputError(f"training parameter {key!r} must be an integer, got {value!r}")
    value = int(value)
    if value < minimum:
        raise InputError(f"training parameter {key!r} must be at least {minimum}, got {value}")
    return value


def _flag(request: dict[str, Any], key: str, default: bool) -> bool:
    """A yes/no value: a JSON boolean, or the text a UI may send (true/false, 1/0, yes/no)."""
    value = request.get(key, default)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes"):
        return True
    if text in ("0", "false", "no"):
        return False
    raise InputError(f"training parameter {key!r} must be true or false, got {value!r}")


def _number(request: dict[str, Any], key: str) -> float:
    try:
        return float(request[key])
    except (TypeError, ValueError) as exc:
        raise InputError(f"training parameter {key!r} must be a number, got {request[key]!r}") from exc
