"""Files are found through mudo_app.resources: package data from a checkout and from an installed wheel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from mudo_app import resources
from mudo_app.models.teachers import load_teacher
from tests.conftest import REPO


def test_from_the_checkout_the_standins_and_the_student_are_package_data_and_the_demo_is_in_sample_datasets(
    monkeypatch,
):
    monkeypatch.delenv(resources.DEMO_DIR_ENV, raising=False)
    assert (resources.standin_teacher_dir() / "standin_ct.pt").is_file()
    assert resources.standin_teacher_dir() == REPO / "mudo_app" / "assets" / "teachers"
    assert resources.shipped_student() == REPO / "mudo_app" / "assets" / "student" / "muduo_student.pt"
    assert resources.shipped_student().is_file()
    assert resources.source_checkout() == REPO
    assert resources.demo_datastore() == REPO / "sample-datasets" / "demo" / "datastore"


def test_the_demo_folder_setting_wins(monkeypatch, tmp_path):
    monkeypatch.setenv(resources.DEMO_DIR_ENV, str(tmp_path))
    assert resources.demo_datastore() == tmp_path / "datastore"


PROBE = """
import json
from mudo_app import resources
from mudo_app.models.teachers import load_teacher
teacher = load_teacher("CT")
demo = resources.demo_dir()
found = {"standins": str(resources.standin_teacher_dir()), "student": str(resources.shipped_student()),
         "demo": demo and str(demo)}
print(json.dumps({**found, "standin": teacher.standin, "checkpoint": teacher.checkpoint}))
"""


@pytest.mark.slow
def test_an_installed_wheel_carries_the_standins_and_the_student_and_needs_the_setting_for_the_demo(tmp_path):
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(REPO)], check=True)
    (wheel,) = wheels.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "mudo_app/assets/teachers/standin_pet.pt" in names and "mudo_app/assets/student/muduo_student.pt" in names
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)], check=True)
    env = {k: v for k, v in os.environ.items() if k != resources.DEMO_DIR_ENV} | {"PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout.splitlines()[-1])
    assert Path(found["standins"]).is_relative_to(site) and found["standin"] is True
    assert Path(found["checkpoint"]).is_relative_to(site) and Path(found["student"]).is_relative_to(site)
    assert found["demo"] is None  # no checkout around a wheel: the demo needs MUDUO_DEMO_DIR


def test_load_teacher_reads_the_package_data_by_default():
    assert Path(load_teacher("PET").checkpoint).parent == resources.standin_teacher_dir()
