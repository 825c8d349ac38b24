"""Stand-in teacher training, saving, loading and click evaluation (tiny budgets on CPU)."""

import json

import numpy as np
import pytest
import torch

from mudo_app.cli import main
from mudo_app.errors import InputError
from mudo_app.models.sam3d import STANDIN_PET, build_sam3d
from mudo_app.models.teachers import load_teacher, save_standin
from mudo_app.synth import PhantomSettings, generate_cases
from mudo_app.train.teachers import TeacherPretrainSettings, evaluate_clicks, pretrain_teacher, sample_crop


@pytest.fixture(scope="module")
def cases():
    return generate_cases(3, 0, 2, PhantomSettings(spacing=(8.0, 8.0, 8.0)))


def test_sample_crop_target_matches_class(cases):
    rng = np.random.default_rng(0)
    image, target, cls = sample_crop(cases[0], "PET", STANDIN_PET, rng)
    assert image.shape == (128, 128, 128) and target.shape == (128, 128, 128)
    assert target.any() and 1 <= cls <= 13
    assert abs(float(image[image != image.min()].mean())) < 5  # normalised


def test_pretrain_updates_weights_and_saves_loadable_standin(cases, tmp_path):
    torch.manual_seed(0)
    before = build_sam3d("standin_small").state_dict()
    settings = TeacherPretrainSettings(modality="PET", iterations=2, batch_size=1, clicks=2, seed=0)
    model = pretrain_teacher(cases, STANDIN_PET, settings, progress=False)
    after = model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    path = tmp_path / "standin_pet.pt"
    save_standin(path, model, "standin_small", "PET", {"note": "test"})
    teacher = load_teacher("PET", path)
    assert teacher.standin and teacher.name == "seganypet_pet" and "STAND-IN" in teacher.describe()
    assert not any(p.requires_grad for p in teacher.model.parameters())
    for k, v in teacher.model.state_dict().items():
        torch.testing.assert_close(v, after[k].half().float())
    with pytest.raises(InputError, match="is a PET stand-in, not a CT teacher"):
        load_teacher("CT", path)


def test_official_checkpoint_path_is_loaded_as_vit_b_ori(tmp_path, monkeypatch):
    """A non-stand-in file goes through the strict vit_b_ori loader (here: it names the mismatch)."""
    path = tmp_path / "sam_med3d_turbo.pth"
    torch.save({"model_state_dict": build_sam3d("standin_small").state_dict(), "epoch": 1}, path)
    with pytest.raises(InputError, match="does not fit this architecture"):
        load_teacher("CT", path)
    with pytest.raises(InputError, match="not found"):
        load_teacher("CT", tmp_path / "missing.pth")
    with pytest.raises(InputError, match="CT or PET"):
        load_teacher("MR")


def test_evaluate_clicks_reports_each_present_class(cases):
    torch.manual_seed(0)
    model = build_sam3d("standin_small")
    scores = evaluate_clicks(model, STANDIN_PET, cases[:1], "PET", (1, 2), progress=False)
    present = {int(c) for c in np.unique(cases[0].label.array)} - {0}
    assert set(scores) == {1, 2}
    assert len(scores[1]) == len(present)
    assert all(0.0 <= d <= 1.0 for d in scores[2].values())


def test_cli_rejects_bad_numbers(capsys, tmp_path):
    assert main(["pretrain-teachers", "--out", str(tmp_path), "--iterations", "0"]) == 2
    assert "--iterations must be at least 1" in capsys.readouterr().err


def test_imperfect_mask_is_a_shifted_noisy_soft_mask_at_decoder_resolution():
    import torch

    from mudo_app.train.teachers import imperfect_mask

    targets = torch.zeros(3, 1, 32, 32, 32)
    targets[:, :, 8:24, 8:24, 8:24] = 1
    m = imperfect_mask(targets, np.random.default_rng(0), max_shift=0)
    assert m.shape == (3, 1, 8, 8, 8) and float(m.min()) >= 0 and float(m.max()) <= 1
    inside, outside = m[:, :, 2:6, 2:6, 2:6], m[:, :, :1]
    assert float(inside.min()) >= 0.5 and float(outside.max()) <= 0.3  # scale U(0.5, 1), noise <= 0.3


def test_pretrain_command_writes_a_loadable_standin_and_a_report_that_reproduces_it(tmp_path):
    """What ``muduo pretrain-teachers`` writes (a tiny run): the stand-in, and a report naming the exact
    command, the data and the zero-shot Dice of the weights it wrote."""
    args = ["--cases", "1", "--eval-cases", "1", "--iterations", "1", "--seed", "3"]
    assert main(["pretrain-teachers", "--out", str(tmp_path), "--modality", "ct", *args, "--quiet"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["command"] == "muduo pretrain-teachers " + " ".join(args) and "CPU" in report["machine"]
    entry = report["teachers"]["CT"]
    assert entry["data"] == "synthetic phantoms, seed 1003, cases 0..0"
    assert set(entry["zero_shot_dice"]) == {"1", "3"} and "liver" in entry["zero_shot_dice"]["1"]
    assert all(0 <= d <= 1 for per in entry["zero_shot_dice"].values() for d in per.values())
    teacher = load_teacher("CT", tmp_path / "standin_ct.pt")
    assert teacher.standin and "STAND-IN" in teacher.describe()
    assert not (tmp_path / "standin_pet.pt").exists()
