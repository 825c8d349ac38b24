"""Training data preprocessed onto disk: the same patches as in memory, reused, redone when a case changes."""

import os

import numpy as np
import pytest

from mudo_app.cli import main
from mudo_app.errors import InputError
from mudo_app.io.datastore import PetCtDatastore
from mudo_app.train.config import config_from_dict
from mudo_app.train.data import load_training_set, preprocessed_folder
from mudo_app.train.methods import build_method
from mudo_app.transforms.intensity import StudentInput
from mudo_app.transforms.patches import ArrayCase, class_voxels, lesion_components, pad_to

PATCH = [32, 32, 32]


@pytest.fixture(scope="module")
def datastore(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds") / "store"
    args = ["sample-data", "--out", str(root), "--cases", "4", "--labelled", "2", "--seed", "5"]
    assert main([*args, "--spacing", "8", "8", "8"]) == 0
    return root


def _config(datastore, out, **kw):
    return config_from_dict({"datastore": str(datastore), "out": str(out), "patch": PATCH, **kw})


def _load(config):
    """The training set the config's method reads (what the trainer passes)."""
    method = build_method(config.method)
    return load_training_set(config, unlabelled=method.unlabelled, raw_volumes=method.raw_volumes)


def test_stored_cases_cut_the_patches_an_in_memory_case_cuts(datastore, tmp_path):
    """Same random stream, same starts, same arrays: the on-disk pipeline changes where the data
    lives, not what the student sees (classes outside the set are background in both)."""
    data = _load(_config(datastore, tmp_path, classes="organs"))
    store = PetCtDatastore(datastore)
    for stored in data.labelled:
        case = store.load_case(stored.case_id)
        label = case.require_label().array.astype(np.int64)
        label[label == 13] = 0
        memory = ArrayCase(StudentInput()(case.ct.array, case.pet.array), label)
        a, b = np.random.default_rng(7), np.random.default_rng(7)
        for _ in range(20):
            x1, y1 = memory.random_patch(PATCH, a, 0.5)
            x2, y2 = stored.random_patch(PATCH, b, 0.5)
            np.testing.assert_array_equal(x1, x2)
            np.testing.assert_array_equal(y1, y2)
        assert stored.class_counts == tuple((c, len(v)) for c, v in memory.voxels.items())
        assert stored.shape == pad_to(memory.image, memory.label, PATCH)[1].shape


def test_lesion_centred_draws_are_the_same_on_disk_and_in_memory(datastore, tmp_path):
    data = _load(_config(datastore, tmp_path))
    store = PetCtDatastore(datastore)
    with_lesions = [c for c in data.labelled if c.lesion_counts]
    assert with_lesions, "the fixture's labelled cases should have lesions"
    for stored in with_lesions:
        case = store.load_case(stored.case_id)
        memory = ArrayCase(StudentInput()(case.ct.array, case.pet.array), case.require_label().array.astype(np.int64))
        assert stored.lesion_counts == memory.lesions[1] and sum(stored.lesion_counts) == (memory.label == 13).sum()
        a, b = np.random.default_rng(3), np.random.default_rng(3)
        for _ in range(20):
            x1, y1 = memory.random_patch(PATCH, a, 1.0, lesion_share=1.0)
            x2, y2 = stored.random_patch(PATCH, b, 1.0, lesion_share=1.0)
            np.testing.assert_array_equal(x1, x2)
            np.testing.assert_array_equal(y1, y2)
            assert (y1 == 13).any()  # centred on a lesion voxel


def test_files_by_role_and_raw_volumes_only_for_the_teachers(datastore, tmp_path):
    data = _load(_config(datastore, tmp_path, method="muduo"))
    assert [c.case_id for c in data.labelled] == PetCtDatastore(datastore).labelled_ids()
    lab, unl = data.labelled[0], data.unlabelled[0]
    assert lab.file("label").is_file() and lab.file("voxels").is_file() and not lab.file("ct").exists()
    assert unl.file("ct").is_file() and unl.file("pet").is_file() and not unl.file("label").exists()
    raw = unl.volume("pet")
    assert np.array_equal(raw.array, PetCtDatastore(datastore).load_case(unl.case_id).pet.array)
    assert unl.starts is not None and unl.patch(0, PATCH).shape == (2, *PATCH)
    mt = _load(_config(datastore, tmp_path, method="mean_teacher"))
    assert not mt.unlabelled[0].file("ct").exists()  # no teachers, no raw volumes
    assert _load(_config(datastore, tmp_path, method="supervised")).unlabelled == []


def test_preprocessing_is_reused_and_redone_when_a_case_changes(datastore, tmp_path):
    config = _config(datastore, tmp_path / "run", preprocessed=str(tmp_path / "shared"))
    first = _load(config)
    assert preprocessed_folder(config) == tmp_path / "shared"
    image = first.labelled[0].file("image")
    stamp = image.stat().st_mtime_ns
    again = _load(config)
    assert again.labelled[0].stem == first.labelled[0].stem and image.stat().st_mtime_ns == stamp
    ct = PetCtDatastore(datastore).ct_path(first.labelled[0].case_id)
    os.utime(ct, ns=(ct.stat().st_atime_ns, ct.stat().st_mtime_ns + 10**9))  # the case changed on disk
    changed = _load(config)
    assert changed.labelled[0].stem != first.labelled[0].stem and changed.labelled[1].stem == first.labelled[1].stem
    other = _load(config.replace(patch=[48, 48, 48]))  # another run shares the folder
    assert other.labelled[0].stem != changed.labelled[0].stem and changed.labelled[0].file("image").is_file()


def test_an_incomplete_case_is_redone(datastore, tmp_path):
    config = _config(datastore, tmp_path)
    data = _load(config)
    meta = data.labelled[0].stem.with_name(data.labelled[0].stem.name + ".json")
    meta.unlink()  # killed before the .json (written last): the case counts as not preprocessed
    data.labelled[0].file("image").write_bytes(b"half")
    again = _load(config)
    assert again.labelled[0].image_patch((0, 0, 0), PATCH).shape == (2, *PATCH) and meta.is_file()


def test_no_labelled_case_is_refused(tmp_path):
    root = tmp_path / "store"
    assert main(["sample-data", "--out", str(root), "--cases", "2", "--labelled", "0", "--spacing", "8", "8", "8"]) == 0
    with pytest.raises(InputError, match="no labelled case"):
        _load(_config(root, tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_lesion_box_is_the_lesion_with_a_one_voxel_margin(datastore, tmp_path):
    data = _load(_config(datastore, tmp_path))
    store = PetCtDatastore(datastore)
    stored = next(c for c in data.labelled if c.lesion_counts)
    case = store.load_case(stored.case_id)
    image = StudentInput()(case.ct.array, case.pet.array)
    label = case.require_label().array.astype(np.int64)
    lesion_list = class_voxels(label)[13]
    order, counts = lesion_components(label, lesion_list)
    assert stored.lesion_counts == counts
    first = 0
    for k, count in enumerate(counts):
        voxels = lesion_list[order[first : first + count]]
        first += count
        lo = np.maximum(voxels.min(0) - 1, 0)
        hi = np.minimum(voxels.max(0) + 2, label.shape)
        box, mask = stored.lesion_box(k)
        assert mask.shape == tuple(hi - lo) and mask.sum() == count
        assert mask[tuple((voxels - lo).T)].all()
        np.testing.assert_array_equal(box, image[(slice(None), *(slice(a, b) for a, b in zip(lo, hi)))])
