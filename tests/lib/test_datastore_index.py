"""MONAI Label's datastore index: written atomically, and an unreadable one rebuilt from the files."""

import json

from lib.datastore import INDEX_FILE, MuDuoDatastore


def test_an_empty_index_left_by_a_kill_is_set_aside_and_rebuilt(studies, caplog):
    store, _ = studies
    first = MuDuoDatastore(str(store))
    cases = sorted(first.list_images())
    (store / INDEX_FILE).write_text("")  # what MONAI Label's own writer leaves when killed mid-write
    again = MuDuoDatastore(str(store))
    assert sorted(again.list_images()) == cases
    assert json.loads((store / INDEX_FILE).read_text())["objects"]
    assert len(list(store.glob(f"{INDEX_FILE}.unreadable-*"))) == 1
    assert "was not readable" in caplog.text


def test_the_index_is_replaced_whole(studies):
    store, _ = studies
    ds = MuDuoDatastore(str(store))
    before = (store / INDEX_FILE).stat().st_ino
    ds._update_datastore_file()
    assert (store / INDEX_FILE).stat().st_ino != before  # a new file renamed over the old one
    assert json.loads((store / INDEX_FILE).read_text())["objects"]
    assert not [p for p in store.iterdir() if p.name.startswith(".") and INDEX_FILE in p.name]
