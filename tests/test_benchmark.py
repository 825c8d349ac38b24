import json

import pytest

from mudo_app.bench.benchmark import METHODS, PRESETS, Preset, preset_by_name, run_benchmark
from mudo_app.cli import main


def test_presets_cover_the_issue_rows():
    assert set(PRESETS["full"].methods) == set(METHODS) and len(PRESETS["full"].seeds) == 3
    assert METHODS["ct_teacher_only"] == {"teachers": "ct"} and METHODS["muduo_k1"] == {"k_points": 1}
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
