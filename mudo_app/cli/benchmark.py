"""``muduo benchmark [--quick] [--out DIR]``: the 5-label ablation table on synthetic data."""

from __future__ import annotations

import argparse
from pathlib import Path

from mudo_app.errors import InputError


def register(sub) -> None:
    p = sub.add_parser(
        "benchmark",
        help="MuDuo vs baselines and ablations on the synthetic benchmark",
        description="Train every method in one harness on 5 labelled synthetic cases (+ unlabelled), "
        "score on held-out cases; writes benchmark.json, benchmark.md and a plot.",
    )
    p.add_argument("--quick", action="store_true", help="two rows, one seed: at most 10 minutes on 2 CPU cores")
    p.add_argument(
        "--preset",
        choices=("quick", "full", "standard"),
        default=None,
        help="quick (= --quick), full (every ablation row, the old budget) or standard (the six rows that "
        "tell methods apart, lesion columns and truth diagnostics; README 'Benchmarks'); default full",
    )
    p.add_argument("--out", type=Path, default=Path("benchmark"), help="output folder (runs are reused on re-run)")
    p.add_argument("--methods", nargs="+", default=(), help="only these rows (names as in benchmark.json)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mudo_app.bench.benchmark import preset_by_name, run_benchmark

    if args.threads < 1:
        raise InputError(f"--threads must be at least 1, got {args.threads}")
    try:
        if args.quick and args.preset not in (None, "quick"):
            raise ValueError(f"--quick and --preset {args.preset} contradict each other")
        preset = preset_by_name(args.preset or ("quick" if args.quick else "full"), args.methods)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    result = run_benchmark(preset, args.out, threads=args.threads)
    for name, m in result["methods"].items():
        print(f"{name:24s} Dice {100 * m['dice_mean']:5.1f} ± {100 * m['dice_std']:4.1f}  HD95 {m['hd95_mean']:.1f} mm")
    print(f"wrote {args.out / 'benchmark.json'}, {args.out / 'benchmark.md'} ({result['minutes']} min)")
    return 0
