"""Teacher FLOPs per MuDuo iteration, counted with ``torch.utils.flop_counter.FlopCounterMode``.

Per unlabelled patch and class, each teacher decodes one prompt; the image encoder runs once per
patch (no cache), once per patch *position* ever (cache), or once per class per patch (the published
code, which re-encodes the same patch for every class).
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from mudo_app.models.sam3d import build_sam3d

REFERENCE_TFLOPS = 14.7  # the published code's teacher cost per iteration (MUDUO_METHOD.md)


def _count(fn) -> float:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return float(counter.get_total_flops())


def teacher_flops(architecture: str) -> dict[str, float]:
    """FLOPs of one encoder pass and of one decoder pass (mask prompt, 3 point prompts)."""
    model = build_sam3d(architecture).requires_grad_(False)
    size = model.config.img_size
    x = torch.zeros(1, 1, size, size, size)
    enc = _count(lambda: model.image_encoder(x))
    with torch.no_grad():
        emb = model.image_encoder(x)
    low = size // 4
    dec_mask = _count(lambda: model.decode(emb, points=None, mask=torch.zeros(1, 1, low, low, low)))
    pts = (torch.full((1, 3, 3), size / 2), torch.ones(1, 3, dtype=torch.int64))
    dec_points = _count(lambda: model.decode(emb, points=pts, mask=None))
    return {"encoder": enc, "decoder_mask": dec_mask, "decoder_points": dec_points}


def per_iteration(flops: dict[str, float], unlabelled: int, classes: int, encoder_passes: dict[str, float]) -> dict:
    """GFLOPs per iteration for both teachers (same architecture) under each encoding policy.

    ``encoder_passes``: policy name -> encoder passes per teacher per iteration.
    """
    decoders = unlabelled * classes * (flops["decoder_mask"] + flops["decoder_points"])
    out = {}
    for policy, passes in encoder_passes.items():
        total = 2 * passes * flops["encoder"] + decoders
        out[policy] = {
            "encoder_passes_per_teacher": passes,
            "gflops": round(total / 1e9, 2),
            "fraction_of_reference": round(total / (REFERENCE_TFLOPS * 1e12), 5),
        }
    return out
