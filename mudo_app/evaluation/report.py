"""Evaluate predicted label maps against ground truth: files or folders matched by case name.

JSON layout: ``{"cases": [{"case", "dice", "fp_volume_ml", "fn_volume_ml", "per_class": {name: {...}}}],
"mean": {...}}``; the lesion metrics (``dice``, ``fp_volume_ml``, ``fn_volume_ml``) are the autoPET
ones on label 13, or on every non-zero voxel with ``binary``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mudo_app.errors import InputError
from mudo_app.evaluation.autopet import autopet_metrics
from mudo_app.evaluation.metrics import class_metrics
from mudo_app.io.volume import NIFTI_SUFFIXES, case_name, load_volume, same_grid
from mudo_app.labels import ID_TO_NAME, LABEL_IDS, LESION, check_label_values


def _nifti_files(folder: Path) -> dict[str, Path]:
    return {case_name(p): p for p in sorted(folder.iterdir()) if p.name.endswith(NIFTI_SUFFIXES)}


def match_pairs(gt: Path, pred: Path) -> list[tuple[str, Path, Path]]:
    """(case, gt file, pred file) pairs; two files, or two folders matched by case name."""
    for what, path in (("--gt", gt), ("--pred", pred)):
        if not path.exists():
            raise InputError(f"{what} not found: {path}")
    if gt.is_file() and pred.is_file():
        return [(case_name(gt), gt, pred)]
    if gt.is_dir() and pred.is_dir():
        g, p = _nifti_files(gt), _nifti_files(pred)
        missing = sorted(set(g) - set(p))
        if missing:
            raise InputError(f"no prediction for case(s) {missing[:10]} in {pred}")
        if not g:
            raise InputError(f"no NIfTI files in {gt}")
        return [(c, g[c], p[c]) for c in sorted(g)]
    raise InputError("--gt and --pred must both be files or both be folders")


def load_pair(case: str, gt_path: Path, pred_path: Path, binary: bool = False):
    """Checked integer label maps ``(gt, pred, spacing_mm)`` on one grid; with ``binary`` every
    non-zero voxel becomes the lesion label."""
    gt = load_volume(gt_path, f"ground truth {case}")
    pred = load_volume(pred_path, f"prediction {case}")
    if not same_grid(gt, pred):
        raise InputError(
            f"{case}: prediction {pred.shape} is not on the ground-truth grid {gt.shape} (shape or affine differ)"
        )
    g = np.rint(gt.array).astype(np.int64)
    p = np.rint(pred.array).astype(np.int64)
    if binary:
        return np.where(g > 0, LESION, 0), np.where(p > 0, LESION, 0), gt.spacing
    check_label_values(g, f"ground truth {case}")
    check_label_values(p, f"prediction {case}")
    return g, p, gt.spacing


def evaluate_labels(case: str, g: np.ndarray, p: np.ndarray, spacing, binary: bool = False) -> dict:
    """One case's entry: autoPET lesion metrics and the per-class metrics."""
    per = class_metrics(g, p, spacing, [LESION] if binary else LABEL_IDS)
    return {
        "case": case,
        **autopet_metrics(g == LESION, p == LESION, spacing),
        "per_class": {ID_TO_NAME[c]: m for c, m in per.items()},
    }


def summarise(cases: list[dict]) -> dict:
    """Means over cases; per class: mean Dice (missed count as 0), mean HD95 / ASD over found only."""
    mean = {
        k: float(np.nanmean([c[k] for c in cases])) if any(np.isfinite(c[k]) for c in cases) else float("nan")
        for k in ("dice", "fp_volume_ml", "fn_volume_ml")
    }
    per: dict[str, dict] = {}
    for name in dict.fromkeys(n for c in cases for n in c["per_class"]):
        rows = [c["per_class"][name] for c in cases if name in c["per_class"]]
        found = [r for r in rows if r["status"] == "found"]
        per[name] = {
            "dice": float(np.mean([r["dice"] for r in rows])),
            "hd95_mm": float(np.mean([r["hd95_mm"] for r in found])) if found else float("nan"),
            "asd_mm": float(np.mean([r["asd_mm"] for r in found])) if found else float("nan"),
            "found": len(found),
            "missed": sum(r["status"] == "missed" for r in rows),
            "hallucinated": sum(r["status"] == "hallucinated" for r in rows),
        }
    return {**mean, "per_class": per}


def markdown(result: dict) -> str:
    lines = [
        "| class | Dice | HD95 (mm, found only) | ASD (mm) | found | missed | hallucinated |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in result["mean"]["per_class"].items():
        lines.append(
            f"| {name} | {100 * m['dice']:.1f} | {m['hd95_mm']:.1f} | {m['asd_mm']:.1f} | {m['found']} | "
            f"{m['missed']} | {m['hallucinated']} |"
        )
    mean = result["mean"]
    lines += [
        "",
        f"Lesions (autoPET metrics, mean over {len(result['cases'])} case(s)): Dice "
        f"{100 * mean['dice']:.1f}, false-positive volume {mean['fp_volume_ml']:.2f} ml, "
        f"false-negative volume {mean['fn_volume_ml']:.2f} ml",
    ]
    return "\n".join(lines)
