"""``muduo evaluate``: Dice, HD95, ASD, RAVD per class and the autoPET lesion metrics."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="score predictions against ground truth (per class and autoPET lesion metrics)",
                       description="GT and PRED are two NIfTI files, or two folders whose files are matched by case name.")
    p.add_argument("--gt", required=True, type=Path)
    p.add_argument("--pred", required=True, type=Path)
    p.add_argument("--binary", action="store_true", help="treat every non-zero voxel as lesion (autoPET masks)")
    p.add_argument("--json", type=Path, default=None, help="write the full result here")
    p.set_defaults(run=run)


def _clean(obj):
    """NaN -> None so the JSON is standard."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


def run(args: argparse.Namespace) -> int:
    from mudo_app.evaluation.report import evaluate_case, markdown, match_pairs, summarise

    pairs = match_pairs(args.gt, args.pred)
    cases = [evaluate_case(c, g, p, args.binary) for c, g, p in pairs]  # all checked before anything is written
    result = {"cases": cases, "mean": summarise(cases)}
    print(markdown(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_name(f".tmp-{args.json.name}")
        tmp.write_text(json.dumps(_clean(result), indent=2))
        tmp.replace(args.json)
    return 0
