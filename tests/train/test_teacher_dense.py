"""Dense supervision of the stand-in teachers' encoders: the dense loss, its head, the dense pre-training stage."""

from dataclasses import asdict

import numpy as np
import pytest
import torch

from mudo_app.models.sam3d import STANDIN_PET, build_sam3d
from mudo_app.synth import PhantomSettings, generate_cases
from mudo_app.train.teachers import TeacherPretrainSettings, pretrain_teacher


@pytest.fixture(scope="module")
def cases():
    return generate_cases(3, 0, 2, PhantomSettings(spacing=(8.0, 8.0, 8.0)))


def test_dense_loss_by_hand():
    """2 classes, one coarse voxel over 2^3 fine voxels, 2 of them class 1: soft target (0.75, 0.25)."""
    from mudo_app.train.teacher_losses import dense_loss

    classes = torch.zeros(1, 2, 2, 2, dtype=torch.long)
    classes[0, 0, 0, :] = 1
    logits = torch.zeros(1, 2, 1, 1, 1)  # softmax (0.5, 0.5)
    ce = np.log(2)  # -(0.75 + 0.25) * log 0.5
    # Dice per class: 1 - 2 * p * t / (p + t) with MONAI's smoothing 1e-5 on both sides
    dice = np.mean([1 - (2 * 0.5 * t + 1e-5) / (0.5 + t + 1e-5) for t in (0.75, 0.25)])  # (0.2, 0.3333)
    assert float(dense_loss(logits, classes, 2)) == pytest.approx(ce + dice, rel=1e-5)
    perfect = torch.tensor([-20.0, 20.0]).view(1, 2, 1, 1, 1)  # all class 1, target a quarter of it
    assert float(dense_loss(perfect, torch.ones(1, 2, 2, 2, dtype=torch.long), 2)) == pytest.approx(0, abs=1e-5)
    with pytest.raises(ValueError, match="channels"):
        dense_loss(logits, classes, 3)
    with pytest.raises(ValueError, match="multiple"):
        dense_loss(torch.zeros(1, 2, 3, 3, 3), classes, 2)


def test_dense_head_shapes_and_dense_pretraining_trains_the_encoder_only_through_it(cases, tmp_path):
    from mudo_app.train.teacher_losses import DenseHead

    assert DenseHead(96)(torch.zeros(2, 96, 8, 8, 8)).shape == (2, 14, 32, 32, 32)
    with pytest.raises(ValueError, match="multiple of 8"):
        DenseHead(12)
    base = {"modality": "CT", "iterations": 2, "batch_size": 1, "clicks": 1, "mask_rounds": 0, "loss_size": 32}
    plain = pretrain_teacher(cases, STANDIN_PET, TeacherPretrainSettings(**base), progress=False)
    dense = TeacherPretrainSettings(**base, dense_weight=1.0, checkpoint_every=1)
    with_head = pretrain_teacher(cases, STANDIN_PET, dense, progress=False, state_path=tmp_path / "s.pt")
    differs = [k for k, v in plain.state_dict().items() if not torch.equal(with_head.state_dict()[k], v)]
    assert any(k.startswith("image_encoder.") for k in differs)
    assert not any(k.startswith("dense") for k in with_head.state_dict())  # the head is not saved with it
    torch.manual_seed(0)  # the head's initial weights: drawn right after the model's
    build_sam3d("standin_small")
    initial = DenseHead(96).state_dict()
    trained = torch.load(tmp_path / "s.pt", weights_only=False)["dense_head"]  # kept for a resume
    assert set(trained) == set(initial) and all(not torch.equal(trained[k], initial[k]) for k in initial)


def test_class_fractions_equal_the_pooled_one_hot_map():
    from mudo_app.train.teacher_losses import class_fractions

    classes = torch.randint(0, 5, (2, 8, 8, 8), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    pooled = torch.nn.functional.avg_pool3d(
        torch.nn.functional.one_hot(classes.long(), 5).permute(0, 4, 1, 2, 3).float(), 4
    )
    assert torch.equal(class_fractions(classes, 2, 5), pooled)
    assert torch.equal(class_fractions(classes, 8, 5).argmax(1), classes.long())  # no pooling: one-hot


@pytest.mark.parametrize("stop_at", [("dense", 1), ("dense", 2), ("clicks", 1)])
def test_dense_pretraining_stage_trains_the_encoder_alone_and_resumes_exactly(cases, tmp_path, monkeypatch, stop_at):
    """dense_pretrain_iterations = 2, then 2 click steps; stopped after the state of ``stop_at`` (stage,
    iteration) was written and resumed, the weights equal an uninterrupted run's. After the dense stage
    only the image encoder differs from the initial weights (the prompt encoder and decoder are untouched)."""
    from mudo_app.train import teacher_state

    settings = TeacherPretrainSettings(
        modality="CT",
        iterations=2,
        batch_size=1,
        clicks=1,
        mask_rounds=0,
        loss_size=32,
        checkpoint_every=1,
        dense_pretrain_iterations=2,
        seed=2,
    )
    whole = pretrain_teacher(cases, STANDIN_PET, settings, progress=False, state_path=tmp_path / "a.pt")
    save = teacher_state.save_state

    def save_then_stop(path, stage, iteration, *rest):
        save(path, stage, iteration, *rest)
        if (stage, iteration) == stop_at and path.name == "b.pt":
            raise KeyboardInterrupt

    monkeypatch.setattr(teacher_state, "save_state", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        pretrain_teacher(cases, STANDIN_PET, settings, progress=False, state_path=tmp_path / "b.pt")
    monkeypatch.setattr(teacher_state, "save_state", save)
    state = torch.load(tmp_path / "b.pt", weights_only=False)
    assert (state["stage"], state["iteration"]) == stop_at and "dense_head" in state
    if stop_at == ("dense", 2):
        torch.manual_seed(2)
        initial = build_sam3d("standin_small").state_dict()
        changed = {k.split(".")[0] for k, v in state["model"].items() if not torch.equal(v, initial[k])}
        assert changed == {"image_encoder"}
    resumed = pretrain_teacher(cases, STANDIN_PET, settings, progress=False, state_path=tmp_path / "b.pt")
    for k, v in whole.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=0)
    for run in ("a", "b"):  # the finished dense stage is kept beside the state the click stage overwrote
        kept = torch.load(teacher_state.dense_stage_path(tmp_path / f"{run}.pt"), weights_only=False)
        assert (kept["stage"], kept["iteration"]) == ("dense", 2)
    assert torch.load(tmp_path / "b.pt", weights_only=False)["stage"] == "clicks"
    without = pretrain_teacher(
        cases,
        STANDIN_PET,
        TeacherPretrainSettings(**{**asdict(settings), "dense_pretrain_iterations": 0}),
        progress=False,
    )
    assert any(not torch.equal(without.state_dict()[k], v) for k, v in whole.state_dict().items())
