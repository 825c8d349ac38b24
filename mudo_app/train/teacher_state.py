"""The resumable training state of a stand-in teacher's pre-training
(:func:`mudo_app.train.teachers.pretrain_teacher`): written, checked against the recipe, restored."""

from __future__ import annotations

import os
from dataclasses import asdict, replace
from pathlib import Path

import torch

from mudo_app.errors import InputError
from mudo_app.io.atomic import atomic_write


def save_state(path: Path, stage: str, iteration: int, seconds: float, model, head, opt, sched, rng, settings) -> None:
    state = {
        "stage": stage,
        "iteration": iteration,
        "seconds": seconds,
        "settings": asdict(settings),
        "model": model.state_dict(),
        "optimiser": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "rng": rng.bit_generator.state,
        "torch_rng": torch.get_rng_state(),
        **({} if head is None else {"dense_head": head.state_dict()}),
    }
    with atomic_write(path) as tmp:
        torch.save(state, tmp)


def load_state(path: Path | None, settings, later_stage_fields: tuple[str, ...] = ()) -> dict | None:
    """The resumable state at ``path`` (None when there is none), checked to come from ``settings``; a
    state written before a stage or field existed reads as the clicks stage with that field's default.
    A state of the dense or clicks stage may differ from ``settings`` in ``later_stage_fields`` (the
    fields of a stage after those), so that a finished run can be extended by that stage."""
    if path is None or not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    state.setdefault("stage", "clicks")
    saved = type(settings)(**state["settings"])
    if state["stage"] in ("dense", "clicks"):
        saved = replace(saved, **{name: getattr(settings, name) for name in later_stage_fields})
    if saved != settings:
        raise InputError(
            f"{path} is the state of another teacher recipe ({state['settings']}); "
            "delete it or train with the same settings"
        )
    return state


def restore_state(state: dict, model, head, opt, sched, rng) -> tuple[int, float]:
    """Load ``state`` into the training objects; returns (its iteration, its seconds)."""
    model.load_state_dict(state["model"])
    if head is not None:
        head.load_state_dict(state["dense_head"])
    opt.load_state_dict(state["optimiser"])
    sched.load_state_dict(state["scheduler"])
    rng.bit_generator.state = state["rng"]
    torch.set_rng_state(state["torch_rng"])
    return int(state["iteration"]), float(state["seconds"])


def dense_stage_path(state_path: str | os.PathLike[str]) -> Path:
    """Where the pre-training keeps the state of its finished dense stage, beside the resumable state
    (``standin_ct.state.pt`` -> ``standin_ct.state.dense-stage.pt``), so that the encoder it made can be
    probed or trained on after the click stage has overwritten the state."""
    path = Path(state_path)
    return path.with_name(f"{path.stem}.dense-stage.pt")


def training_seconds(state_path: str | os.PathLike[str]) -> float:
    """The training seconds, summed over sessions, kept in a pre-training state file."""
    return float(torch.load(state_path, map_location="cpu", weights_only=False)["seconds"])
