"""``muduo train --config FILE``: MuDuo or a baseline, seeded and resumable (also under ``torchrun``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _override(text: str):
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--set takes KEY=VALUE (VALUE in JSON), got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value  # a bare string


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a student with MuDuo or a baseline (typed config, resumable)",
        description="Train a student from a datastore. Fields: see mudo_app/train/config.py "
        "or the README. Run under `torchrun --nproc_per_node N` for DDP "
        "(one process per GPU with nccl; gloo on CPUs).",
    )
    p.add_argument("--config", required=True, type=Path, help="JSON or TOML config file")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        type=_override,
        default=[],
        metavar="KEY=VALUE",
        help="override one config field (VALUE parsed as JSON); repeatable",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in the config's 'out' folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mudo_app.runtime.devices import resolve_device
    from mudo_app.runtime.distributed import shard_from_env, shutdown
    from mudo_app.train.config import load_config
    from mudo_app.train.trainer import Trainer

    config = load_config(args.config, dict(args.overrides))
    shard = shard_from_env(resolve_device(config.device))  # nccl on GPUs, gloo on CPUs
    try:
        path = Trainer(config, progress=not args.no_progress, shard=shard).run(resume=args.resume)
    finally:
        shutdown()
    if shard.rank == 0:
        print(f"wrote {path}")
    return 0
