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
from mudo_app.train.teacher_eval import evaluate_clicks
from mudo_app.train.teachers import TeacherPretrainSettings, pretrain_teacher, sample_crop


@pytest.fixture(scope="module")
def cases():
    return generate_cases(3, 0, 2, PhantomSettings(spacing=(8.0, 8.0, 8.0)))


def test_sample_crop_target_matches_class(cases):
    rng = np.random.default_rng(0)
    image, [target], [cls], label_map = sample_crop(cases[0], "PET", STANDIN_PET, rng)
    assert image.shape == (128, 128, 128) and target.shape == (128, 128, 128)
    assert target.any() and 1 <= cls <= 13
    assert label_map.dtype == np.uint8 and label_map.shape == (128, 128, 128)
    assert (label_map[target] == cls).all() and set(np.unique(label_map)) <= set(range(14))
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
    assert main(["pretrain-teachers", "--out", str(tmp_path), "--lesion-share", "1.5"]) == 2
    assert "--lesion-share must lie in [0, 1], got 1.5" in capsys.readouterr().err
    assert main(["pretrain-teachers", "--out", str(tmp_path), "--dense-pretrain-iterations", "-1"]) == 2
    assert "--dense-pretrain-iterations must be >= 0, got -1" in capsys.readouterr().err
    assert main(["pretrain-teachers", "--out", str(tmp_path), "--decoder-iterations", "-2"]) == 2
    assert "--decoder-iterations must be >= 0, got -2" in capsys.readouterr().err


def test_imperfect_mask_is_a_shifted_noisy_soft_mask_at_decoder_resolution():
    import torch

    from mudo_app.train.teacher_losses import imperfect_mask

    targets = torch.zeros(3, 1, 32, 32, 32)
    targets[:, :, 8:24, 8:24, 8:24] = 1
    m = imperfect_mask(targets, np.random.default_rng(0), max_shift=0)
    assert m.shape == (3, 1, 8, 8, 8) and float(m.min()) >= 0 and float(m.max()) <= 1
    inside, outside = m[:, :, 2:6, 2:6, 2:6], m[:, :, :1]
    assert float(inside.min()) >= 0.5 and float(outside.max()) <= 0.3  # scale U(0.5, 1), noise <= 0.3


def test_pretrain_command_writes_a_loadable_standin_and_a_report_that_reproduces_it(tmp_path):
    """What ``muduo pretrain-teachers`` writes (a tiny run): the stand-in, and a report naming the exact
    command, the data and the zero-shot Dice of the weights it wrote."""
    args = ["--cases", "1", "--eval-cases", "1", "--iterations", "1", "--seed", "3", "--objects-per-crop", "2"]
    args += ["--lesion-share", "0.5", "--multimask", "--dense-pretrain-iterations", "1", "--decoder-iterations", "1"]
    work = ["--work", str(tmp_path / "work")]
    assert main(["pretrain-teachers", "--out", str(tmp_path), "--modality", "ct", *args, *work, "--quiet"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["command"] == "muduo pretrain-teachers " + " ".join(args) and "CPU" in report["machine"]
    entry = report["teachers"]["CT"]
    assert entry["data"] == "synthetic foundation corpus, seed 731001, cases 0..0"
    assert entry["settings"]["objects_per_crop"] == 2 and entry["settings"]["lesion_share"] == 0.5
    assert report["held_out"] == "synthetic foundation corpus, held-out seed 731002, cases 0..0"
    assert set(entry["zero_shot_dice"]) == {"1", "3"} and "liver" in entry["zero_shot_dice"]["1"]
    assert set(entry["random_first_click_dice"]) == {"1", "3"} and entry["mask_prompt"]["objects"] >= 1
    assert entry["settings"]["multimask"] and set(entry["multimask_dice"]) == {"1", "3"}
    assert entry["settings"]["dense_pretrain_iterations"] == 1 and entry["settings"]["dense_weight"] == 0
    assert entry["settings"]["decoder_iterations"] == 1
    assert set(entry["random_first_click_multimask_mean"]) == {"1", "3"}
    assert all(0 <= d <= 1 for per in entry["zero_shot_dice"].values() for d in per.values())
    teacher = load_teacher("CT", tmp_path / "standin_ct.pt")
    assert teacher.standin and "STAND-IN" in teacher.describe()
    assert not (tmp_path / "standin_pet.pt").exists()


def _two_lesion_label() -> np.ndarray:
    label = np.zeros((20, 20, 20), np.uint8)
    label[2:8, 2:8, 2:8] = 1  # liver
    label[12:15, 12:15, 12:15] = 13  # one lesion
    label[12:14, 2:4, 16:18] = 13  # another, not touching it
    return label


def test_object_map_gives_each_lesion_component_its_own_id():
    from mudo_app.train.teachers import LESION_OBJECT_BASE, object_classes, object_map

    m = object_map(_two_lesion_label())
    back = object_classes(m)  # and back to the product's classes: the label map itself
    assert back.dtype == np.uint8 and np.array_equal(back, _two_lesion_label())
    assert m.dtype == np.int16
    assert set(np.unique(m)) == {0, 1, LESION_OBJECT_BASE, LESION_OBJECT_BASE + 1}
    # components are numbered in C (scan) order: the 2x2x2 lesion at y = 2 comes before the cube at y = 12
    assert (m == LESION_OBJECT_BASE).sum() == 8 and (m == LESION_OBJECT_BASE + 1).sum() == 27


def _case_with(label: np.ndarray):
    from mudo_app.io.datastore import Case
    from mudo_app.io.volume import Volume

    aff = np.diag([8.0, 8.0, 8.0, 1.0])
    ct = Volume(np.where(label > 0, 60, -100).astype(np.int16), aff)
    pet = Volume(np.where(label == 13, 8.0, 1.0).astype(np.float32), aff)
    return Case("c", ct, pet, Volume(label, aff))


def test_training_objects_pick_lesions_by_their_share():
    from mudo_app.train.teachers import LESION_OBJECT_BASE, TrainingObjects

    objects = TrainingObjects(_case_with(_two_lesion_label()))
    rng = np.random.default_rng(0)
    assert {objects.pick(rng, 0.0) for _ in range(50)} == {1}
    assert {objects.pick(rng, 1.0) for _ in range(50)} == {LESION_OBJECT_BASE, LESION_OBJECT_BASE + 1}
    lesions_only = _two_lesion_label()
    lesions_only[lesions_only == 1] = 0
    assert objects.pick(rng, 0.0) == 1
    assert TrainingObjects(_case_with(lesions_only)).pick(rng, 0.0) >= LESION_OBJECT_BASE  # no organ to pick


def test_sample_crop_target_is_a_single_lesion_component():
    from scipy import ndimage

    case = _case_with(_two_lesion_label())
    for seed in range(4):
        _, [target], [cls], _ = sample_crop(case, "PET", STANDIN_PET, np.random.default_rng(seed), lesion_share=1.0)
        assert cls == 13 and target.any()
        assert ndimage.label(target, structure=ndimage.generate_binary_structure(3, 2))[1] == 1


def test_sample_crop_adds_the_crops_other_objects_then_repeats_the_picked_one():
    """The whole 160 mm case lies in the 256 mm crop: a liver and two lesions, three objects to click."""
    case = _case_with(_two_lesion_label())
    for seed in range(3):
        image, [target], [cls], label_map = sample_crop(case, "PET", STANDIN_PET, np.random.default_rng(seed))
        image5, targets, classes, label_map5 = sample_crop(
            case, "PET", STANDIN_PET, np.random.default_rng(seed), count=5
        )
        np.testing.assert_array_equal(label_map5, label_map)
        np.testing.assert_array_equal(image5, image)  # count 1's draws come first: the same crop
        np.testing.assert_array_equal(targets[0], target)
        assert classes[0] == cls and len(targets) == len(classes) == 5
        distinct = targets[:3]
        assert all(t.any() for t in distinct) and sorted(classes[:3]) == [1, 13, 13]
        assert not any((a & b).any() for i, a in enumerate(distinct) for b in distinct[i + 1 :])
        for repeat in targets[3:]:  # only three objects: the picked one again
            np.testing.assert_array_equal(repeat, target)
    liver_only = _two_lesion_label()
    liver_only[liver_only == 13] = 0
    _, targets, classes, _ = sample_crop(_case_with(liver_only), "CT", STANDIN_PET, np.random.default_rng(0), count=3)
    assert classes == [1, 1, 1] and all(np.array_equal(t, targets[0]) for t in targets)
    with pytest.raises(ValueError, match="count"):
        sample_crop(case, "CT", STANDIN_PET, np.random.default_rng(0), count=0)


def test_full_grid_overlap_by_hand():
    """One coarse voxel covers 2^3 crop voxels, 3 of them in the object."""
    from mudo_app.train.teacher_losses import full_grid_overlap

    full = torch.zeros(3, 1, 2, 2, 2)
    full[:2, 0, 0, 0, :] = 1
    full[:2, 0, 1, 1, 1] = 1  # samples 0 and 1: 3 object voxels; sample 2: none
    coarse = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1, 1, 1)  # sample 0 predicts the whole cell
    inter, union = full_grid_overlap(coarse, torch.nn.functional.avg_pool3d(full, 2), 2)
    assert inter.tolist() == [3.0, 0.0, 0.0]
    assert union.tolist() == [8.0, 3.0, 1.0]  # 8 predicted; 3 in the object; nothing: clamped to 1


def test_full_grid_overlap_equals_the_upsampled_count():
    from mudo_app.train.teacher_losses import full_grid_overlap

    g = torch.Generator().manual_seed(0)
    full = (torch.rand(2, 1, 32, 32, 32, generator=g) > 0.7).float()
    coarse = (torch.rand(2, 1, 16, 16, 16, generator=g) > 0.5).float()
    pred = torch.nn.functional.interpolate(coarse, scale_factor=2, mode="nearest") > 0.5
    inter, union = full_grid_overlap(coarse, torch.nn.functional.avg_pool3d(full, 2), 2)
    assert torch.equal(inter, (pred & (full > 0)).flatten(1).sum(1).float())
    assert torch.equal(union, (pred | (full > 0)).flatten(1).sum(1).float())


def test_warmup_cosine_by_hand():
    from mudo_app.train.teachers import warmup_cosine

    f = warmup_cosine(10)  # warm-up round(0.5) -> at least 1 step, then cosine over 9 steps
    assert f(0) == 1.0 and f(1) == 1.0 and f(10) == 0.0
    assert f(5) == pytest.approx(0.5 * (1 + np.cos(np.pi * 4 / 9)))  # 0.58682
    g = warmup_cosine(100, 0.1)
    assert [g(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])


def test_settings_are_checked():
    with pytest.raises(ValueError, match="modality"):
        TeacherPretrainSettings(modality="MR")
    with pytest.raises(ValueError, match="lesion_share"):
        TeacherPretrainSettings(modality="CT", lesion_share=1.5)
    with pytest.raises(ValueError, match="loss_size"):
        TeacherPretrainSettings(modality="CT", loss_size=48)
    with pytest.raises(ValueError, match="objects_per_crop"):
        TeacherPretrainSettings(modality="CT", objects_per_crop=0)
    with pytest.raises(ValueError, match="dense_weight"):
        TeacherPretrainSettings(modality="CT", dense_weight=-0.5)
    with pytest.raises(ValueError, match="dense_pretrain_iterations"):
        TeacherPretrainSettings(modality="CT", dense_pretrain_iterations=-1)
    with pytest.raises(ValueError, match="dense_pretrain_lr"):
        TeacherPretrainSettings(modality="CT", dense_pretrain_lr=0.0)
    with pytest.raises(ValueError, match="decoder_iterations"):
        TeacherPretrainSettings(modality="CT", decoder_iterations=-1)
    with pytest.raises(ValueError, match="decoder_lr"):
        TeacherPretrainSettings(modality="CT", decoder_lr=float("nan"))
    with pytest.raises(ValueError, match="lr must"):
        TeacherPretrainSettings(modality="CT", lr=-1e-4)


def test_an_interrupted_pretraining_resumes_to_the_uninterrupted_weights(cases, tmp_path, monkeypatch):
    from mudo_app.train import teacher_state

    settings = TeacherPretrainSettings(
        modality="CT", iterations=4, batch_size=1, clicks=2, checkpoint_every=2, loss_size=32, seed=1
    )
    whole = pretrain_teacher(cases, STANDIN_PET, settings, progress=False, state_path=tmp_path / "a.pt")
    save = teacher_state.save_state

    def save_then_stop(path, stage, iteration, *rest):
        save(path, stage, iteration, *rest)
        if iteration == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(teacher_state, "save_state", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        pretrain_teacher(cases, STANDIN_PET, settings, progress=False, state_path=tmp_path / "b.pt")
    monkeypatch.setattr(teacher_state, "save_state", save)
    assert torch.load(tmp_path / "b.pt", weights_only=False)["iteration"] == 2
    resumed = pretrain_teacher(cases, STANDIN_PET, settings, progress=False, state_path=tmp_path / "b.pt")
    for k, v in whole.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=0)
    assert teacher_state.training_seconds(tmp_path / "b.pt") > 0
    other = TeacherPretrainSettings(modality="CT", iterations=5, batch_size=1, clicks=2, loss_size=32)
    with pytest.raises(InputError, match="another teacher recipe"):
        pretrain_teacher(cases, STANDIN_PET, other, progress=False, state_path=tmp_path / "b.pt")


def test_degraded_prompt_lands_in_the_asked_dice_range():
    from mudo_app.train.teacher_eval import degraded_prompt

    target = torch.zeros(128, 128, 128, dtype=torch.bool)
    target[40:80, 40:80, 40:80] = True
    prompt, d = degraded_prompt(target)
    assert prompt.shape == (1, 1, 32, 32, 32) and 0.4 <= d <= 0.7
    up = torch.nn.functional.interpolate(prompt, scale_factor=4, mode="nearest")[0, 0] > 0.5
    assert d == pytest.approx(2 * float((up & target).sum()) / float(up.sum() + target.sum()))
    # a 40-voxel cube shifted along the first axis by 4, 8, 12 voxels: Dice 0.9, 0.8, then 2 * 28 / 80 = 0.7
    assert d == pytest.approx(0.7)
    assert degraded_prompt(target, low=0.99, high=0.995) is None


def test_random_first_click_evaluation_differs_and_checks_its_argument(cases):
    torch.manual_seed(0)
    model = build_sam3d("standin_small")
    scores = evaluate_clicks(model, STANDIN_PET, cases[:1], "PET", (1,), progress=False, first="random", seed=0)
    assert set(scores) == {1} and all(0.0 <= d <= 1.0 for d in scores[1].values())
    with pytest.raises(ValueError, match="first must be one of"):
        evaluate_clicks(model, STANDIN_PET, cases[:1], "PET", (1,), progress=False, first="centroid")


def test_candidate_losses_train_only_the_best_candidate_and_the_iou_head_on_all():
    """Two sessions, two candidates on a 2^3 loss grid (pool 1), the target the first half of the grid.
    Candidate "right" (+20 on the target, -20 off it): Dice loss ~0 (MONAI's smoothing 1e-5), BCE
    ~2e-9, IoU 1. Candidate "all" (+20 everywhere): Dice loss 1 - 2 * 4 / (4 + 8) = 1/3, BCE
    (4 * 20 + 4 * 2e-9) / 8 = 10, IoU 4 / 8 = 0.5. Session 0 has them in the order (right, all),
    session 1 (all, right): both sessions' lowest loss is ~0, from different candidates."""
    from mudo_app.train.teacher_losses import candidate_losses

    target = torch.zeros(1, 1, 2, 2, 2)
    target[0, 0, 0] = 1
    right, everything = target * 40 - 20, torch.full_like(target, 20.0)
    cand = torch.cat([torch.cat([right, everything], 1), torch.cat([everything, right], 1)]).requires_grad_()
    targets = target.repeat(2, 1, 1, 1, 1)
    exact_iou = torch.tensor([[1.0, 0.5], [0.5, 1.0]])
    loss, coarse = candidate_losses(cand, targets, 1, exact_iou)
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-4)
    assert torch.equal(coarse, (cand.detach() > 0).float())
    loss, _ = candidate_losses(cand, targets, 1, torch.full((2, 2), 0.5))  # IoU error 0.5 on half the pairs
    assert float(loss.detach()) == pytest.approx(0.125, abs=1e-4)
    loss.backward()
    assert float(cand.grad[0, 1].abs().sum()) == 0 and float(cand.grad[1, 0].abs().sum()) == 0  # "all": no gradient


def test_multimask_pretraining_trains_other_weights_and_is_evaluated_by_its_candidates(cases):
    settings = TeacherPretrainSettings(modality="PET", iterations=2, batch_size=1, clicks=2, loss_size=32, seed=0)
    single = pretrain_teacher(cases, STANDIN_PET, settings, progress=False)
    multi_settings = TeacherPretrainSettings(**{**settings.__dict__, "multimask": True})
    multi = pretrain_teacher(cases, STANDIN_PET, multi_settings, progress=False)
    hyper = "mask_decoder.output_hypernetworks_mlps.1.layers.0.weight"  # the first candidate's
    assert not torch.equal(single.state_dict()[hyper], multi.state_dict()[hyper])
    scores = evaluate_clicks(multi, STANDIN_PET, cases[:1], "PET", (1, 2), progress=False, multimask=True)
    assert set(scores) == {1, 2} and all(0.0 <= d <= 1.0 for per in scores.values() for d in per.values())


def test_a_standin_trained_with_multimask_loads_as_answering_one_click_with_its_candidates(tmp_path):
    model = build_sam3d("standin_small")
    for multimask in (True, False):
        path = tmp_path / f"standin_pet_{multimask}.pt"
        save_standin(path, model, "standin_small", "PET", {"settings": {"multimask": multimask}})
        assert load_teacher("PET", path).one_click_multimask is multimask
    save_standin(tmp_path / "old.pt", model, "standin_small", "PET", {"note": "no settings"})
    assert load_teacher("PET", tmp_path / "old.pt").one_click_multimask is False


def test_evaluate_command_reports_both_teachers_with_the_multimask_rows(tmp_path, capsys):
    """``muduo evaluate-teachers --multimask`` on the shipped stand-ins (one held-out case): a report per
    teacher with the single-output and the multimask click rows and the mask-prompt answer."""
    out = tmp_path / "evaluation.json"
    assert main(["evaluate-teachers", "--eval-cases", "1", "--multimask", "--json", str(out), "--quiet"]) == 0
    report = json.loads(out.read_text())
    assert report["held_out"] == "synthetic foundation corpus, held-out seed 731002, cases 0..0"
    for modality in ("CT", "PET"):
        entry = report["teachers"][modality]
        assert entry["standin"] and entry["checkpoint"].endswith(f"standin_{modality.lower()}.pt")
        for key in ("zero_shot_mean", "random_first_click_mean", "multimask_mean", "random_first_click_multimask_mean"):
            assert set(entry[key]) == {"1", "3"} and all(0 <= v <= 1 for v in entry[key].values())
        assert entry["mask_prompt"]["objects"] >= 1
    assert "one-click answer from the multimask candidates" in capsys.readouterr().out
    assert main(["evaluate-teachers", "--eval-cases", "0"]) == 2
