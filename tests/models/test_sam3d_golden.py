"""Conformance: our 3D SAM loads the published ``vit_b_ori`` keys and computes the published function.

Fixture: ../shared/specs/sam3d (deterministic weights + golden outputs of the published code).
"""

import numpy as np
import pytest
import torch

from mudo_app.models.sam3d import build_sam3d
from mudo_app.models.sam3d.conformance import deterministic_model, fixture_module
from tests.conftest import SAM3D_SPECS

TOL = 1e-4


@pytest.fixture(scope="module")
def dw():
    if not (SAM3D_SPECS / "deterministic_weights.py").is_file():
        pytest.skip(f"3D SAM conformance fixture not found: {SAM3D_SPECS}")
    return fixture_module(SAM3D_SPECS)


@pytest.fixture(scope="module")
def golden_model(dw):
    return deterministic_model(SAM3D_SPECS, dw)


@pytest.fixture(scope="module")
def golden():
    return dict(np.load(SAM3D_SPECS / "golden_vit_b_ori.npz"))


@pytest.fixture(scope="module")
def embedding(golden_model, dw):
    image = dw.golden_inputs()[0]
    with torch.no_grad():
        return golden_model.image_encoder(torch.from_numpy(image))


def _rel(out: torch.Tensor, ref: np.ndarray) -> float:
    return float(np.linalg.norm(out.numpy() - ref) / np.linalg.norm(ref))


def test_state_dict_keys_and_shapes_equal_the_published_ones(dw):
    spec = dw.read_spec(SAM3D_SPECS / "keys_vit_b_ori.tsv")
    sd = build_sam3d("vit_b_ori").state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == dict(spec)
    n_params = sum(p.numel() for p in build_sam3d("vit_b_ori").parameters())
    assert n_params == 100_509_232


def test_image_embedding_matches_golden(embedding, golden):
    """The default encoder (padded-window shortcut in the 8 windowed blocks) matches the golden."""
    assert embedding.shape == (1, 384, 8, 8, 8)
    assert _rel(embedding, golden["image_embedding"]) < TOL


def test_padded_reference_path_matches_golden(golden_model, golden, dw):
    try:
        golden_model.image_encoder.set_fast_path(False)
        with torch.no_grad():
            out = golden_model.image_encoder(torch.from_numpy(dw.golden_inputs()[0]))
    finally:
        golden_model.image_encoder.set_fast_path(True)
    assert _rel(out, golden["image_embedding"]) < TOL


@pytest.mark.parametrize(
    "case, use_points, use_mask, multimask",
    [
        ("points", True, False, False),
        ("mask", False, True, False),
        ("points_mask_multimask", True, True, True),
    ],
)
def test_decoder_outputs_match_golden(golden_model, embedding, golden, dw, case, use_points, use_mask, multimask):
    _, coords, labels, mask = dw.golden_inputs()
    points = (torch.from_numpy(coords), torch.from_numpy(labels)) if use_points else None
    mask_t = torch.from_numpy(mask) if use_mask else None
    with torch.no_grad():
        logits, iou = golden_model.decode(embedding, points=points, mask=mask_t, multimask_output=multimask)
    ref_logits, ref_iou = golden[f"{case}_low_res_logits"], golden[f"{case}_iou"]
    assert logits.shape == ref_logits.shape and iou.shape == ref_iou.shape
    assert _rel(logits, ref_logits) < TOL
    assert _rel(iou, ref_iou) < TOL


def test_textbook_relative_position_would_fail_the_golden_test(golden_model, golden, dw):
    """The conformance test tells the published rel-pos term from the textbook one."""
    from mudo_app.models.sam3d import image_encoder as enc
    from mudo_app.models.sam3d.rel_pos import rel_pos_table

    def textbook(q, tables, grid):
        d, h, w = grid
        n, _, c = q.shape
        rd, rh, rw = (rel_pos_table(s, t) for s, t in zip(grid, tables))
        rq = q.reshape(n, d, h, w, c)
        bd = torch.einsum("nabec,akc->nabek", rq, rd)
        bh = torch.einsum("nabec,bkc->nabek", rq, rh)
        bw = torch.einsum("nabec,ekc->nabek", rq, rw)
        bias = bd[..., :, None, None] + bh[..., None, :, None] + bw[..., None, None, :]
        return bias.reshape(n, d * h * w, d * h * w)

    image = torch.from_numpy(dw.golden_inputs()[0])
    original = enc.relative_position_bias
    enc.relative_position_bias = textbook
    try:
        golden_model.image_encoder.set_fast_path(False)  # the reference path, where the textbook form is defined
        with torch.no_grad():
            out = golden_model.image_encoder(image)
    finally:
        enc.relative_position_bias = original
        golden_model.image_encoder.set_fast_path(True)
    assert _rel(out, golden["image_embedding"]) > 1e-3


def test_prompt_encoder_called_the_upstream_way_matches_golden(golden_model, embedding, golden, dw):
    """Code written against SAM-Med3D calls ``prompt_encoder(points=..., boxes=None, masks=...)`` and then
    the decoder by keyword: it runs unchanged and computes the published function."""
    _, coords, labels, mask = dw.golden_inputs()
    points, mask_t = (torch.from_numpy(coords), torch.from_numpy(labels)), torch.from_numpy(mask)
    pe = golden_model.prompt_encoder
    with torch.no_grad():
        sparse, dense = pe(points=points, boxes=None, masks=mask_t)
        logits, iou = golden_model.mask_decoder(
            image_embeddings=embedding,
            image_pe=pe.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
        )
        positional = pe(points, None, mask_t)  # upstream's argument order
    assert _rel(logits, golden["points_mask_multimask_low_res_logits"]) < TOL
    assert _rel(iou, golden["points_mask_multimask_iou"]) < TOL
    assert torch.equal(positional[0], sparse) and torch.equal(positional[1], dense)
    with pytest.raises(ValueError, match="box prompts are not supported"):
        pe(points=None, boxes=torch.zeros(1, 6), masks=None)
