"""Registry of 3D SAM configurations and strict, safe checkpoint loading.

``build_sam3d("vit_b_ori", checkpoint=path)`` builds SAM-Med3D / SegAnyPET's published architecture
and loads an official checkpoint; ``"standin_small"`` is the small stand-in trained by this project.
"""

from __future__ import annotations

import argparse
import collections
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn as nn

from mudo_app.errors import InputError
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
    global_attn_indexes: Tuple[int, ...] = (2, 5, 8, 11)
    out_chans: int = 384
    decoder_heads: int = 8
    decoder_mlp_dim: int = 2048
    iou_head_hidden_dim: int = 256
    mask_in_chans: int = 16


SAM3D_CONFIGS: Dict[str, Sam3DConfig] = {
    # SAM-Med3D(-turbo) and SegAnyPET: 100.5 M parameters
    "vit_b_ori": Sam3DConfig(),
    # the project's stand-in teachers: same modules and input contract, 4 blocks of 192-d, 96-d prompts
    "standin_small": Sam3DConfig(embed_dim=192, depth=4, num_heads=4, global_attn_indexes=(1, 3), out_chans=96,
                                 decoder_heads=4, decoder_mlp_dim=384, iou_head_hidden_dim=96),
}


class Sam3D(nn.Module):
    """Image encoder, prompt encoder and mask decoder, used as the published model uses them."""

    def __init__(self, cfg: Sam3DConfig):
        super().__init__()
        self.config = cfg
        grid = cfg.img_size // cfg.patch_size
        self.image_encoder = ImageEncoderViT3D(cfg.img_size, cfg.patch_size, 1, cfg.embed_dim, cfg.depth,
                                               cfg.num_heads, 4.0, cfg.out_chans, cfg.window_size,
                                               cfg.global_attn_indexes)
        self.prompt_encoder = PromptEncoder3D(cfg.out_chans, (grid,) * 3, (cfg.img_size,) * 3, cfg.mask_in_chans)
        self.mask_decoder = MaskDecoder3D(cfg.out_chans, 3, 2, cfg.decoder_heads, cfg.decoder_mlp_dim, 3,
                                          cfg.iou_head_hidden_dim)

    def decode(self, embedding: torch.Tensor, points=None, mask: Optional[torch.Tensor] = None,
               multimask_output: bool = False):
        """Prompts -> (low-res logits, IoU). ``points`` = (coords (B, N, 3), labels (B, N)) or None."""
        sparse, dense = self.prompt_encoder(points=points, masks=mask)
        return self.mask_decoder(embedding, self.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output)


# What an official training checkpoint may hold besides tensors (SAM-Med3D saves argparse args,
# optimiser state, loss lists...). Nothing else is ever unpickled.
_SAFE_GLOBALS = [argparse.Namespace, collections.OrderedDict, np.dtype, np.ndarray,
                 np.core.multiarray._reconstruct, np.core.multiarray.scalar, type(np.dtype(np.float32))]
for _t in (np.float32, np.float64, np.int64, np.int32, np.bool_):
    _SAFE_GLOBALS.append(type(np.dtype(_t)))


def read_state_dict(path: Union[str, os.PathLike]) -> Mapping[str, torch.Tensor]:
    """Read a bare state dict or a training checkpoint holding one under ``model_state_dict``.

    Uses ``torch.load(weights_only=True)`` with an allow-list; raises :class:`InputError` for a
    missing or truncated file, an arbitrary pickle, or a file that holds no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"checkpoint {path} cannot be loaded safely (truncated, not a PyTorch file, or it "
                         f"needs code execution to unpickle): {first}") from exc
    if isinstance(obj, Mapping) and "model_state_dict" in obj:
        obj = obj["model_state_dict"]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(f"checkpoint {path} holds no state dict (a mapping of names to tensors), "
                         f"got {type(obj).__name__}")
    return obj


def load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load ``state`` into ``model`` strictly; a mismatch names missing, unexpected and mis-shaped keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    misshaped = sorted(f"{k}: {tuple(state[k].shape)} != {tuple(own[k].shape)}"
                       for k in set(own) & set(state) if tuple(state[k].shape) != tuple(own[k].shape))
    if missing or unexpected or misshaped:
        def _fmt(name, items):
            return f"{len(items)} {name} ({', '.join(items[:5])}{', ...' if len(items) > 5 else ''})" if items else ""
        parts = [p for p in (_fmt("missing", missing), _fmt("unexpected", unexpected),
                             _fmt("mis-shaped", misshaped)) if p]
        raise InputError(f"{source} does not fit this architecture: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def build_sam3d(name: str = "vit_b_ori", checkpoint: Optional[Union[str, os.PathLike]] = None) -> Sam3D:
    """Build a registered 3D SAM in eval mode, loading ``checkpoint`` strictly when given."""
    if name not in SAM3D_CONFIGS:
        raise InputError(f"unknown 3D SAM configuration {name!r}; choose one of {sorted(SAM3D_CONFIGS)}")
    model = Sam3D(SAM3D_CONFIGS[name])
    if checkpoint is not None:
        load_strict(model, read_state_dict(checkpoint), f"checkpoint {checkpoint}")
    return model.eval()


def config_dict(name: str) -> dict:
    return {"name": name, **asdict(SAM3D_CONFIGS[name])}
