import json

import numpy as np
import pytest

from mudo_app.io.volume import load_volume
from mudo_app.labels import LESION, ORGAN_IDS
from mudo_app.synth import PhantomSettings, case_rng, generate_case, write_dataset
from mudo_app.synth.phantom import sample_anatomy


@pytest.fixture(scope="module")
def population():
    """Twelve cases on the default 4 mm grid (about 0.4 s each)."""
    return [generate_case(case_rng(7, i)) for i in range(12)]


def test_same_seed_gives_byte_identical_files(tmp_path, small_settings):
    a = write_dataset(tmp_path / "a", 3, seed=5, settings=small_settings, progress=False)
    b = write_dataset(tmp_path / "b", 3, seed=5, settings=small_settings, progress=False)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and "label_history" not in p.parts)
    assert len(files) == 3 * 5  # CT, PET, final label, ground truth, meta
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    c = write_dataset(tmp_path / "c", 1, seed=6, settings=small_settings, progress=False)
    assert (c / "syn000.nii.gz").read_bytes() != (a / "syn000.nii.gz").read_bytes()


def test_case_does_not_depend_on_case_count(tmp_path, small_settings):
    a = write_dataset(tmp_path / "a", 1, seed=3, settings=small_settings, progress=False)
    b = write_dataset(tmp_path / "b", 2, seed=3, settings=small_settings, progress=False)
    assert (a / "pet/syn000.nii.gz").read_bytes() == (b / "pet/syn000.nii.gz").read_bytes()


def test_grid_affine_and_dtypes():
    ct, pet, label, meta = generate_case(case_rng(0, 0))
    assert ct.shape == pet.shape == label.shape == (120, 80, 200)
    assert ct.array.dtype == np.int16 and pet.array.dtype == np.float32 and label.array.dtype == np.uint8
    np.testing.assert_allclose(ct.spacing, (4, 4, 4))
    assert ct.orientation == "RAS"
    np.testing.assert_array_equal(ct.affine, pet.affine)
    assert meta["synthetic"] is True
    assert np.isfinite(pet.array).all() and pet.array.min() >= 0


def test_autopet_like_spacing():
    settings = PhantomSettings(spacing=(2.0, 2.0, 3.0))
    assert settings.shape == (240, 160, 267)


@pytest.mark.parametrize("spacing", [(0.0, 4, 4), (4, 4, 20)])
def test_bad_spacing(spacing):
    with pytest.raises(ValueError, match="spacing"):
        PhantomSettings(spacing=spacing)


def _median(vol, mask):
    return float(np.median(vol.array[mask]))


def test_organs_present_and_plausible_intensities(population):
    males = 0
    for ct, pet, label, meta in population:
        lab = label.array
        present = set(np.unique(lab).tolist())
        male = meta["anatomy"]["male"]
        males += male
        expected = set(ORGAN_IDS) - ({7} if not male else set())
        assert expected <= present, f"missing organs {expected - present}"
        if not male:
            assert 7 not in present
        liver, lungs = lab == 1, (lab >= 8) & (lab <= 12)
        assert 25 <= _median(ct, liver) <= 150  # soft tissue HU, with or without contrast agent
        assert 1.2 <= _median(pet, liver) <= 3.2  # liver ~2 SUV
        assert _median(ct, lungs) < -700 and _median(pet, lungs) < 1.0  # lungs low in both
        kidneys = (lab == 2) | (lab == 3)
        assert _median(pet, kidneys) > _median(pet, liver)  # excretion
        assert ct.array[lab == 0].min() <= -1000 + 120  # air outside the body
        assert ct.array.max() > 500  # bone
        # each organ has a plausible size (ml): lobes 30..3000, liver 700..4000 (hepatomegaly included)
        ml = 4 * 4 * 4 / 1000
        assert 700 <= liver.sum() * ml <= 4000
        for lobe in range(8, 13):
            assert 30 <= (lab == lobe).sum() * ml <= 3000, lobe
    assert 0 < males < len(population)


def test_lesions_are_hot_and_vary(population):
    counts, sizes, sites = [], [], set()
    for ct, pet, label, meta in population:
        les = label.array == LESION
        counts.append(len(meta["lesions"]))
        for lesion in meta["lesions"]:
            sizes.append(lesion["radius_mm"])
            sites.add(lesion["site"])
        if les.any():
            # lesions are brighter than the body around them
            body = (ct.array > -500) & ~les
            assert np.median(pet.array[les]) > 1.5 * np.median(pet.array[body])
        else:
            assert not meta["lesions"]
    assert max(sizes) / min(sizes) > 2.5
    assert len(sites) >= 5
    assert len(set(counts)) >= 3


def test_population_has_lesion_free_cases_and_second_domain():
    settings = PhantomSettings()
    anat = [sample_anatomy(case_rng(11, i), settings) for i in range(60)]
    domains = [a["domain"] for a in anat]
    assert 5 <= domains.count("B") <= 30
    b = [a for a in anat if a["domain"] == "B"]
    a_ = [a for a in anat if a["domain"] == "A"]
    assert min(x["pet_fwhm_mm"] for x in b) > max(x["pet_fwhm_mm"] for x in a_)
    assert min(x["ct_noise_hu"] for x in b) > max(x["ct_noise_hu"] for x in a_)


def test_layouts(tmp_path, small_settings):
    ds = write_dataset(tmp_path / "ds", 3, seed=1, settings=small_settings, labelled=1, progress=False)
    assert sorted(p.name for p in (ds / "labels/final").iterdir()) == ["syn000.nii.gz"]
    assert len(list((ds / "ground_truth").iterdir())) == 3
    assert json.loads((ds / "meta/syn001.json").read_text())["synthetic"] is True

    ap = write_dataset(tmp_path / "ap", 1, seed=1, settings=small_settings, layout="autopet-organ", progress=False)
    study = next(ap.glob("*/*"))
    assert sorted(p.name for p in study.iterdir()) == [
        "CTres.nii.gz",
        "ORGANS.nii.gz",
        "SEG.nii.gz",
        "SUV.nii.gz",
        "synthetic.json",
    ]
    seg, organs = load_volume(study / "SEG.nii.gz"), load_volume(study / "ORGANS.nii.gz")
    assert set(np.unique(seg.array)) <= {0, 1} and organs.array.max() <= 12

    nn = write_dataset(tmp_path / "nn", 2, seed=1, settings=small_settings, layout="nnunet", progress=False)
    assert sorted(p.name for p in (nn / "imagesTr").iterdir()) == [
        "syn000_0000.nii.gz",
        "syn000_0001.nii.gz",
        "syn001_0000.nii.gz",
        "syn001_0001.nii.gz",
    ]
    assert json.loads((nn / "dataset.json").read_text())["channel_names"] == {"0": "CT", "1": "PET"}


def test_write_dataset_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="layout"):
        write_dataset(tmp_path, 1, layout="dicom")
    with pytest.raises(ValueError, match="labelled"):
        write_dataset(tmp_path, 2, labelled=3)
