"""PNG figures for an evaluation: per-class Dice chart and ground-truth / prediction overlays."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mudo_app.labels import LABELS


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def per_class_chart(result: dict, path: Path) -> Path:
    """Bar chart of mean Dice per class; the number of missed structures is written above each bar."""
    plt = _pyplot()
    per = result["mean"]["per_class"]
    names = list(per)
    colours = {lbl.name: np.array(lbl.color) / 255 for lbl in LABELS}
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(names) + 2), 4))
    dice = [100 * per[n]["dice"] for n in names]
    ax.bar(range(len(names)), dice, color=[colours.get(n, (0.5, 0.5, 0.5)) for n in names])
    for i, n in enumerate(names):
        if per[n]["missed"]:
            ax.text(i, dice[i] + 1, f"{per[n]['missed']} missed", ha="center", fontsize=7, rotation=90)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("Dice (%)")
    ax.set_ylim(0, 110)
    ax.set_title(f"Mean Dice per class over {len(result['cases'])} case(s)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def overlay(case: str, gt: np.ndarray, pred: np.ndarray, path: Path, image: np.ndarray | None = None) -> Path:
    """The axial slice (k) with the most ground truth: truth as solid contours, prediction dashed.

    Arrays are ``[i, j, k]``; the slice is shown with i horizontal and j vertical.
    """
    plt = _pyplot()
    fg = (gt > 0) if (gt > 0).any() else (pred > 0)
    k = int(np.argmax(fg.sum(axis=(0, 1))))
    fig, ax = plt.subplots(figsize=(6, 6 * gt.shape[1] / max(gt.shape[0], 1) + 0.5))
    if image is not None:
        ax.imshow(np.clip(image[:, :, k].T, -400, 400), cmap="gray", origin="lower")
    else:
        ax.imshow(np.zeros(gt.shape[:2]).T, cmap="gray", origin="lower")
    for lbl in LABELS:
        colour = [np.array(lbl.color) / 255]
        for arr, style in ((gt, "solid"), (pred, "dashed")):
            m = arr[:, :, k] == lbl.idx
            if m.any() and not m.all():
                ax.contour(
                    m.T.astype(float), levels=[0.5], colors=colour, linestyles=style, linewidths=1.2, origin="lower"
                )
    ax.set_title(f"{case}, slice k={k} (solid: truth, dashed: prediction)", fontsize=9)
    ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
