import re

import numpy as np
import pytest

from mudo_app.cli import main
from mudo_app.io.datastore import PetCtDatastore
from mudo_app.io.importers import import_tree
from mudo_app.io.volume import Volume, load_volume, save_volume
from mudo_app.synth import write_dataset


@pytest.fixture()
def autopet_tree(tmp_path, small_settings):
    return write_dataset(
        tmp_path / "autopet", 3, seed=2, settings=small_settings, layout="autopet-organ", progress=False
    )


def _studies(tree):
    return sorted(p for p in tree.glob("*/*") if p.is_dir())


def test_autopet_organ_import_merges_organs_and_lesions(autopet_tree, tmp_path):
    report = import_tree("autopet-organ", autopet_tree, tmp_path / "ds", progress=False)
    assert not report.skipped and len(report.imported) == 3
    ds = PetCtDatastore(tmp_path / "ds")
    study = _studies(autopet_tree)[0]
    case = ds.load_case(report.imported[0])
    seg, organs = load_volume(study / "SEG.nii.gz"), load_volume(study / "ORGANS.nii.gz")
    expected = np.where(seg.array > 0, 13, organs.array)
    np.testing.assert_array_equal(case.label.array, expected)
    np.testing.assert_array_equal(case.ct.array, load_volume(study / "CTres.nii.gz").array)
    np.testing.assert_allclose(case.ct.affine, seg.affine)
    assert ds.meta(report.imported[0])["synthetic"] is True


def test_autopet_import_is_lesion_only(autopet_tree, tmp_path):
    report = import_tree("autopet", autopet_tree, tmp_path / "ds", progress=False)
    case = PetCtDatastore(tmp_path / "ds").load_case(report.imported[0])
    assert set(np.unique(case.label.array)) <= {0, 13}


def test_ct_on_another_grid_is_resampled_with_a_note(autopet_tree, tmp_path):
    study = _studies(autopet_tree)[1]
    ct = load_volume(study / "CTres.nii.gz")
    # a CT at half the PET spacing that covers the same field of view
    fine_aff = ct.affine.copy()
    fine_aff[:3, :3] /= 2
    fine_aff[:3, 3] -= np.diag(ct.affine)[:3] / 4
    fine = Volume(np.repeat(np.repeat(np.repeat(ct.array, 2, 0), 2, 1), 2, 2), fine_aff)
    save_volume(fine, study / "CTres.nii.gz")
    report = import_tree("autopet", autopet_tree, tmp_path / "ds", progress=False)
    assert not report.skipped
    ((cid, notes),) = report.notes.items()
    assert "resampled onto the PET grid" in notes[0]
    got = PetCtDatastore(tmp_path / "ds").load_case(cid).ct
    assert got.shape == ct.shape
    np.testing.assert_allclose(got.array, ct.array, atol=1)  # upsampled copy maps back exactly


def _break(study, how):
    if how == "missing PET":
        (study / "SUV.nii.gz").unlink()
    elif how == "corrupt gzip":
        data = (study / "SUV.nii.gz").read_bytes()
        (study / "SUV.nii.gz").write_bytes(data[: len(data) // 3])
    elif how == "label grid":
        seg = load_volume(study / "SEG.nii.gz")
        save_volume(Volume(seg.array[:-1], seg.affine), study / "SEG.nii.gz")
    elif how == "label values":
        seg = load_volume(study / "SEG.nii.gz")
        seg.array[0, 0, 0] = 2
        save_volume(seg, study / "SEG.nii.gz")
    elif how == "organ values":
        org = load_volume(study / "ORGANS.nii.gz")
        org.array[0, 0, 0] = 13
        save_volume(org, study / "ORGANS.nii.gz")
    elif how == "nan PET":
        pet = load_volume(study / "SUV.nii.gz")
        pet.array[3, 3, 3] = np.nan
        save_volume(pet, study / "SUV.nii.gz")


@pytest.mark.parametrize(
    "how, reason",
    [
        ("missing PET", "PET missing"),
        ("corrupt gzip", "cannot read"),
        ("label grid", "not on the PET grid"),
        ("label values", r"values \[2\]"),
        ("organ values", r"values \[13\]"),
        ("nan PET", "NaN"),
    ],
)
def test_bad_case_is_skipped_with_reason_and_nothing_written(autopet_tree, tmp_path, how, reason):
    bad = _studies(autopet_tree)[0]
    _break(bad, how)
    report = import_tree("autopet-organ", autopet_tree, tmp_path / "ds", progress=False)
    ((cid, why),) = report.skipped.items()
    assert cid.startswith(bad.parent.name)
    assert re.search(reason, why), why
    assert len(report.imported) == 2
    ds_root = tmp_path / "ds"
    assert not [p for p in ds_root.rglob("*") if cid in p.name]
    assert not list(ds_root.rglob(".tmp-*"))


def test_nnunet_import_and_unlabelled_case(tmp_path, small_settings):
    tree = write_dataset(tmp_path / "nn", 2, seed=4, settings=small_settings, layout="nnunet", progress=False)
    (tree / "labelsTr" / "syn001.nii.gz").unlink()
    report = import_tree("nnunet", tree, tmp_path / "ds", progress=False)
    assert report.imported == ["syn000", "syn001"]
    ds = PetCtDatastore(tmp_path / "ds")
    assert ds.labelled_ids() == ["syn000"] and ds.unlabelled_ids() == ["syn001"]


def test_nnunet_missing_ct_is_skipped(tmp_path, small_settings):
    tree = write_dataset(tmp_path / "nn", 2, seed=4, settings=small_settings, layout="nnunet", progress=False)
    (tree / "imagesTr" / "syn000_0000.nii.gz").unlink()
    report = import_tree("nnunet", tree, tmp_path / "ds", progress=False)
    assert "CT missing" in report.skipped["syn000"]


def test_cli_import_exit_codes(autopet_tree, tmp_path, capsys):
    assert main(["import", "--quiet", "--from", "autopet", str(autopet_tree), "--to", str(tmp_path / "ds")]) == 0
    assert "imported 3 case(s), skipped 0" in capsys.readouterr().out
    # importing again: every case is already there -> skipped, exit 2
    assert main(["import", "--quiet", "--from", "autopet", str(autopet_tree), "--to", str(tmp_path / "ds")]) == 2
    assert "already in the datastore" in capsys.readouterr().out
    assert main(["import", "--from", "nnunet", str(autopet_tree), "--to", str(tmp_path / "x")]) == 2
    assert "imagesTr/ is missing" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["import", "--from", "autopet", str(empty), "--to", str(tmp_path / "y")]) == 2
    assert "no autopet cases" in capsys.readouterr().err
