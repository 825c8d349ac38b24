"""The published relative-position term of the 3D SAM encoder's attention (SAM-Med3D / SegAnyPET).

Tables are (2S-1, c) per axis, one row per offset ``a - b`` of query and key positions on an
``S``-token axis; tokens are in (d, h, w) order. Used by the encoder's attention
(:mod:`image_encoder`) and by its exact padded-window shortcut (:mod:`fast_window`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def rel_pos_rows(table: torch.Tensor, n_q: int, n_k: int) -> torch.Tensor:
    """(n_q, n_k, C) rows ``table[a - b + S - 1]`` of a (2S-1, C) table, for positions a < n_q, b < n_k."""
    offset = (table.shape[0] - 1) // 2
    idx = torch.arange(n_q)[:, None] - torch.arange(n_k)[None, :] + offset
    return table[idx.to(table.device)]


def rel_pos_table(size: int, table: torch.Tensor) -> torch.Tensor:
    """(size, size, C) table ``R[a, b] = table[a - b + size - 1]`` for query/key positions a, b."""
    if table.shape[0] != 2 * size - 1:
        raise ValueError(f"relative-position table has {table.shape[0]} rows, expected {2 * size - 1}")
    return rel_pos_rows(table, size, size)


def relative_position_bias(q: torch.Tensor, tables: Sequence[torch.Tensor], grid: tuple[int, int, int]) -> torch.Tensor:
    """Bias (N, S^3, S^3) added to attention logits, exactly as the published 3-D encoder computes it.

    ``q``: unscaled queries (N, S^3, c) in (d, h, w) token order; ``tables``: rel_pos_d, _h, _w of shape
    (2S-1, c). For query (qd, qh, qw) and key (kd, kh, kw) the bias is::

        q(qd,qh,qw)·P_d[qd-kw] + q(qd,qh,kd)·P_h[qh-kw] + q(qd,qh,kh)·P_w[kh-kw]

    (a 2-D broadcasting pattern carried into 3-D; it needs a cubic grid).
    """
    d, h, w = grid
    if not d == h == w:
        raise ValueError(f"the published relative-position term needs a cubic token grid, got {grid}")
    n, _, c = q.shape
    rd, rh, rw = (rel_pos_table(d, t) for t in tables)
    rq = q.reshape(n, d, h, w, c)
    # t_x[n, a, b, e, k]: query vector at (a, b, e) against table row (index-of-axis - k)
    t_d = torch.einsum("nabec,akc->nabek", rq, rd)  # q(qd,qh,qw)·P_d[qd-k]
    t_h = torch.einsum("nabec,bkc->nabek", rq, rh)  # q(qd,qh,e)·P_h[qh-k]
    t_w = torch.einsum("nabec,ekc->nabek", rq, rw)  # q(qd,qh,e)·P_w[e-k]
    bias = (
        t_d[:, :, :, :, None, None, :]  # (n, qd, qh, qw, 1, 1, kw)
        + t_h[:, :, :, None, :, None, :]  # e -> kd
        + t_w[:, :, :, None, None, :, :]  # e -> kh
    )
    return bias.reshape(n, d * h * w, d * h * w)
