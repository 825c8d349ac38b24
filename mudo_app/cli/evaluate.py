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
    p.add_argument("--plots", type=Path, default=None,
                   help="write per_class_dice.png and overlays of the first --overlays cases into this folder")
    p.add_argument("--overlays", type=int, default=3, help="how many cases get an overlay PNG (default 3)")
    p.add_argument("--images", type=Path, default=None,
                   help="CT file or folder (matched by case name) shown under the overlays")
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
    if args.plots:
        _plots(args, pairs, result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_name(f".tmp-{args.json.name}")
        tmp.write_text(json.dumps(_clean(result), indent=2))
        tmp.replace(args.json)
    return 0


def _plots(args: argparse.Namespace, pairs, result: dict) -> None:
    import numpy as np

    from mudo_app.evaluation.plots import overlay, per_class_chart
    from mudo_app.evaluation.report import match_pairs
    from mudo_app.io.volume import load_volume

    args.plots.mkdir(parents=True, exist_ok=True)
    per_class_chart(result, args.plots / "per_class_dice.png")
    images = {c: i for c, _, i in match_pairs(args.gt, args.images)} if args.images else {}
    for case, gt_path, pred_path in pairs[: max(args.overlays, 0)]:
        gt, pred = load_volume(gt_path).array, load_volume(pred_path).array
        if args.binary:
            gt, pred = (gt > 0).astype(np.uint8) * 13, (pred > 0).astype(np.uint8) * 13
        image = load_volume(images[case]).array if case in images else None
        overlay(case, np.rint(gt).astype(int), np.rint(pred).astype(int), args.plots / f"overlay_{case}.png", image)
    print(f"plots written to {args.plots}")
