"""``muduo evaluate``: Dice, HD95, ASD, RAVD per class and the autoPET lesion metrics."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from mudo_app.io.atomic import atomic_write


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score predictions against ground truth (per class and autoPET lesion metrics)",
        description="GT and PRED are two NIfTI files, or two folders whose files are matched by case name.",
    )
    p.add_argument("--gt", required=True, type=Path)
    p.add_argument("--pred", required=True, type=Path)
    p.add_argument("--binary", action="store_true", help="treat every non-zero voxel as lesion (autoPET masks)")
    p.add_argument("--json", type=Path, default=None, help="write the full result here")
    p.add_argument(
        "--plots",
        type=Path,
        default=None,
        help="write per_class_dice.png and overlays of the first --overlays cases into this folder",
    )
    p.add_argument("--overlays", type=int, default=3, help="how many cases get an overlay PNG (default 3)")
    p.add_argument(
        "--images", type=Path, default=None, help="CT file or folder (matched by case name) shown under the overlays"
    )
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
    from mudo_app.evaluation.report import evaluate_labels, load_pair, markdown, match_pairs, summarise
    from mudo_app.io.volume import load_volume

    pairs = match_pairs(args.gt, args.pred)
    images = {c: i for c, _, i in match_pairs(args.gt, args.images)} if args.plots and args.images else {}
    cases, shown = [], []
    for i, (case, gt_path, pred_path) in enumerate(pairs):  # every case is checked before anything is written
        g, p, spacing = load_pair(case, gt_path, pred_path, args.binary)
        cases.append(evaluate_labels(case, g, p, spacing, args.binary))
        if args.plots and i < args.overlays:
            shown.append((case, g, p, load_volume(images[case]).array if case in images else None))
    result = {"cases": cases, "mean": summarise(cases)}
    print(markdown(result))
    if args.plots:
        from mudo_app.evaluation.plots import overlay, per_class_chart

        args.plots.mkdir(parents=True, exist_ok=True)
        per_class_chart(result, args.plots / "per_class_dice.png")
        for case, g, p, image in shown:
            overlay(case, g, p, args.plots / f"overlay_{case}.png", image)
        print(f"plots written to {args.plots}")
    if args.json:
        with atomic_write(args.json) as tmp:
            tmp.write_text(json.dumps(_clean(result), indent=2))
    return 0
