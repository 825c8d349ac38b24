"""MuDuo's prompt network: a PET-only (1-channel) student trained supervised on the labelled cases,
then frozen. It only places point prompts for the PET teacher (MUDUO_METHOD.md, "Networks")."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist

from mudo_app.models.checkpoint import load_student, save_student
from mudo_app.models.student import build_student
from mudo_app.train.config import TrainConfig
from mudo_app.train.supervised import SupervisedSettings, fit_supervised

FILE = "prompt_net.pt"


def load_or_train_prompt_net(
    labelled: list,
    config: TrainConfig,
    out: Path,
    shard,
    progress: bool = True,
    reuse: bool = False,
    device: torch.device = torch.device("cpu"),
) -> torch.nn.Module:
    """The frozen prompt network of this run, on ``device``: read from ``out/prompt_net.pt`` when
    resuming (``reuse``), else trained on rank 0 (PET channel of the labelled cases,
    ``prompt_net_steps``) and broadcast to the other ranks."""
    path = Path(out) / FILE
    kwargs = {"in_channels": 1}
    if reuse and path.is_file():
        net, _, _ = load_student(path, device)
    else:
        net = build_student(config.student, **kwargs).to(device)
        if shard.rank == 0:
            settings = SupervisedSettings(
                student=config.student,
                iterations=max(config.prompt_net_steps, 1),
                patch=tuple(config.patch),
                seed=config.seed,
                lr=2e-3,
            )
            fit_supervised(net, labelled, settings, progress, desc="prompt network (PET only)", channels=slice(1, 2))
            save_student(
                path,
                net,
                config.student,
                kwargs,
                provenance={
                    "role": "MuDuo prompt network",
                    "inputs": "PET channel only",
                    "iterations": settings.iterations,
                    "seed": config.seed,
                    "labelled": [c.case_id for c in labelled],
                },
            )
        if shard.world > 1:
            state = [{k: v.cpu() for k, v in net.state_dict().items()}]
            dist.broadcast_object_list(state, src=0)
            net.load_state_dict(state[0])
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net
