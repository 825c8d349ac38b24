"""Where a MuDuo iteration spends its time: cProfile of the demo config's iterations after a resume.

A short run (``--warm-up`` iterations, then stopped) is resumed and profiled for ``--iterations``
more; the resumed trainer starts with an empty embedding cache, so the profile includes teacher crops
being resampled and encoded as the cache fills. Needs `make demo`'s datastore.

    .venv/bin/python sample-datasets/scripts/profile_iteration.py [--device cpu|cuda] [--top 35]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--warm-up", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=40, help="profiled iterations")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top", type=int, default=35, help="rows of the profile to print")
    args = parser.parse_args()

    from mudo_app.train.config import load_config
    from mudo_app.train.trainer import Trainer

    out = Path(tempfile.mkdtemp(prefix="profile-")) / "run"
    config = load_config(
        REPO / "sample-datasets" / "configs" / "demo_student.json",
        {
            "out": str(out),
            "iterations": args.warm_up + args.iterations,
            "prompt_net_iterations": 20,
            "threads": args.threads,
            "device": args.device,
        },
    )
    Trainer(config, progress=False).run(stop_after=args.warm_up)
    trainer = Trainer(config, progress=False)
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.enable()
    trainer.run(resume=True)
    profile.disable()
    print(
        f"{(time.perf_counter() - started) / args.iterations:.3f} s / iteration over {args.iterations} iterations "
        f"({args.device}, {args.threads} threads)"
    )
    pstats.Stats(profile).sort_stats("cumulative").print_stats(args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
