"""A real PACS (Orthanc with DICOMweb): a synthetic PET/CT study stored there is paired, imported as
SUV, segmented prompt-free by the server, and its saved label goes back as RTSTRUCT and SEG."""

import json

import nibabel as nib
import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient

from mudo_app.dicom.pacs import PacsMirror
from tests.dicom.orthanc import AVAILABLE, orthanc
from tests.dicom.synthetic import write_study

pytestmark = pytest.mark.skipif(not AVAILABLE, reason="Orthanc with its DICOMweb plugin is not installed")


def _store_study(url, folder):
    client = DICOMwebClient(url=url)
    datasets = [pydicom.dcmread(p) for p in sorted(folder.rglob("*.dcm")) + sorted((folder / "ct").iterdir())]
    client.store_instances(list({ds.SOPInstanceUID: ds for ds in datasets}.values()))
    return client


def test_mirror_pairs_pet_and_ct_and_imports_suv(tmp_path):
    study = write_study(tmp_path / "src")
    with orthanc(tmp_path / "pacs") as url:
        _store_study(url, tmp_path / "src")
        mirror = PacsMirror(url, tmp_path / "mirror")
        report = mirror.sync()
        assert report.skipped == {} and len(report.imported) == 1
        assert mirror.sync().imported == []  # mirrored once
    meta = json.loads((tmp_path / "mirror" / "datastore" / "meta" / f"{report.imported[0]}.json").read_text())
    assert meta["dicom"]["study_uid"] == study["study_uid"] and meta["suv"]["units"] == "BQML"
    pet = nib.load(tmp_path / "mirror" / "datastore" / "pet" / f"{report.imported[0]}.nii.gz").get_fdata()
    expected = study["stored"] * study["slopes"][:, None, None] * meta["suv"]["factor"]
    np.testing.assert_allclose(pet, expected.transpose(2, 1, 0), rtol=1e-4)


def test_server_on_the_pacs_infers_and_sends_the_label_back(tmp_path, student_path, monkeypatch):
    from monailabel.interfaces.app import MONAILabelApp

    from tests.lib.harness import in_process_app

    def no_download(self):
        raise AssertionError("MONAI Label's dcmqi download was attempted")

    monkeypatch.setattr(MONAILabelApp, "_download_dcmqi_tools", no_download)
    study = write_study(tmp_path / "src")
    with orthanc(tmp_path / "pacs") as url:
        client = _store_study(url, tmp_path / "src")
        conf = {"student": str(student_path), "model_dir": str(tmp_path / "model"), "train_iterations": "2"}
        with in_process_app(url, conf, tmp_path / "sessions") as c:
            images = c.get("/datastore/?output=all").json()["objects"]
            (case,) = list(images)
            r = c.post(f"/infer/muduo_student?image={case}&output=json", data={"params": "{}"})
            assert r.status_code == 200, r.text
            pet = nib.load(tmp_path / "model" / "pacs" / "datastore" / "pet" / f"{case}.nii.gz")
            label = np.zeros(pet.shape, np.uint8)
            label[3:9, 2:8, 1:5] = 1
            nib.save(nib.Nifti1Image(label, pet.affine), tmp_path / "label.nii.gz")
            with open(tmp_path / "label.nii.gz", "rb") as fh:
                r = c.put(f"/datastore/label?image={case}&tag=final", files={"label": ("label.nii.gz", fh)})
            assert r.status_code == 200, r.text
        found = {
            s["00080060"]["Value"][0]
            for s in client.search_for_series(study["study_uid"])  # the planner's QIDO-RS query
        }
        assert {"CT", "PT", "RTSTRUCT", "SEG"} <= found
