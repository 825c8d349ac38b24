"""The stand-in teachers' decoder stage: click steps with the image encoder frozen, after the others."""

from dataclasses import replace

import pytest
import torch

from mudo_app.errors import InputError
from mudo_app.models.sam3d import STANDIN_PET
from mudo_app.synth import PhantomSettings, generate_cases
from mudo_app.train import teacher_state
from mudo_app.train.teachers import TeacherPretrainSettings, pretrain_teacher


@pytest.fixture(scope="module")
def cases():
    return generate_cases(3, 0, 2, PhantomSettings(spacing=(8.0, 8.0, 8.0)))


SETTINGS = TeacherPretrainSettings(
    modality="CT", iterations=2, batch_size=1, clicks=2, mask_rounds=1, loss_size=32, checkpoint_every=1, seed=4
)


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_the_decoder_stage_trains_the_prompt_encoder_and_decoder_alone(cases):
    before = _weights(pretrain_teacher(cases, STANDIN_PET, SETTINGS, progress=False))
    after = _weights(pretrain_teacher(cases, STANDIN_PET, replace(SETTINGS, decoder_iterations=2), progress=False))
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"prompt_encoder", "mask_decoder"}


@pytest.mark.parametrize("stop_at", [("clicks", 2), ("decoder", 1)])
def test_a_finished_run_extended_or_a_stopped_one_resumed_equals_an_uninterrupted_one(
    cases, tmp_path, monkeypatch, stop_at
):
    """A run with 2 decoder steps, uninterrupted; the same recipe stopped after the state of ``stop_at``
    (stage, iteration) and resumed; and (for the end of the click stage) a finished run without the stage
    extended by it: all end with the same weights."""
    settings = replace(SETTINGS, decoder_iterations=2)
    whole = _weights(pretrain_teacher(cases, STANDIN_PET, settings, progress=False, state_path=tmp_path / "a.pt"))
    assert torch.load(tmp_path / "a.pt", weights_only=False)["stage"] == "decoder"
    save = teacher_state.save_state

    def save_then_stop(path, stage, iteration, *rest):
        save(path, stage, iteration, *rest)
        if (stage, iteration) == stop_at:
            raise KeyboardInterrupt

    monkeypatch.setattr(teacher_state, "save_state", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        pretrain_teacher(cases, STANDIN_PET, settings, progress=False, state_path=tmp_path / "b.pt")
    monkeypatch.setattr(teacher_state, "save_state", save)
    resumed = pretrain_teacher(cases, STANDIN_PET, settings, progress=False, state_path=tmp_path / "b.pt")
    _assert_equal(_weights(resumed), whole)
    if stop_at == ("clicks", 2):
        pretrain_teacher(cases, STANDIN_PET, SETTINGS, progress=False, state_path=tmp_path / "c.pt")
        extended = pretrain_teacher(cases, STANDIN_PET, settings, progress=False, state_path=tmp_path / "c.pt")
        _assert_equal(_weights(extended), whole)


def test_only_a_state_of_an_earlier_stage_may_differ_in_the_decoder_fields(cases, tmp_path):
    state = tmp_path / "s.pt"
    pretrain_teacher(cases, STANDIN_PET, replace(SETTINGS, iterations=1), progress=False, state_path=state)
    other = replace(SETTINGS, iterations=1, decoder_iterations=1, decoder_lr=1e-3)
    assert teacher_state.load_state(state, other, ("decoder_iterations", "decoder_lr"))["stage"] == "clicks"
    with pytest.raises(InputError, match="another teacher recipe"):
        teacher_state.load_state(state, other)  # without naming the fields of the later stage
    with pytest.raises(InputError, match="another teacher recipe"):  # a field of the click stage
        teacher_state.load_state(state, replace(other, clicks=3), ("decoder_iterations", "decoder_lr"))
    pretrain_teacher(cases, STANDIN_PET, other, progress=False, state_path=state)  # now a decoder state
    with pytest.raises(InputError, match="another teacher recipe"):
        pretrain_teacher(cases, STANDIN_PET, replace(other, decoder_iterations=2), progress=False, state_path=state)
