"""Closed planar contours of a 2D mask traced along pixel *edges* (not through pixel centres).

Coordinates are corner points ``(y, x)`` of the pixel grid: pixel ``[r, c]`` (row ``r``, column ``c``)
spans corners ``y in [r, r + 1]``, ``x in [c, c + 1]``, so corner ``(y, x)`` lies at the continuous
pixel-index position ``(row, column) = (y - 0.5, x - 0.5)``. A traced square of n x n pixels therefore
encloses exactly n x n pixels of area, where a contour through pixel centres would enclose (n - 1)^2.

Regions are 4-connected: pixels that touch only at a corner get separate contours. Outer boundaries
run clockwise on screen (y down), holes counter-clockwise (:func:`signed_area` tells them apart).
"""

from __future__ import annotations

import numpy as np

# directions (dy, dx) of the four edge kinds, as generated in _edges
_RIGHT_TURN = {(1, 0): (0, -1), (0, -1): (-1, 0), (-1, 0): (0, 1), (0, 1): (1, 0)}


def _edges(mask: np.ndarray) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Directed boundary edges (start corner, end corner), each foreground pixel walked clockwise."""
    m = np.pad(mask.astype(bool), 1)
    core = m[1:-1, 1:-1]
    edges = []
    # (neighbour offset, start corner offset, end corner offset) for the top, right, bottom, left sides
    sides = (
        ((-1, 0), (0, 0), (0, 1)),
        ((0, 1), (0, 1), (1, 1)),
        ((1, 0), (1, 1), (1, 0)),
        ((0, -1), (1, 0), (0, 0)),
    )
    h, w = mask.shape
    for (dy, dx), (sy, sx), (ey, ex) in sides:
        neighbour = m[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
        for r, c in np.argwhere(core & ~neighbour):
            edges.append(((int(r) + sy, int(c) + sx), (int(r) + ey, int(c) + ex)))
    return edges


def _simplify(loop: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Drop the vertices where the contour goes straight on (only corners stay)."""
    n = len(loop)
    out = []
    for i in range(n):
        a, b, c = loop[i - 1], loop[i], loop[(i + 1) % n]
        if (b[0] - a[0], b[1] - a[1]) != (c[0] - b[0], c[1] - b[1]):
            out.append(b)
    return out


def trace_contours(mask: np.ndarray) -> list[np.ndarray]:
    """Every closed boundary of the foreground of a 2D ``mask`` (rows, columns).

    Returns:
        A list of (N, 2) float arrays of corner points ``(y, x)`` (module docstring), one per outer
        boundary or hole, each closed implicitly (the last point joins the first), N >= 4.
    """
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2D (rows, columns), got shape {mask.shape}")
    edges = _edges(mask)
    outgoing: dict[tuple[int, int], list[int]] = {}
    for i, (start, _) in enumerate(edges):
        outgoing.setdefault(start, []).append(i)
    used = np.zeros(len(edges), bool)
    loops = []
    for first in range(len(edges)):
        if used[first]:
            continue
        loop, e = [], first
        while True:
            used[e] = True
            start, end = edges[e]
            loop.append(start)
            direction = (end[0] - start[0], end[1] - start[1])
            free = [j for j in outgoing[end] if not used[j] or j == first]
            if len(free) > 1:  # a corner shared by diagonal pixels: keep to the same pixel (right turn)
                turn = _RIGHT_TURN[direction]
                free = [j for j in free if (edges[j][1][0] - end[0], edges[j][1][1] - end[1]) == turn]
            e = free[0]
            if e == first:
                break
        loops.append(np.array(_simplify(loop), dtype=np.float64))
    return loops


def signed_area(loop: np.ndarray) -> float:
    """Shoelace area of a (N, 2) ``(y, x)`` loop: positive for outer boundaries (clockwise on screen),
    negative for holes."""
    y, x = loop[:, 0], loop[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def _inside(point: np.ndarray, loop: np.ndarray) -> bool:
    """Even-odd test of a point that lies on no edge of ``loop`` (both ``(y, x)``)."""
    y, x = point
    ys, xs = loop[:, 0], loop[:, 1]
    y2, x2 = np.roll(ys, -1), np.roll(xs, -1)
    crosses = (ys > y) != (y2 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        at = xs + (y - ys) * (x2 - xs) / (y2 - ys)
    return bool(np.count_nonzero(crosses & (x < at)) % 2)


def keyhole(loops: list[np.ndarray]) -> list[np.ndarray]:
    """Join each hole to the smallest outer boundary around it by a zero-width cut (keyhole contours),
    so that every region is one contour; islands inside holes stay contours of their own."""
    outers = [loop for loop in loops if signed_area(loop) > 0]
    holes = [loop for loop in loops if signed_area(loop) < 0]
    for hole in holes:
        # a point inside the hole: a quarter pixel to the left of its first edge (background side)
        dy, dx = np.sign(hole[1] - hole[0])
        probe = (hole[0] + hole[1]) / 2 + 0.25 * np.array([-dx, dy])
        around = [i for i, o in enumerate(outers) if _inside(probe, o)]
        if not around:  # cannot happen for traced masks; keep the hole as its own contour
            outers.append(hole)
            continue
        i = min(around, key=lambda k: signed_area(outers[k]))
        outer = outers[i]
        d = np.linalg.norm(outer[:, None, :] - hole[None, :, :], axis=2)
        o, h = np.unravel_index(int(np.argmin(d)), d.shape)
        bridge = [outer[: o + 1], hole[h:], hole[: h + 1], outer[o:]]
        outers[i] = np.concatenate(bridge)
    return outers
