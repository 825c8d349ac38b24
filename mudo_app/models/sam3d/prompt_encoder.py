"""Prompt encoder of the 3D SAM: random Fourier positional encoding, point and mask prompts.

Points are voxel indices inside the ``input_size``^3 crop, in the image tensor's own axis order
(D, H, W), shape (B, N, 3); labels (B, N): 1 positive, 0 negative, -1 padding. Mask prompts are
low-resolution logits (B, 1, 4e, 4e, 4e) with e the embedding grid side (32^3 for ``vit_b_ori``).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from mudo_app.models.sam3d.common import LayerNorm3d


class RandomFourierPE3D(nn.Module):
    """Positional encoding ``[sin(u), cos(u), sin(u)]`` with ``u = 2π (2c - 1) @ G`` (the published form)."""

    def __init__(self, features: int):
        super().__init__()
        self.positional_encoding_gaussian_matrix: torch.Tensor
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(3, features))

    def encode(self, coords: torch.Tensor) -> torch.Tensor:
        """coords in [0, 1], (..., 3) -> (..., 3 * features)."""
        u = 2 * math.pi * ((2 * coords - 1) @ self.positional_encoding_gaussian_matrix)
        return torch.cat([torch.sin(u), torch.cos(u), torch.sin(u)], dim=-1)

    def grid(self, size: tuple[int, int, int]) -> torch.Tensor:
        """Dense encoding (C, d, h, w) of a grid; at index (a0, a1, a2) the coordinates are
        ((a1 + .5)/h, (a0 + .5)/d, (a2 + .5)/w): the first two axes swapped, as published."""
        d, h, w = size
        dev = self.positional_encoding_gaussian_matrix.device
        a0 = (torch.arange(d, device=dev, dtype=torch.float32) + 0.5) / d
        a1 = (torch.arange(h, device=dev, dtype=torch.float32) + 0.5) / h
        a2 = (torch.arange(w, device=dev, dtype=torch.float32) + 0.5) / w
        g0, g1, g2 = torch.meshgrid(a0, a1, a2, indexing="ij")
        return self.encode(torch.stack([g1, g0, g2], dim=-1)).permute(3, 0, 1, 2)

    def points(self, coords: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
        """Encode coordinates already in voxel units of a ``size`` crop (divided per axis here)."""
        scale = torch.tensor(size, dtype=coords.dtype, device=coords.device)
        return self.encode(coords / scale)


class PromptEncoder3D(nn.Module):
    """Encodes point and mask prompts for :class:`MaskDecoder3D` (SAM-Med3D's ``PromptEncoder3D``).

    Args:
        embed_dim: prompt embedding channels C (384 for ``vit_b_ori``; a multiple of 3: the Fourier
            features are ``[sin, cos, sin]``).
        image_embedding_size: the image embedding grid (d, h, w), e.g. (8, 8, 8).
        input_image_size: the encoder's input crop (D, H, W) in voxels, e.g. (128, 128, 128); point
            coordinates are voxel indices of this crop, in the tensor's own axis order.
        mask_in_chans: hidden channels of the mask downscaling convolutions.

    ``forward(points, boxes, masks)`` takes the arguments in upstream's order and names, so code written
    against SAM-Med3D or the MuDuo reference (``prompt_encoder(points=..., boxes=None, masks=...)``)
    runs unchanged; box prompts themselves are refused (upstream's 3-D box path is broken).
    """

    def __init__(
        self,
        embed_dim: int = 384,
        image_embedding_size: tuple[int, int, int] = (8, 8, 8),
        input_image_size: tuple[int, int, int] = (128, 128, 128),
        mask_in_chans: int = 16,
    ):
        super().__init__()
        if embed_dim % 3:
            raise ValueError(f"embed_dim must be divisible by 3, got {embed_dim}")
        self.embed_dim = embed_dim
        d, h, w = (int(s) for s in image_embedding_size)
        self.image_embedding_size = (d, h, w)
        i, j, k = (int(s) for s in input_image_size)
        self.input_image_size = (i, j, k)
        self.pe_layer = RandomFourierPE3D(embed_dim // 3)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(2))  # negative, positive
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv3d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm3d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv3d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm3d(mask_in_chans),
            nn.GELU(),
            nn.Conv3d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    @property
    def mask_input_size(self) -> tuple[int, int, int]:
        d, h, w = self.image_embedding_size
        return 4 * d, 4 * h, 4 * w

    def get_dense_pe(self) -> torch.Tensor:
        """(1, C, d, h, w) positional encoding of the image embedding grid."""
        return self.pe_layer.grid(self.image_embedding_size).unsqueeze(0)

    def _embed_points(self, coords: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        coords = coords + 0.5  # voxel centres
        if pad:
            coords = torch.cat([coords, torch.zeros_like(coords[:, :1])], dim=1)
            labels = torch.cat([labels, -torch.ones_like(labels[:, :1])], dim=1)
        emb = self.pe_layer.points(coords, self.input_image_size)
        emb = torch.where((labels == -1)[..., None], self.not_a_point_embed.weight.expand_as(emb), emb)
        negative, positive = (e.weight for e in self.point_embeddings if isinstance(e, nn.Embedding))
        emb = emb + (labels == 0)[..., None] * negative
        emb = emb + (labels == 1)[..., None] * positive
        return emb

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        boxes: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed the prompts.

        Args:
            points: ``(coords (B, N, 3) float voxel indices of the input crop, labels (B, N))`` with
                labels 1 positive, 0 negative, -1 padding; a padding point is appended (as upstream does
                when no box is given).
            boxes: must be None. Accepted so upstream callers run unchanged; a box raises ``ValueError``.
            masks: low-resolution mask logits (B, 1, 4d, 4h, 4w), or None for the learned no-mask embedding.

        Returns:
            ``(sparse (B, N + 1, C) or (B, 0, C) without points, dense (B, C, d, h, w))``.
        """
        if boxes is not None:
            raise ValueError(
                "box prompts are not supported: SAM-Med3D's published 3-D box path is broken; pass boxes=None "
                "and give the box as clicks (e.g. its centre as a positive point)"
            )
        if points is not None:
            bs = points[0].shape[0]
        elif masks is not None:
            bs = masks.shape[0]
        else:
            bs = 1
        dev = self.no_mask_embed.weight.device
        sparse = torch.empty((bs, 0, self.embed_dim), device=dev)
        if points is not None:
            coords, labels = points
            sparse = torch.cat([sparse, self._embed_points(coords.float(), labels, pad=True)], dim=1)
        if masks is not None:
            if tuple(masks.shape[-3:]) != self.mask_input_size:
                raise ValueError(f"mask prompt must be (B, 1, {self.mask_input_size}), got {tuple(masks.shape)}")
            dense = self.mask_downscaling(masks)
        else:
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1, 1).expand(bs, -1, *self.image_embedding_size)
        return sparse, dense
