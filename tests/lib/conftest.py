"""A small PET/CT datastore (8 mm synthetic phantoms, synthetic PET) and a real student checkpoint."""

import shutil

import pytest

from mudo_app.cli import main


@pytest.fixture(scope="session")
def small_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("appdata")
    store = root / "store"
    assert (
        main(
            [
                "sample-data",
                "--out",
                str(store),
                "--cases",
                "4",
                "--labelled",
                "2",
                "--seed",
                "5",
                "--spacing",
                "8",
                "8",
                "8",
            ]
        )
        == 0
    )
    from mudo_app.train.config import config_from_dict
    from mudo_app.train.trainer import Trainer

    cfg = config_from_dict(
        {
            "datastore": str(store),
            "out": str(root / "run"),
            "method": "supervised",
            "patch": [32, 32, 32],
            "iterations": 3,
            "threads": 1,
        }
    )
    student = Trainer(cfg, progress=False).run()
    return store, student


@pytest.fixture()
def studies(small_store, tmp_path):
    """A fresh copy of the datastore for one test (tests write labels and models)."""
    store, student = small_store
    copy = tmp_path / "studies"
    shutil.copytree(store, copy)
    return copy, student
