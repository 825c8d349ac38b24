import json

import numpy as np

from mudo_app.cli import main
from mudo_app.io.volume import Volume, load_volume, save_volume
from mudo_app.synth import PhantomSettings, write_dataset


def _folders(tmp_path):
    ds = write_dataset(tmp_path / "ds", 2, seed=8, settings=PhantomSettings(spacing=(8.0, 8.0, 8.0)), progress=False)
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    for cid in ("syn000", "syn001"):
        gt = load_volume(ds / "ground_truth" / f"{cid}.nii.gz")
        save_volume(gt, gt_dir / f"{cid}.nii.gz")
        pred = gt.array.copy()
        if cid == "syn001":
            pred[pred == 5] = 0  # the spleen is missed entirely
        save_volume(Volume(pred, gt.affine), pred_dir / f"{cid}.nii.gz")
    return gt_dir, pred_dir


def test_folders_matched_by_case_and_misses_counted(tmp_path, capsys):
    gt_dir, pred_dir = _folders(tmp_path)
    out = tmp_path / "result.json"
    assert main(["evaluate", "--gt", str(gt_dir), "--pred", str(pred_dir), "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert [c["case"] for c in res["cases"]] == ["syn000", "syn001"]
    spleen = res["mean"]["per_class"]["spleen"]
    assert spleen == {"dice": 0.5, "hd95_mm": 0.0, "asd_mm": 0.0, "found": 1, "missed": 1, "hallucinated": 0}
    assert res["cases"][1]["per_class"]["spleen"]["hd95_mm"] is None  # missed: no distance, never 0
    assert res["mean"]["per_class"]["liver"]["dice"] == 1.0
    assert "| spleen | 50.0 |" in capsys.readouterr().out


def test_bad_inputs_exit_2_and_write_nothing(tmp_path, capsys):
    gt_dir, pred_dir = _folders(tmp_path)
    out = tmp_path / "result.json"
    (pred_dir / "syn001.nii.gz").unlink()
    assert main(["evaluate", "--gt", str(gt_dir), "--pred", str(pred_dir), "--json", str(out)]) == 2
    assert "no prediction for case(s) ['syn001']" in capsys.readouterr().err
    shifted = load_volume(gt_dir / "syn000.nii.gz")
    shifted.affine[0, 3] += 8.0
    save_volume(shifted, pred_dir / "syn001.nii.gz")
    save_volume(shifted, pred_dir / "syn000.nii.gz")
    assert main(["evaluate", "--gt", str(gt_dir), "--pred", str(pred_dir), "--json", str(out)]) == 2
    assert "not on the ground-truth grid" in capsys.readouterr().err
    assert main(["evaluate", "--gt", str(gt_dir), "--pred", str(pred_dir / "syn000.nii.gz")]) == 2
    assert "both be files or both be folders" in capsys.readouterr().err
    bad = load_volume(gt_dir / "syn000.nii.gz")
    bad.array[0, 0, 0] = 20
    save_volume(bad, pred_dir / "syn000.nii.gz")
    assert main(["evaluate", "--gt", str(gt_dir / "syn000.nii.gz"), "--pred", str(pred_dir / "syn000.nii.gz")]) == 2
    assert "values [20] are not in the label map" in capsys.readouterr().err
    assert not out.exists()


def test_binary_mode_on_real_autopet_masks(realdata, tmp_path):
    out = tmp_path / "r.json"
    gt = realdata / "autopet3_psma_95b833d46f153cd2_gt.nii.gz"
    pred = realdata / "autopet3_psma_95b833d46f153cd2_pred_b.nii.gz"
    assert main(["evaluate", "--binary", "--gt", str(gt), "--pred", str(pred), "--json", str(out)]) == 0
    case = json.loads(out.read_text())["cases"][0]
    g, p = load_volume(gt).array > 0, load_volume(pred).array > 0
    assert case["dice"] == case["per_class"]["lesion"]["dice"]
    assert np.isclose(case["dice"], 2 * (g & p).sum() / (g.sum() + p.sum()))
    assert case["per_class"]["lesion"]["hd95_mm"] > 0 and case["fn_volume_ml"] > 0


def test_plots_are_written(tmp_path):
    gt_dir, pred_dir = _folders(tmp_path)
    plots = tmp_path / "plots"
    assert (
        main(
            [
                "evaluate",
                "--gt",
                str(gt_dir),
                "--pred",
                str(pred_dir),
                "--plots",
                str(plots),
                "--overlays",
                "1",
                "--images",
                str(gt_dir),
            ]
        )
        == 0
    )
    names = sorted(p.name for p in plots.iterdir())
    assert names == ["overlay_syn000.png", "per_class_dice.png"]
    assert all((plots / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for n in names)
