"""GET /datastore/export: a planner pulls a case's label as RTSTRUCT or SEG over REST."""

import io

import numpy as np
import pydicom
import pytest

from mudo_app.dicom.importer import import_dicom
from mudo_app.io.datastore import PetCtDatastore
from mudo_app.io.volume import Volume
from tests.dicom.synthetic import write_study
from tests.lib.harness import in_process_app


@pytest.fixture()
def client(studies, tmp_path):
    store, student = studies
    write_study(tmp_path / "dicom")
    report = import_dicom(tmp_path / "dicom", store, progress=False)
    (dicom_case,) = report.imported
    unlabelled = import_dicom(_second_study(tmp_path), store, progress=False).imported[0]
    pet = PetCtDatastore(store).load_case(dicom_case).pet
    label = np.zeros(pet.shape, np.uint8)
    label[3:9, 2:8, 1:5] = 1
    label[9:11, 1:3, 2:4] = 13
    PetCtDatastore(store).save_label(dicom_case, Volume(label, pet.affine))
    conf = {"student": str(student), "model_dir": str(tmp_path / "model"), "train_iterations": "2"}
    with in_process_app(store, conf, tmp_path / "sessions") as c:
        yield c, dicom_case, unlabelled


def _second_study(tmp_path):
    write_study(tmp_path / "dicom2", patient_id="OTHER")
    return tmp_path / "dicom2"


def test_a_planner_pulls_rtstruct_and_seg(client):
    c, case, _ = client
    r = c.get(f"/datastore/export?image={case}&format=rtstruct")
    assert r.status_code == 200, r.text
    ds = pydicom.dcmread(io.BytesIO(r.content))
    assert ds.Modality == "RTSTRUCT" and [roi.ROIName for roi in ds.StructureSetROISequence] == ["liver", "lesion"]
    r = c.get(f"/datastore/export?image={case}&format=seg")
    assert r.status_code == 200, r.text
    seg = pydicom.dcmread(io.BytesIO(r.content))
    assert seg.Modality == "SEG" and {s.SegmentLabel for s in seg.SegmentSequence} == {"liver", "lesion"}
    assert seg.StudyInstanceUID == ds.StudyInstanceUID
    algo = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algo.AlgorithmName == "MuDuo student" and len(algo.AlgorithmVersion) == 16  # the served checkpoint
    assert ds.StructureSetROISequence[0].ROIGenerationDescription == f"MuDuo student {algo.AlgorithmVersion}"


def test_export_refusals_name_the_problem(client):
    c, case, unlabelled = client
    r = c.get("/datastore/export?image=syn000&format=rtstruct")  # a synthetic NIfTI case
    assert r.status_code == 409 and "no DICOM source" in r.json()["detail"]
    r = c.get(f"/datastore/export?image={unlabelled}&format=rtstruct")
    assert r.status_code == 404 and "no 'final' label" in r.json()["detail"]
    assert c.get("/datastore/export?image=nope&format=seg").status_code == 404
    r = c.get(f"/datastore/export?image={case}&format=png")
    assert r.status_code == 422 and "format must be one of" in r.json()["detail"]
    r = c.get(f"/datastore/export?image={case}&format=rtstruct&holes=fill")
    assert r.status_code == 422 and "holes must be one of" in r.json()["detail"]
