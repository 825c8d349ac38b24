"""The student: a 3-D U-Net from MONAI parts, input (B, 2, X, Y, Z) = [CT, PET], output 14 logits.

Builders are registered by name so training and inference rebuild exactly the same network from the
name and arguments a checkpoint carries.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch.nn as nn
from monai.networks.nets import UNet

from mudo_app.labels import NUM_CLASSES


def _unet(
    channels: Sequence[int],
    in_channels: int = 2,
    out_channels: int = NUM_CLASSES,
    num_res_units: int = 1,
    full_resolution: bool = False,
) -> nn.Module:
    """MONAI's UNet whose levels each halve the grid (stride 2); with ``full_resolution`` the first
    level keeps the input grid (stride 1)."""
    strides = (2,) * (len(channels) - 1)
    if full_resolution:
        strides = (1, *strides[1:])
    return UNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=channels,
        strides=strides,
        num_res_units=num_res_units,
    )


# GFLOPs per (1, 2, 128, 128, 128) forward, torch FlopCounterMode: unet_lite 12.7, unet_fullres 22.2,
# unet_small 42.6, unet 89.5 (the method's reference student: 291.6; tests/models/test_student.py checks
# the first two). CPU time of that forward on 2 cores: unet_lite 0.19 s, unet_small 0.47 s, unet ~1 s.
STUDENTS: dict[str, Callable[..., nn.Module]] = {
    # 2.0 M parameters; 4 down-samplings, one convolution per level (input sides multiples of 16).
    # The default student: at most 1/10 of the reference's cost (see README, "Choosing the student").
    "unet_lite": lambda num_res_units=0, **kw: _unet((16, 32, 64, 128, 256), num_res_units=num_res_units, **kw),
    # unet_lite below a thin full-resolution level (4 channels, stride 1): the last layer sees features
    # of the input grid, not only of the half-resolution one (small lesions). 2.0 M parameters.
    "unet_fullres": lambda num_res_units=0, **kw: _unet(
        (4, 16, 32, 64, 128, 256), num_res_units=num_res_units, full_resolution=True, **kw
    ),
    # 0.6 M parameters; strided MONAI UNet, 3 down-samplings (input sides must be multiples of 8)
    "unet_small": lambda **kw: _unet((16, 32, 64, 128), **kw),
    # 2.4 M parameters
    "unet": lambda **kw: _unet((32, 64, 128, 256), **kw),
}


def build_student(name: str = "unet_lite", **kwargs: Any) -> nn.Module:
    """Build a registered student; ``kwargs`` (``in_channels``, ``out_channels``...) go to the builder."""
    if name not in STUDENTS:
        raise ValueError(f"unknown student {name!r}; choose one of {sorted(STUDENTS)}")
    return STUDENTS[name](**kwargs)


def split_head(model: nn.Module) -> tuple[nn.Module, nn.ConvTranspose3d | None]:
    """``(body, head)`` with ``model(x) == head(body(x))`` when the network ends in a plain transposed
    convolution (MONAI's UNet with ``num_res_units=0``: unet_lite, unet_fullres; any ``nn.Sequential``
    whose last layer is one), else ``(model, None)``.

    The head is linear, so a sliding window can blend the body's features and apply the head once to
    the whole volume instead of once per overlapping window (:func:`mudo_app.predict.predict_arrays`).
    """
    if isinstance(model, UNet):  # its forward is its .model's
        body, head = split_head(model.model)
        return (body, head) if head is not None else (model, None)
    if not isinstance(model, nn.Sequential) or len(model) == 0:
        return model, None
    *front, last = list(model.children())
    if isinstance(last, nn.ConvTranspose3d) and last.groups == 1 and tuple(last.dilation) == (1, 1, 1):
        return nn.Sequential(*front), last
    inner, head = split_head(last)
    if head is None:
        return model, None
    return nn.Sequential(*front, inner), head
