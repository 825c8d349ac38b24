"""Exact window attention over a zero-padded token grid without computing the padding.

When a block's window (S) is larger than its cubic token grid (G), the published encoder pads the
grid with zeros to S^3 tokens and attends over all of them. A padded token is a zero vector after
``norm1``, so its query, key and value are the biases ``b_q``, ``b_k``, ``b_v``. With the published
relative-position term (see :func:`rel_pos.relative_position_bias`) the total softmax weight of
all padded keys for a real query i at (qd, qh, qw) has a closed form:

    exp(scale q_i·b_k) · Σ_kw exp(A(kw)) · Σ_{(kd,kh) padded given kw} exp(B(kd,kw)) exp(C(kh,kw))

with A(kw) = q_i·P_d[qd-kw], B(kd,kw) = q'(qd,qh,kd)·P_h[qh-kw], C(kh,kw) = q'(qd,qh,kh)·P_w[kh-kw],
q' the query at that position (``b_q`` where padded). For kw >= G every (kd, kh) is padded; for kw < G
the padded pairs are {kd >= G} x all kh plus {kd < G} x {kh >= G}, which keeps every sum positive (no
cancellation). Attention over the G^3 real keys plus one virtual key per query, with that log-weight
as logit and ``b_v`` as value, equals the padded attention restricted to the real queries; padded
queries are cropped afterwards anyway, so they are never computed. Everything runs in log space.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mudo_app.models.sam3d.rel_pos import rel_pos_rows, relative_position_bias


def padded_window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias_q: torch.Tensor,
    bias_k: torch.Tensor,
    bias_v: torch.Tensor,
    tables: Sequence[torch.Tensor],
    grid: int,
    window: int,
    scale: float,
) -> torch.Tensor:
    """Attention output (N, G^3, c) of the real tokens, as if the grid were zero-padded to ``window``^3.

    ``q, k, v``: (N, G^3, c) of the real tokens (N = batch * heads, tokens in (d, h, w) order);
    ``bias_q/k/v``: (N, c) the qkv biases of each row's head; ``tables``: rel_pos_d, _h, _w (2S-1, c).
    """
    g, s = grid, window
    if not g < s:
        raise ValueError(f"the padded-window shortcut needs grid {g} < window {s}")
    n, t, c = q.shape
    p_d, p_h, p_w = tables
    # real keys: the published bias restricted to the real grid (central 2G-1 rows of each table)
    central = slice(s - g, s + g - 1)
    logits = (q * scale) @ k.transpose(-2, -1)
    logits = logits + relative_position_bias(q, (p_d[central], p_h[central], p_w[central]), (g, g, g))
    # the virtual key: log of the total weight of all padded keys, per real query
    qg = q.reshape(n, g, g, g, c)
    q_pad = torch.cat([qg, bias_q[:, None, None, None, :].expand(n, g, g, s - g, c)], dim=3)  # (n, qd, qh, e<S, c)
    a = torch.einsum("nabec,akc->nabek", qg, rel_pos_rows(p_d, g, s))  # (n, qd, qh, qw, kw)
    b = torch.einsum("nabec,bkc->nabek", q_pad, rel_pos_rows(p_h, g, s))  # (n, qd, qh, kd, kw)
    cc = torch.einsum("nabec,ekc->nabek", q_pad, rel_pos_rows(p_w, s, s))  # (n, qd, qh, kh, kw)
    b_all, b_real, b_pad = b.logsumexp(3), b[:, :, :, :g].logsumexp(3), b[:, :, :, g:].logsumexp(3)
    c_all, c_pad = cc.logsumexp(3), cc[:, :, :, g:].logsumexp(3)
    inner = b_all + c_all  # (n, qd, qh, kw): kw >= G, every (kd, kh) padded
    inner_real_kw = torch.logaddexp(b_pad + c_all, b_real + c_pad)
    inner = torch.cat([inner_real_kw[..., :g], inner[..., g:]], dim=-1)
    virtual = torch.logsumexp(a + inner[:, :, :, None, :], dim=-1).reshape(n, t)
    virtual = virtual + scale * (q @ bias_k[:, :, None])[..., 0]
    weights = torch.cat([logits, virtual[..., None]], dim=-1).softmax(dim=-1)
    return weights[..., :t] @ v + weights[..., t:] * bias_v[:, None, :]
