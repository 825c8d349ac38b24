"""The shipped student (mudo_app/assets/student): fp16 weights that load into the fp32 network, and scores
that are what its report says (the README quotes the report)."""

import json

import numpy as np
import pytest
import torch

from mudo_app.bench.scoring import TEST_SEED_OFFSET, score_student
from mudo_app.models.checkpoint import load_student, save_student
from mudo_app.models.student import build_student
from mudo_app.resources import shipped_student, shipped_student_dir
from mudo_app.synth import PhantomSettings, generate_cases


def test_half_checkpoints_store_fp16_and_load_into_fp32(tmp_path):
    torch.manual_seed(0)
    net = build_student("unet_small")
    path = save_student(tmp_path / "s.pt", net, "unet_small", half=True)
    stored = torch.load(path, weights_only=True)["state_dict"]
    floats = [v for v in stored.values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    model, _, _ = load_student(path)
    for name, value in model.state_dict().items():
        if value.is_floating_point():
            assert value.dtype == torch.float32
            assert torch.equal(value, net.state_dict()[name].half().float()), name


def test_the_shipped_student_is_fp16_and_names_how_it_was_made():
    ckpt = torch.load(shipped_student(), weights_only=True)
    assert all(v.dtype == torch.float16 for v in ckpt["state_dict"].values() if v.is_floating_point())
    report = json.loads((shipped_student_dir() / "report.json").read_text())
    assert report["chosen"] in report["candidates"]
    assert ckpt["provenance"]["config"]["method"] == report["candidates"][report["chosen"]]["method"]
    assert ckpt["provenance"]["shipped"]["fp16"] is True
    assert shipped_student().stat().st_size < 8e6  # a few MB


@pytest.mark.slow
def test_the_shipped_student_scores_what_its_report_says():
    report = json.loads((shipped_student_dir() / "report.json").read_text())
    cases = generate_cases(TEST_SEED_OFFSET, 0, 6, PhantomSettings())
    torch.set_num_threads(2)
    model, prep, meta = load_student(shipped_student())
    score = score_student(model, prep, meta, cases)
    assert np.isclose(score["dice"], report["shipped_test"]["dice"], atol=1e-4)
    lesion = score["lesion_autopet"]["dice"]
    assert np.isclose(lesion, report["shipped_test"]["lesion_autopet"]["dice"], atol=1e-4)
