"""Two-way transformer mask decoder with IoU head (3D SAM). Output low-res logits (B, M, 4e, 4e, 4e)."""

from __future__ import annotations

import torch
import torch.nn as nn

from mudo_app.models.sam3d.common import MLP, LayerNorm3d, MLPBlock


class TokenAttention(nn.Module):
    """Attention with q/k/v projections to ``dim // downsample`` and ``num_heads`` heads."""

    def __init__(self, dim: int, num_heads: int, downsample: int = 1):
        super().__init__()
        inner = dim // downsample
        if inner % num_heads:
            raise ValueError(f"num_heads {num_heads} must divide {inner}")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, inner)
        self.k_proj = nn.Linear(dim, inner)
        self.v_proj = nn.Linear(dim, inner)
        self.out_proj = nn.Linear(inner, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        attn = (q @ k.transpose(-2, -1)) / (q.shape[-1] ** 0.5)
        out = attn.softmax(dim=-1) @ v
        b, h, n, c = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * c))


class TwoWayBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_dim: int, skip_first_layer_pe: bool):
        super().__init__()
        self.self_attn = TokenAttention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = TokenAttention(dim, num_heads, 2)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, mlp_dim, nn.ReLU)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = TokenAttention(dim, num_heads, 2)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor, key_pe: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)
        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))
        queries = self.norm3(queries + self.mlp(queries))
        q, k = queries + query_pe, keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries))
        return queries, keys


class TwoWayTransformer3D(nn.Module):
    def __init__(self, depth: int = 2, dim: int = 384, num_heads: int = 8, mlp_dim: int = 2048):
        super().__init__()
        self.layers = nn.ModuleList(TwoWayBlock(dim, num_heads, mlp_dim, i == 0) for i in range(depth))
        self.final_attn_token_to_image = TokenAttention(dim, num_heads, 2)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(
        self, image: torch.Tensor, image_pe: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image, image_pe (B, C, d, h, w); tokens (B, N, C) -> (tokens (B, N, C), image (B, dhw, C))."""
        keys = image.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries = tokens
        for layer in self.layers:
            queries, keys = layer(queries, keys, tokens, key_pe)
        q, k = queries + tokens, keys + key_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q, k, keys))
        return queries, keys


def output_upscaling(dim: int) -> nn.Sequential:
    """The decoder's upscaling of an image embedding: (B, dim, d, h, w) -> (B, dim / 8, 4d, 4h, 4w), two
    stride-2 transposed convolutions (the first followed by a channel layer norm), GELU after each."""
    return nn.Sequential(
        nn.ConvTranspose3d(dim, dim // 4, kernel_size=2, stride=2),
        LayerNorm3d(dim // 4),
        nn.GELU(),
        nn.ConvTranspose3d(dim // 4, dim // 8, kernel_size=2, stride=2),
        nn.GELU(),
    )


class MaskDecoder3D(nn.Module):
    """SAM's two-way transformer mask decoder in 3-D, with its IoU head (SAM-Med3D's ``MaskDecoder3D``).

    Args:
        dim: channels C of the image embedding and of the prompt tokens (384 for ``vit_b_ori``).
        num_multimask_outputs: candidate masks with ``multimask_output`` (3); one more token makes the
            single-mask output.
        depth: two-way transformer blocks.
        num_heads: attention heads of the transformer.
        mlp_dim: hidden width of the transformer's MLPs.
        iou_head_depth / iou_head_hidden_dim: the IoU prediction MLP.

    Shapes: image embedding (B or 1, C, d, h, w) with its dense positional encoding (1, C, d, h, w),
    sparse prompt tokens (B, N, C), dense prompt embedding (B, C, d, h, w) -> low-resolution logits
    (B, M, 4d, 4h, 4w) in the same (d, h, w) axis order, and IoU estimates (B, M), M = 3 or 1.
    """

    def __init__(
        self,
        dim: int = 384,
        num_multimask_outputs: int = 3,
        depth: int = 2,
        num_heads: int = 8,
        mlp_dim: int = 2048,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ):
        super().__init__()
        self.num_mask_tokens = num_multimask_outputs + 1
        self.transformer = TwoWayTransformer3D(depth, dim, num_heads, mlp_dim)
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.output_upscaling = output_upscaling(dim)
        self.output_hypernetworks_mlps = nn.ModuleList(MLP(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens))
        self.iou_prediction_head = MLP(dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (low-res logits (B, M, 4d, 4h, 4w), IoU predictions (B, M)); M = 3 or 1.

        ``image_embeddings`` may have batch 1 while the prompts have batch B: it is repeated.
        """
        masks, iou = self.all_outputs(image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings)
        sl = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, sl], iou[:, sl]

    def all_outputs(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every mask token's output: (low-res logits (B, 1 + M, 4d, 4h, 4w), IoU (B, 1 + M)); index 0 is
        the single-mask output, 1..M the multimask candidates (what training needs to reach both)."""
        b = sparse_prompt_embeddings.shape[0]
        out_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([out_tokens.unsqueeze(0).expand(b, -1, -1), sparse_prompt_embeddings], dim=1)
        src = image_embeddings
        if src.shape[0] != b:
            src = torch.repeat_interleave(src, b, dim=0)
        src = src + dense_prompt_embeddings
        pos = torch.repeat_interleave(image_pe, b, dim=0) if image_pe.shape[0] != b else image_pe
        _, c, d, h, w = src.shape
        hs, src = self.transformer(src, pos, tokens)
        iou_out, mask_out = hs[:, 0], hs[:, 1 : 1 + self.num_mask_tokens]
        up = self.output_upscaling(src.transpose(1, 2).reshape(b, c, d, h, w))
        hyper = torch.stack([mlp(mask_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1)
        _, cu, du, hu, wu = up.shape
        masks = (hyper @ up.view(b, cu, du * hu * wu)).view(b, -1, du, hu, wu)
        return masks, self.iou_prediction_head(iou_out)
