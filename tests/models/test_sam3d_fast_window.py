"""The exact padded-window shortcut equals the padded reference; other grids fall back."""

import pytest
import torch

from mudo_app.models.sam3d import fast_window, image_encoder
from mudo_app.models.sam3d.image_encoder import Block3D, ImageEncoderViT3D


def _random_encoder(dtype, img_size=128, window=14, seed=0):
    torch.manual_seed(seed)
    enc = ImageEncoderViT3D(img_size, 16, 1, 48, 2, 2, 4.0, 24, window, (1,)).to(dtype)
    with torch.no_grad():
        for p in enc.parameters():  # non-zero biases and relative positions everywhere
            p.copy_(torch.randn_like(p) * 0.3)
    return enc


def _both_paths(enc, x):
    with torch.no_grad():
        fast = enc(x)
        enc.set_fast_path(False)
        padded = enc(x)
    return fast, padded


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("batch", [1, 2])
def test_fast_equals_padded(dtype, tol, batch):
    enc = _random_encoder(dtype)
    x = torch.randn(batch, 1, 128, 128, 128, dtype=dtype)
    fast, padded = _both_paths(enc, x)
    assert float((fast - padded).norm() / padded.norm()) < tol


def test_large_logits_stay_finite():
    """Log-space evaluation: big relative-position terms must not overflow."""
    enc = _random_encoder(torch.float32, seed=3)
    with torch.no_grad():
        for blk in enc.blocks:
            for t in (blk.attn.rel_pos_d, blk.attn.rel_pos_h, blk.attn.rel_pos_w):
                t.mul_(40.0)
    fast, padded = _both_paths(enc, torch.randn(1, 1, 128, 128, 128))
    assert torch.isfinite(fast).all()
    assert float((fast - padded).norm() / padded.norm()) < 1e-4


def _forbid_fast(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("fast path used")

    monkeypatch.setattr(image_encoder, "padded_window_attention", boom)


def test_multi_window_grid_uses_the_padded_path(monkeypatch):
    enc = _random_encoder(torch.float32, img_size=160, window=6)  # grid 10 > window 6: several windows
    _forbid_fast(monkeypatch)
    with torch.no_grad():
        out = enc(torch.randn(1, 1, 160, 160, 160))
    assert out.shape == (1, 24, 10, 10, 10)


def test_non_cubic_grid_uses_the_padded_path(monkeypatch):
    blk = Block3D(32, 2, 2.0, 14, 8)
    _forbid_fast(monkeypatch)
    with torch.no_grad():
        out = blk(torch.randn(1, 8, 8, 6, 32))  # padded to one 14^3 window, cropped back
    assert out.shape == (1, 8, 8, 6, 32)


def test_fast_path_is_used_for_one_window(monkeypatch):
    calls = []
    original = fast_window.padded_window_attention

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(image_encoder, "padded_window_attention", spy)
    blk = Block3D(32, 2, 2.0, 14, 8)
    with torch.no_grad():
        blk(torch.randn(1, 8, 8, 8, 32))
    assert calls == [1]


def test_shortcut_rejects_grid_not_smaller_than_window():
    q = torch.zeros(1, 8, 4)
    with pytest.raises(ValueError, match="grid 2 < window 2"):
        fast_window.padded_window_attention(q, q, q, q[:, 0], q[:, 0], q[:, 0], [torch.zeros(3, 4)] * 3, 2, 2, 1.0)
