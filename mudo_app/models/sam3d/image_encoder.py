"""3-D ViT image encoder of SAM-Med3D / SegAnyPET (``vit_b_ori``: 768-d, 12 blocks, 12 heads).

Input (B, 1, D, H, W) with D = H = W = ``img_size`` (128), already normalised. Tokens live in
(B, d, h, w, C) order with d = D / patch etc.; the output embedding is (B, out_chans, d, h, w).

Windowed blocks zero-pad the token grid to a multiple of the window after ``norm1`` and attend within
windows; global blocks attend over the whole grid. Attention adds the *published* relative-position
term, which is not the textbook decomposed form (see :mod:`mudo_app.models.sam3d.rel_pos`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from mudo_app.models.sam3d.common import LayerNorm3d, MLPBlock
from mudo_app.models.sam3d.fast_window import padded_window_attention
from mudo_app.models.sam3d.rel_pos import relative_position_bias


class Attention3D(nn.Module):
    """Multi-head self-attention over a (B, d, h, w, C) token grid with the published rel-pos term."""

    def __init__(self, dim: int, num_heads: int, grid: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_d = nn.Parameter(torch.zeros(2 * grid - 1, self.head_dim))
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * grid - 1, self.head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * grid - 1, self.head_dim))

    def forward(self, x: torch.Tensor, padded_window: int = 0) -> torch.Tensor:
        """Self-attention over the grid of ``x`` (B, d, h, w, C).

        ``padded_window`` S > d: the exact result for the real tokens of the grid zero-padded to S^3
        (one window), computed without the padding (:mod:`fast_window`).
        """
        b, d, h, w, c = x.shape
        t = d * h * w
        qkv = self.qkv(x).reshape(b, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, b * self.num_heads, t, self.head_dim).unbind(0)
        tables = (self.rel_pos_d, self.rel_pos_h, self.rel_pos_w)
        if padded_window:
            bq, bk, bv = self.qkv.bias.reshape(3, self.num_heads, self.head_dim).repeat(1, b, 1).unbind(0)
            out = padded_window_attention(q, k, v, bq, bk, bv, tables, d, padded_window, self.scale)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            out = (attn + relative_position_bias(q, tables, (d, h, w))).softmax(dim=-1) @ v
        out = out.view(b, self.num_heads, d, h, w, self.head_dim).permute(0, 2, 3, 4, 1, 5).reshape(b, d, h, w, c)
        return self.proj(out)


def window_partition(x: torch.Tensor, ws: int) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """(B, d, h, w, C) -> (B * nWin, ws, ws, ws, C) after zero-padding each side to a multiple of ws."""
    b, d, h, w, c = x.shape
    pd, ph, pw = (-d) % ws, (-h) % ws, (-w) % ws
    if pd or ph or pw:
        x = F.pad(x, (0, 0, 0, pw, 0, ph, 0, pd))
    dp, hp, wp = d + pd, h + ph, w + pw
    x = x.view(b, dp // ws, ws, hp // ws, ws, wp // ws, ws, c)
    return x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, ws, ws, ws, c), (dp, hp, wp)


def window_unpartition(windows: torch.Tensor, ws: int, padded: Sequence[int], size: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`window_partition`; crops the padding off."""
    dp, hp, wp = padded
    d, h, w = size
    b = windows.shape[0] // ((dp // ws) * (hp // ws) * (wp // ws))
    x = windows.view(b, dp // ws, hp // ws, wp // ws, ws, ws, ws, -1)
    x = x.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, dp, hp, wp, -1)
    return x[:, :d, :h, :w].contiguous()


class Block3D(nn.Module):
    """Pre-norm transformer block; ``window_size`` 0 means global attention."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, window_size: int, grid: int):
        super().__init__()
        self.window_size = window_size
        self.fast_path = True  # exact shortcut when one window covers a smaller cubic grid
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention3D(dim, num_heads, window_size if window_size > 0 else grid)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), nn.GELU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        size = tuple(x.shape[1:4])
        if self.window_size > 0 and self.fast_path and len(set(size)) == 1 and size[0] < self.window_size:
            x = self.attn(x, padded_window=self.window_size)
        elif self.window_size > 0:
            x, padded = window_partition(x, self.window_size)
            x = window_unpartition(self.attn(x), self.window_size, padded, size)
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class PatchEmbed3D(nn.Module):
    """Non-overlapping ``patch``^3 convolution; output in (B, d, h, w, C) order."""

    def __init__(self, patch: int, in_chans: int, dim: int):
        super().__init__()
        self.proj = nn.Conv3d(in_chans, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 4, 1)


class ImageEncoderViT3D(nn.Module):
    """3-D ViT image encoder of SAM-Med3D / SegAnyPET (``ImageEncoderViT3D`` upstream).

    Args:
        img_size: side S of the cubic input crop in voxels (128).
        patch_size: side of the non-overlapping patches (16): the token grid is (S/16)^3.
        in_chans: input channels (1: one modality, already normalised by the input contract).
        embed_dim: token channels (768 for ``vit_b_ori``).
        depth: transformer blocks; num_heads: attention heads per block; mlp_ratio: MLP width / embed_dim.
        out_chans: channels of the output embedding (384).
        window_size: window side in tokens of the windowed blocks (14: larger than the 8^3 grid, so
            the grid is zero-padded to one window; the exact shortcut skips the padding).
        global_attn_indexes: blocks that attend over the whole grid.

    Shapes: (B, 1, S, S, S) with axes (D, H, W) in the tensor's own order -> embedding
    (B, out_chans, S/16, S/16, S/16) in the same order.
    """

    def __init__(
        self,
        img_size: int = 128,
        patch_size: int = 16,
        in_chans: int = 1,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_chans: int = 384,
        window_size: int = 14,
        global_attn_indexes: Sequence[int] = (2, 5, 8, 11),
    ):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} must be a multiple of patch_size {patch_size}")
        self.img_size = img_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed3D(patch_size, in_chans, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, grid, embed_dim))
        self.blocks = nn.ModuleList(
            Block3D(embed_dim, num_heads, mlp_ratio, 0 if i in global_attn_indexes else window_size, grid)
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv3d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm3d(out_chans),
            nn.Conv3d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm3d(out_chans),
        )

    @property
    def embedding_shape(self) -> tuple[int, int, int, int]:
        """(out_chans, S/16, S/16, S/16): one crop's embedding, without the batch axis."""
        grid = self.pos_embed.shape[1]
        conv = self.neck[0]
        assert isinstance(conv, nn.Conv3d)
        return (conv.out_channels, grid, grid, grid)

    def set_fast_path(self, enabled: bool) -> None:
        """Use the exact padded-window shortcut (default) or the published padded computation."""
        for blk in self.blocks:
            assert isinstance(blk, Block3D)
            blk.fast_path = enabled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S, S) normalised image -> (B, out_chans, S/16, S/16, S/16) embedding."""
        if x.ndim != 5 or tuple(x.shape[2:]) != (self.img_size,) * 3:
            raise ValueError(
                f"image must be (B, C, {self.img_size}, {self.img_size}, {self.img_size}), got {tuple(x.shape)}"
            )
        x = self.patch_embed(x) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.neck(x.permute(0, 4, 1, 2, 3))
