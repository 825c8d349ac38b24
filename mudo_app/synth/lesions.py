"""Hot-spot lesions (label 13) of varied size, shape, contrast and site for the phantom generator."""

from __future__ import annotations

import numpy as np

from mudo_app.labels import LESION
from mudo_app.synth.canvas import ellipsoid_radius, rotation

SITES = (
    "liver",
    "lung",
    "bone",
    "spleen",
    "node_mediastinal",
    "node_paraaortic",
    "node_neck",
    "node_axillary",
    "node_inguinal",
    "node_perirenal",
)
SITE_P = np.array([0.16, 0.14, 0.12, 0.05, 0.12, 0.12, 0.07, 0.08, 0.07, 0.07])


def _random_voxel_world(p, mask: np.ndarray, rng) -> np.ndarray | None:
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return None
    i, j, k = np.unravel_index(idx[rng.integers(idx.size)], mask.shape)
    ax = p.canvas.axes
    return p.canvas.to_patient(np.array([ax[0][i], ax[1][j], ax[2][k]], np.float64))


def _site_centre(site: str, p, rng, a: dict):
    yb, h, z0 = a["y_body"], a["h"], a["z0"]
    j = lambda s: rng.normal(scale=s, size=3)  # noqa: E731 jitter in mm
    side = 1 if rng.random() < 0.5 else -1
    if site == "liver":
        return _random_voxel_world(p, p.label == 1, rng)
    if site == "spleen":
        return _random_voxel_world(p, p.label == 5, rng)
    if site == "lung":
        return _random_voxel_world(p, (p.label >= 8) & (p.label <= 12), rng)
    if site == "bone":
        return _random_voxel_world(p, (p.hu > 200) & p.body & (p.label == 0), rng)
    if site == "node_mediastinal":
        return np.array([0, yb + 20, a["z_lung"] + 10 * h]) + j(12)
    if site == "node_paraaortic":
        return np.array([-18 + side * 25, yb - a["D"] + 85, z0 + rng.uniform(200, 330) * h]) + j(6)
    if site == "node_neck":
        return np.array([side * 35, yb - 5, a["z_shoulder"] + 30 * h]) + j(8)
    if site == "node_axillary":
        return np.array([side * (a["W"] - a["fat_mm"] - 25), yb, a["z_lung"] + 40 * h]) + j(10)
    if site == "node_inguinal":
        return np.array([side * 70 * a["w"], yb + a["D"] - a["fat_mm"] - 25, z0 + 30 * h]) + j(8)
    # perirenal: just beside a kidney, so lesions also touch organs
    return np.array([side * (72 * a["w"] + 38), yb - a["D"] + 70, a["z_kidney"]]) + j(8)


def add_lesions(p, rng: np.random.Generator, a: dict, settings) -> list[dict]:
    """Paint 0..``settings.max_lesions`` lesions into ``p``; return their descriptions (world mm)."""
    if rng.random() < settings.lesion_free_fraction:
        return []
    out = []
    for _ in range(int(rng.integers(1, settings.max_lesions + 1))):  # noqa: B007
        site = str(rng.choice(SITES, p=SITE_P / SITE_P.sum()))
        centre = _site_centre(site, p, rng, a)
        if centre is None:
            continue
        radius = float(np.exp(rng.uniform(np.log(4.0), np.log(24.0))))
        lobes = [(centre, radius * rng.uniform(0.75, 1.25, size=3))]
        for _ in range(int(rng.integers(0, 3))):  # irregular shapes: satellite lobes
            off = rng.normal(size=3)
            off *= 0.6 * radius / np.linalg.norm(off)
            lobes.append((centre + off, radius * rng.uniform(0.45, 0.8, size=3)))
        reach = 2.2 * radius
        sl = p.canvas.box(centre - reach, centre + reach)
        xyz = p.canvas.coords(sl)
        rot = rotation(*rng.uniform(-np.pi, np.pi, size=3))
        r = np.minimum.reduce([ellipsoid_radius(xyz, c, s, rot) for c, s in lobes])
        mask = (r < 1.0) & p.body[sl]
        if not mask.any():
            continue
        background = float(np.median(p.suv[sl][mask]))
        contrast = float(rng.uniform(1.5, 9.0))
        peak = max(contrast * background, float(rng.uniform(2.5, 7.0)))
        suv = np.where(r < 0.35, peak * rng.uniform(0.4, 1.0), peak).astype(np.float32) if radius > 15 else peak
        hu = {"lung": 35.0, "liver": 38.0, "bone": float(rng.uniform(150, 900))}.get(site, 42.0)
        p.paint(sl, mask, hu=hu, suv=suv, label=LESION)
        out.append(
            {
                "site": site,
                "centre_mm": [round(float(c), 2) for c in centre],
                "radius_mm": round(radius, 2),
                "peak_suv": round(peak, 3),
                "voxels": int(mask.sum()),
            }
        )
    return out


def add_benign_uptake(p, rng: np.random.Generator, a: dict) -> int:
    """0-4 FDG-avid benign foci (brown fat, muscle, inflamed nodes): hot, *not* labelled as lesion."""
    n = int(rng.integers(0, 5))
    for _ in range(n):
        side = 1 if rng.random() < 0.5 else -1
        centre = np.array(
            [
                side * rng.uniform(20, a["W"] - a["fat_mm"]),
                a["y_body"] + rng.uniform(-40, 40),
                a["z0"] + rng.uniform(60, 600) * a["h"],
            ]
        )
        semi = rng.uniform(5, 14, size=3)
        sl = p.canvas.box(centre - 2 * semi.max(), centre + 2 * semi.max())
        mask = (ellipsoid_radius(p.canvas.coords(sl), centre, semi) < 1) & p.body[sl] & (p.label[sl] == 0)
        p.paint(sl, mask, suv=float(rng.uniform(2.5, 8.0)))
    return n
