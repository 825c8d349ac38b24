"""The registered students: shapes, the full-resolution level and the FLOP budget of issue 14."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from mudo_app.labels import NUM_CLASSES
from mudo_app.models.student import STUDENTS, build_student, split_head

REFERENCE_GFLOPS_128 = 291.6  # the method's reference student, per (1, 2, 128^3) forward


def _gflops_128(net: torch.nn.Module) -> float:
    """GFLOPs of one (1, 2, 128^3) forward, counted on a 64^3 input (convolutions scale with voxels)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(torch.zeros(1, 2, 64, 64, 64))
    return 8 * counter.get_total_flops() / 1e9


@pytest.mark.parametrize("name", sorted(STUDENTS))
def test_students_keep_the_grid(name):
    net = build_student(name).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 2, 32, 48, 16))
    assert out.shape == (1, NUM_CLASSES, 32, 48, 16)


def test_fullres_student_has_a_full_resolution_level_within_a_tenth_of_the_reference():
    lite, fullres = build_student("unet_lite"), build_student("unet_fullres")
    first = [m for m in fullres.modules() if isinstance(m, torch.nn.Conv3d)][0]
    assert first.stride == (1, 1, 1) and first.out_channels == 4
    assert [m for m in lite.modules() if isinstance(m, torch.nn.Conv3d)][0].stride == (2, 2, 2)
    assert _gflops_128(lite) == pytest.approx(12.7, abs=0.1)  # the figure the README states
    assert _gflops_128(fullres) == pytest.approx(22.2, abs=0.1)
    assert _gflops_128(fullres) <= REFERENCE_GFLOPS_128 / 10


def test_unknown_student_is_refused():
    with pytest.raises(ValueError, match="unknown student 'unet_huge'"):
        build_student("unet_huge")


def test_split_head_takes_off_the_last_transposed_convolution():
    """model(x) == head(body(x)) for the students without residual units; the others keep their head."""
    torch.manual_seed(0)
    for name in ("unet_lite", "unet_fullres"):
        net = build_student(name).eval()
        body, head = split_head(net)
        assert isinstance(head, torch.nn.ConvTranspose3d) and head.out_channels == NUM_CLASSES
        x = torch.randn(1, 2, 32, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(head(body(x)), net(x))
    net = build_student("unet_small")  # ends in a residual unit after its transposed convolution
    assert split_head(net) == (net, None)
    plain = torch.nn.Conv3d(2, 14, 1)
    assert split_head(plain) == (plain, None)
