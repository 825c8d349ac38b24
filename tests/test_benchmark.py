import json

import pytest

from mudo_app.bench.benchmark import METHODS, PRESETS, Preset, preset_by_name, run_benchmark, run_config
from mudo_app.cli import main
from mudo_app.train.config import METHODS as METHODS_OF_CONFIG
from mudo_app.train.config import TrainConfig


def test_every_row_is_its_own_run_in_one_harness(tmp_path):
    """Rows differ only in their switches: same data, budget and seed; no two rows train the same
    thing; the ``muduo`` row is the method with the project's defaults."""
    preset = PRESETS["full"]
    assert set(preset.methods) == set(METHODS) and len(preset.seeds) == 3
    configs = {m: run_config(preset, m, 1, tmp_path / "data", tmp_path / "run", 2) for m in preset.methods}
    harness = {"datastore", "out", "preprocessed", "seed", "threads", "iterations", "checkpoint_every"}
    harness |= {"prompt_net_iterations"}
    defaults = TrainConfig().to_dict()
    assert {k: v for k, v in configs["muduo"].to_dict().items() if k not in harness} == {
        k: v for k, v in defaults.items() if k not in harness
    }
    switches = {m: {k: v for k, v in c.to_dict().items() if k not in harness} for m, c in configs.items()}
    assert len({json.dumps(s, sort_keys=True) for s in switches.values()}) == len(configs)
    assert len({(c.datastore, c.iterations, c.seed, c.prompt_net_iterations) for c in configs.values()}) == 1
    assert {c.method for c in configs.values()} == set(METHODS_OF_CONFIG)
    assert preset_by_name("quick", ["muduo"]).methods == ("muduo",)
    with pytest.raises(ValueError, match="unknown method"):
        preset_by_name("quick", ["magic"])


def test_unknown_method_exits_2(capsys, tmp_path):
    assert main(["benchmark", "--quick", "--methods", "magic", "--out", str(tmp_path)]) == 2
    assert "unknown method" in capsys.readouterr().err


def test_a_tiny_benchmark_writes_the_documented_schema(tmp_path):
    preset = Preset(
        "tiny", ("supervised",), (0,), iterations=2, unlabelled=1, test_cases=1, labelled=1, prompt_net_iterations=1
    )
    result = run_benchmark(preset, tmp_path, threads=1, progress=False)
    saved = json.loads((tmp_path / "benchmark.json").read_text())
    assert saved["preset"]["name"] == "tiny" and saved["complete"] is True and "CPU cores" in saved["machine"]
    row = saved["methods"]["supervised"]
    assert set(row) == {"dice_mean", "dice_std", "hd95_mean", "per_seed"} and 0 <= row["dice_mean"] <= 1
    assert row["per_seed"][0]["seed"] == 0 and row["dice_std"] == 0.0
    assert "| supervised |" in (tmp_path / "benchmark.md").read_text()
    assert (tmp_path / "benchmark_dice.png").stat().st_size > 0
    assert saved["teacher_cost"]["vit_b_ori"]["gflops_per_pass"]["encoder"] > 50
    assert result["methods"]["supervised"]["dice_mean"] == row["dice_mean"]


def test_standard_preset_has_the_six_rows_and_truth_diagnostics_for_the_teacher_rows(tmp_path):
    preset = PRESETS["standard"]
    assert preset.methods == (
        "supervised", "mean_teacher", "ct_teacher_only", "pet_teacher_only", "muduo", "fully_supervised"
    )  # fmt: skip
    assert preset.labelled == 5 and preset.unlabelled >= 15 and preset.test_cases >= 6 and len(preset.seeds) == 3
    every = {m: run_config(preset, m, 0, tmp_path / "d", tmp_path / "r", 2).truth_dice_every for m in preset.methods}
    assert {m for m, e in every.items() if e} == {"ct_teacher_only", "pet_teacher_only", "muduo"}


def test_a_tiny_muduo_benchmark_reports_the_mechanism(tmp_path):
    preset = Preset(
        "tiny", ("muduo",), (0,), iterations=2, unlabelled=1, test_cases=1, labelled=1, prompt_net_iterations=1,
        truth_dice_every=1,
    )  # fmt: skip
    run_benchmark(preset, tmp_path, threads=1, progress=False)
    saved = json.loads((tmp_path / "benchmark.json").read_text())
    series = saved["methods"]["muduo"]["per_seed"][0]["truth_dice"]
    assert [r["iteration"] for r in series] == [1, 2] and "pseudo_label" in series[0]
    md = (tmp_path / "benchmark.md").read_text()
    assert "Does the pseudo-label beat the student?" in md and "| muduo |" in md
    assert (tmp_path / "truth_dice.png").stat().st_size > 0
    assert set(saved["methods"]["muduo"]["per_seed"][0]["lesion_autopet"]) == {"dice", "fp_volume_ml", "fn_volume_ml"}


def test_quick_and_another_preset_exit_2(capsys, tmp_path):
    assert main(["benchmark", "--quick", "--preset", "standard", "--out", str(tmp_path)]) == 2
    assert "contradict" in capsys.readouterr().err
