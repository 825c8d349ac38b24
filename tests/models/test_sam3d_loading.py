"""Checkpoint loading: bare or wrapped state dicts, strictness, and bad files."""

import argparse
import os
import pickle

import pytest
import torch

from mudo_app.errors import InputError
from mudo_app.models.sam3d import build_sam3d, read_state_dict


@pytest.fixture(scope="module")
def small_state():
    torch.manual_seed(0)
    return build_sam3d("standin_small").state_dict()


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_bare_state_dict_round_trip(tmp_path, small_state):
    path = tmp_path / "bare.pth"
    torch.save(small_state, path)
    model = build_sam3d("standin_small", checkpoint=path)
    assert _same(model.state_dict(), small_state)
    assert not model.training


def test_training_checkpoint_with_args_and_optimiser(tmp_path, small_state):
    path = tmp_path / "train.pth"
    opt_state = {"state": {}, "param_groups": [{"lr": 0.01, "params": [0, 1]}]}
    torch.save(
        {
            "model_state_dict": small_state,
            "args": argparse.Namespace(lr=8e-5, model_type="vit_b_ori"),
            "optimizer_state_dict": opt_state,
            "losses": [0.5, 0.25],
            "epoch": 3,
        },
        path,
    )
    assert _same(build_sam3d("standin_small", checkpoint=path).state_dict(), small_state)


def test_other_architecture_names_the_keys(tmp_path, small_state):
    path = tmp_path / "small.pth"
    torch.save(small_state, path)
    with pytest.raises(InputError, match="mis-shaped") as err:
        build_sam3d("vit_b_ori", checkpoint=path)
    assert "120 missing (image_encoder.blocks.10." in str(err.value)  # vit_b_ori has 12 blocks, the stand-in 4
    assert "image_encoder.blocks.0.attn.qkv.weight: (576, 192) != (2304, 768)" in str(err.value)


def test_extra_and_missing_keys_are_named(tmp_path, small_state):
    state = dict(small_state)
    del state["mask_decoder.iou_token.weight"]
    state["adapter.weight"] = torch.zeros(3)
    path = tmp_path / "odd.pth"
    torch.save(state, path)
    with pytest.raises(
        InputError, match=r"1 missing \(mask_decoder.iou_token.weight\); 1 unexpected \(adapter.weight\)"
    ):
        build_sam3d("standin_small", checkpoint=path)


def test_truncated_file(tmp_path, small_state):
    path = tmp_path / "cut.pth"
    torch.save(small_state, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cannot be loaded safely"):
        read_state_dict(path)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_arbitrary_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model_state_dict": {"x": torch.zeros(1)}, "payload": _Evil()}, path)
    with pytest.raises(InputError, match="cannot be loaded safely"):
        read_state_dict(path)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(InputError):
        read_state_dict(plain)


@pytest.mark.parametrize("payload, kind", [([1, 2, 3], "list"), ({"a": 1}, "dict"), ({}, "dict")])
def test_not_a_state_dict(tmp_path, payload, kind):
    path = tmp_path / "x.pth"
    torch.save(payload, path)
    with pytest.raises(InputError, match=f"holds no state dict.*{kind}"):
        read_state_dict(path)


def test_missing_file_and_unknown_name(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_state_dict(tmp_path / "nope.pth")
    with pytest.raises(InputError, match="unknown 3D SAM configuration"):
        build_sam3d("vit_h")
