"""A small PET/CT datastore (8 mm synthetic phantoms, synthetic PET) and a real student checkpoint."""

import shutil

import pytest

from tests.lib.harness import small_datastore


@pytest.fixture(scope="session")
def small_store(tmp_path_factory):
    return small_datastore(tmp_path_factory.mktemp("appdata"))


@pytest.fixture()
def studies(small_store, tmp_path):
    """A fresh copy of the datastore for one test (tests write labels and models)."""
    store, student = small_store
    copy = tmp_path / "studies"
    shutil.copytree(store, copy)
    return copy, student
