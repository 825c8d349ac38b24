import json

import numpy as np
import pytest

from mudo_app.errors import InputError
from mudo_app.io.datastore import PetCtDatastore, check_case_id
from mudo_app.io.volume import Volume, load_volume
from tests.conftest import make_volume


def _case(shape=(6, 5, 4)):
    ct = make_volume(shape, dtype=np.int16, fill=-100)
    pet = make_volume(shape, affine=ct.affine)
    label = Volume(np.zeros(shape, np.uint8), ct.affine)
    label.array[1:3, 1:3, 1:3] = 13
    return ct, pet, label


def test_add_and_load_case(tmp_path):
    ds = PetCtDatastore(tmp_path / "ds", create=True)
    ct, pet, label = _case()
    ds.add_case("a1", ct, pet, label, meta={"synthetic": True})
    ds.add_case("b2", ct, pet)
    assert ds.case_ids() == ["a1", "b2"]
    assert ds.labelled_ids() == ["a1"] and ds.unlabelled_ids() == ["b2"]
    case = ds.load_case("a1")
    np.testing.assert_array_equal(case.label.array, label.array)
    np.testing.assert_array_equal(case.pet.array, pet.array)
    assert ds.load_case("b2").label is None
    assert ds.meta("a1") == {"synthetic": True}
    # MONAI Label's local datastore sees exactly one image per case at the top level
    assert sorted(p.name for p in ds.root.glob("*.nii.gz")) == ["a1.nii.gz", "b2.nii.gz"]


def test_label_history_is_kept(tmp_path):
    ds = PetCtDatastore(tmp_path, create=True)
    ct, pet, label = _case()
    ds.add_case("c", ct, pet, label)
    second = Volume(label.array.copy(), label.affine)
    second.array[0, 0, 0] = 1
    ds.save_label("c", second, user="alice")
    hist = ds.label_history("c")
    assert len(hist) == 2
    who = json.loads(hist[1].with_name(hist[1].name.replace(".nii.gz", ".json")).read_text())
    assert who["user"] == "alice" and who["tag"] == "final" and who["saved_utc"].startswith("20")
    assert load_volume(hist[0]).array[0, 0, 0] == 0 and load_volume(hist[1]).array[0, 0, 0] == 1
    assert load_volume(ds.label_path("c")).array[0, 0, 0] == 1


def test_bad_label_is_rejected_and_nothing_stored(tmp_path):
    ds = PetCtDatastore(tmp_path, create=True)
    ct, pet, label = _case()
    ds.add_case("c", ct, pet)
    wrong_grid = Volume(np.zeros((6, 5, 5), np.uint8), label.affine)
    with pytest.raises(InputError, match="not on the grid"):
        ds.save_label("c", wrong_grid)
    wrong_values = Volume(np.full((6, 5, 4), 20, np.uint8), label.affine)
    with pytest.raises(InputError, match=r"\[20\]"):
        ds.save_label("c", wrong_values)
    assert ds.labelled_ids() == [] and ds.label_history("c") == []


def test_add_case_rejects_mismatched_grid_and_writes_nothing(tmp_path):
    ds = PetCtDatastore(tmp_path, create=True)
    ct, pet, _ = _case()
    pet.affine[2, 3] += 3.0
    with pytest.raises(InputError, match="not on one grid"):
        ds.add_case("c", ct, pet)
    assert not any(tmp_path.rglob("*.nii.gz"))


def test_add_case_twice_and_unknown_ids(tmp_path):
    ds = PetCtDatastore(tmp_path, create=True)
    ct, pet, _ = _case()
    ds.add_case("c", ct, pet)
    with pytest.raises(InputError, match="already exists"):
        ds.add_case("c", ct, pet)
    with pytest.raises(InputError, match="unknown case id"):
        ds.load_case("zz")
    with pytest.raises(InputError, match="datastore folder not found"):
        PetCtDatastore(tmp_path / "missing")


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "x.nii.gz", ".hidden", "a b"])
def test_case_id_rules(bad):
    with pytest.raises(InputError, match="case id"):
        check_case_id(bad)


def test_stale_temporaries_of_a_killed_writer_are_removed(tmp_path):
    ds = PetCtDatastore(tmp_path, create=True)
    ct, pet, label = _case()
    ds.add_case("c", ct, pet, label)
    stale = ds.label_path("c").with_name(".tmp-c.nii.gz.abc123.nii.gz")
    stale.write_bytes(b"half")
    in_history = ds.history_dir("c") / ".tmp-20260101T000000000000Z_final.nii.gz.x.nii.gz"
    in_history.write_bytes(b"half")
    assert len(ds.label_history("c")) == 1  # a writer's temporary is never a version
    assert sorted(ds.remove_stale_temporaries()) == sorted([stale, in_history]) and not stale.exists()
    assert ds.labelled_ids() == ["c"] and ds.label_path("c").is_file()
