"""Registry of 3D SAM configurations; checkpoints load through :mod:`mudo_app.models.loading`.

``build_sam3d("vit_b_ori", checkpoint=path)`` builds SAM-Med3D / SegAnyPET's published architecture
and loads an official checkpoint; ``"standin_small"`` is the small stand-in trained by this project.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn as nn

from mudo_app.errors import InputError
from mudo_app.models.loading import load_strict, read_state_dict  # noqa: F401 - re-exported
from mudo_app.models.sam3d.image_encoder import ImageEncoderViT3D
from mudo_app.models.sam3d.mask_decoder import MaskDecoder3D
from mudo_app.models.sam3d.prompt_encoder import PromptEncoder3D


@dataclass(frozen=True)
class Sam3DConfig:
    img_size: int = 128
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    window_size: int = 14
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    out_chans: int = 384
    decoder_heads: int = 8
    decoder_mlp_dim: int = 2048
    iou_head_hidden_dim: int = 256
    mask_in_chans: int = 16


SAM3D_CONFIGS: dict[str, Sam3DConfig] = {
    # SAM-Med3D(-turbo) and SegAnyPET: 100.5 M parameters
    "vit_b_ori": Sam3DConfig(),
    # the project's stand-in teachers: same modules and input contract, 4 blocks of 192-d, 96-d prompts
    "standin_small": Sam3DConfig(
        embed_dim=192,
        depth=4,
        num_heads=4,
        global_attn_indexes=(1, 3),
        out_chans=96,
        decoder_heads=4,
        decoder_mlp_dim=384,
        iou_head_hidden_dim=96,
    ),
}


class Sam3D(nn.Module):
    """Image encoder, prompt encoder and mask decoder, used as the published model uses them."""

    def __init__(self, cfg: Sam3DConfig):
        super().__init__()
        self.config = cfg
        grid = cfg.img_size // cfg.patch_size
        self.image_encoder = ImageEncoderViT3D(
            cfg.img_size,
            cfg.patch_size,
            1,
            cfg.embed_dim,
            cfg.depth,
            cfg.num_heads,
            4.0,
            cfg.out_chans,
            cfg.window_size,
            cfg.global_attn_indexes,
        )
        self.prompt_encoder = PromptEncoder3D(cfg.out_chans, (grid,) * 3, (cfg.img_size,) * 3, cfg.mask_in_chans)
        self.mask_decoder = MaskDecoder3D(
            cfg.out_chans, 3, 2, cfg.decoder_heads, cfg.decoder_mlp_dim, 3, cfg.iou_head_hidden_dim
        )

    def decode(
        self,
        embedding: torch.Tensor,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
        multimask_output: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts -> (low-res logits, IoU). ``points`` = (coords (B, N, 3), labels (B, N)) or None."""
        sparse, dense = self.prompt_encoder(points=points, masks=mask)
        return self.mask_decoder(embedding, self.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output)

    def decode_all(
        self,
        embedding: torch.Tensor,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts -> every output of the decoder: (low-res logits (B, 4, ...), IoU (B, 4)), index 0 the
        single-mask output, 1..3 the multimask candidates (:meth:`MaskDecoder3D.all_outputs`)."""
        sparse, dense = self.prompt_encoder(points=points, masks=mask)
        return self.mask_decoder.all_outputs(embedding, self.prompt_encoder.get_dense_pe(), sparse, dense)


def build_sam3d(name: str = "vit_b_ori", checkpoint: str | os.PathLike[str] | None = None) -> Sam3D:
    """Build a registered 3D SAM in eval mode, loading ``checkpoint`` strictly when given."""
    if name not in SAM3D_CONFIGS:
        raise InputError(f"unknown 3D SAM configuration {name!r}; choose one of {sorted(SAM3D_CONFIGS)}")
    model = Sam3D(SAM3D_CONFIGS[name])
    if checkpoint is not None:
        load_strict(model, read_state_dict(checkpoint), f"checkpoint {checkpoint}")
    return model.eval()
