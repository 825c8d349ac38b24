"""In-process API tests of the MONAI Label app (FastAPI TestClient), as MONAI Label's own tests do."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.lib.harness import in_process_app

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def client(studies, tmp_path):
    store, student = studies
    conf = {"student": str(student), "model_dir": str(tmp_path / "model"), "train_iterations": "2"}
    with in_process_app(store, conf, tmp_path / "sessions") as c:
        yield c, store, tmp_path / "model"


def _multipart_file(response):
    """(params, file bytes) of MONAI Label's multipart infer answer."""
    from requests_toolbelt.multipart import decoder

    parts = decoder.MultipartDecoder(response.content, response.headers["content-type"]).parts
    params = json.loads(parts[0].text)
    return params, parts[1].content


def test_info_lists_models_labels_colours_and_stand_in_teachers(client):
    c, _, _ = client
    info = c.get("/info/").json()
    assert set(info["models"]) == {"muduo_student", "sam_med3d_ct", "seganypet_pet"}
    assert info["labels"]["liver"] == 1 and info["labels"]["lesion"] == 13 and len(info["labels"]) == 14
    from mudo_app.labels import LABELS

    assert info["label_colors"]["liver"] == list(next(lbl.color for lbl in LABELS if lbl.name == "liver"))
    assert info["teachers"]["sam_med3d_ct"]["stand_in"] is True
    assert set(info["strategies"]) == {"teacher_disagreement", "random"} and "muduo" in info["trainers"]


def test_student_infer_on_the_image_grid_in_nrrd_and_nifti(client, tmp_path):
    c, store, _ = client
    ct = nib.load(store / "syn000.nii.gz")
    r = c.post(
        "/infer/muduo_student?image=syn000",
        data={"params": json.dumps({"result_extension": ".nrrd", "result_dtype": "uint8", "client_id": "t"})},
    )
    assert r.status_code == 200, r.text
    params, content = _multipart_file(r)
    assert params["label_names"]["lesion"] == 13
    (tmp_path / "out.nrrd").write_bytes(content)
    from mudo_app.io.volume import load_volume

    label = load_volume(tmp_path / "out.nrrd")
    assert label.shape == ct.shape and label.array.dtype == np.uint8
    np.testing.assert_allclose(label.affine, ct.affine, atol=1e-4)
    assert set(np.unique(label.array)) <= set(range(14))
    r = c.post("/infer/muduo_student?image=syn000&output=image", data={"params": json.dumps({"result_dtype": "int16"})})
    (tmp_path / "out.nii.gz").write_bytes(r.content)
    back = nib.load(tmp_path / "out.nii.gz")
    assert back.get_data_dtype() == np.int16 and back.shape == ct.shape


def test_click_refinement_reuses_the_embedding(client):
    c, store, _ = client
    label = nib.load(store / "labels" / "final" / "syn000.nii.gz").get_fdata()
    liver = np.argwhere(label == 1)
    click = liver[len(liver) // 2].tolist()
    for model in ("sam_med3d_ct", "seganypet_pet"):
        first = c.post(
            f"/infer/{model}?image=syn000&output=json",
            data={"params": json.dumps({"foreground": [click], "background": [], "label": "liver"})},
        )
        assert first.status_code == 200, first.text
        assert first.json()["embedding_reused"] is False and first.json()["label_names"] == {"liver": 1}
        second = c.post(
            f"/infer/{model}?image=syn000&output=json",
            data={"params": json.dumps({"foreground": [click], "background": [[0, 0, 0]]})},
        )
        assert second.json()["embedding_reused"] is True


@pytest.mark.parametrize(
    "method,url,status,message",
    [
        ("post", "/infer/nope?image=syn000", 404, "unknown model 'nope'"),
        ("post", "/infer/muduo_student?image=syn999", 404, "unknown image id 'syn999'"),
        ("post", "/activelearning/nope", 404, "unknown strategy 'nope'"),
        ("post", "/train/nope", 404, "unknown training task 'nope'"),
    ],
)
def test_unknown_names_answer_404_with_a_message(client, method, url, status, message):
    c, _, _ = client
    r = getattr(c, method)(url, data={"params": "{}"}) if url.startswith("/infer") else getattr(c, method)(url, json={})
    assert r.status_code == status and message in r.json()["detail"]


def test_bad_infer_params_and_training_keys_answer_422(client):
    c, _, _ = client
    r = c.post("/infer/muduo_student?image=syn000", data={"params": json.dumps({"result_extension": ".png"})})
    assert r.status_code == 422 and "result_extension" in r.json()["detail"]
    r = c.post("/infer/sam_med3d_ct?image=syn000", data={"params": json.dumps({"foreground": [[999, 0, 0]]})})
    assert r.status_code == 422 and "outside the volume" in r.json()["detail"]
    r = c.post("/train/muduo", json={"max_iterations": 2, "learning_speed": 3})
    assert r.status_code == 422 and "learning_speed" in r.json()["detail"]
    r = c.post("/train/muduo", json={"max_iterations": 0})
    assert r.status_code == 422 and "max_iterations" in r.json()["detail"]


def test_label_upload_is_validated_and_history_kept(client, tmp_path):
    c, store, _ = client
    ct = nib.load(store / "syn002.nii.gz")
    good = np.zeros(ct.shape, np.uint8)
    good[10:20, 10:20, 40:50] = 1
    path = tmp_path / "good.nii.gz"
    nib.save(nib.Nifti1Image(good, ct.affine), path)
    bad_grid = tmp_path / "grid.nii.gz"
    nib.save(nib.Nifti1Image(good[:-1], ct.affine), bad_grid)
    bad_values = tmp_path / "values.nii.gz"
    nib.save(nib.Nifti1Image(good * 20, ct.affine), bad_values)
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"not a volume")
    for f, message in ((bad_grid, "not on the grid"), (bad_values, "20"), (junk, "cannot read")):
        with open(f, "rb") as fh:
            r = c.put("/datastore/label?image=syn002&tag=final", files={"label": (f.name, fh)}, data={"params": "{}"})
        assert r.status_code == 422 and message in r.json()["detail"], r.text
    assert not (store / "labels" / "final" / "syn002.nii.gz").exists()
    with open(path, "rb") as fh:
        r = c.put(
            "/datastore/label?image=syn002&tag=final",
            files={"label": ("good.nii.gz", fh)},
            data={"params": json.dumps({"label_info": [{"name": "liver", "idx": 1}]})},
        )
    assert r.status_code == 200, r.text
    saved = nib.load(store / "labels" / "final" / "syn002.nii.gz")
    assert np.array_equal(np.asarray(saved.dataobj), good)
    assert len(list((store / "label_history" / "syn002").glob("*.nii.gz"))) == 1


def test_active_learning_skips_cases_served_to_another_client(client):
    c, store, _ = client
    first = c.post("/activelearning/teacher_disagreement", json={"client_id": "a"}).json()
    assert first["id"] in {"syn002", "syn003"} and 0 <= first["score"] <= 1
    second = c.post("/activelearning/teacher_disagreement", json={"client_id": "b"}).json()
    assert second["id"] in {"syn002", "syn003"} and second["id"] != first["id"]
    assert c.post("/activelearning/random", json={"client_id": "c"}).json() == {}  # both taken by others
    assert c.post("/activelearning/random", json={"client_id": "a"}).json()["id"] in {"syn002", "syn003"}


def test_pet_download_and_a_finished_training_publishes_a_new_student(client, tmp_path):
    c, store, model_dir = client
    r = c.get("/datastore/pet?image=syn001")
    assert r.status_code == 200
    (tmp_path / "pet.nii.gz").write_bytes(r.content)
    assert nib.load(tmp_path / "pet.nii.gz").shape == nib.load(store / "syn001.nii.gz").shape
    assert c.get("/datastore/pet?image=syn999").status_code == 404
    before = c.get("/model/info/muduo_student").json()["checksum"]
    r = c.post("/train/muduo?run_sync=true", json={"max_iterations": 2, "method": "supervised"})
    assert r.status_code == 422 and "run_sync is refused" in r.json()["detail"]
    from monailabel.interfaces.utils.app import app_instance

    instance = app_instance()  # what the training subprocess runs, here in-process
    instance._trainers["muduo"]({"max_iterations": 2, "method": "supervised"}, instance.datastore())
    after = c.get("/model/info/muduo_student").json()
    assert after["checksum"] != before and after["train_stats"]["iterations"] == 2
    assert c.post("/infer/muduo_student?image=syn000&output=json", data={"params": "{}"}).status_code == 200


def test_image_upload_takes_a_two_channel_case_and_refuses_one_modality(client, tmp_path):
    c, store, _ = client
    ct = nib.load(store / "syn000.nii.gz")
    pet = nib.load(store / "pet" / "syn000.nii.gz")
    both = np.stack([ct.get_fdata(), pet.get_fdata()], -1).astype(np.float32)
    nib.save(nib.Nifti1Image(both, ct.affine), tmp_path / "case.nii.gz")
    nib.save(nib.Nifti1Image(both[..., 0], ct.affine), tmp_path / "ct_only.nii.gz")
    with open(tmp_path / "ct_only.nii.gz", "rb") as fh:
        r = c.put("/datastore/image?image=upload1", files={"file": ("ct_only.nii.gz", fh)}, data={"params": "{}"})
    assert r.status_code == 422 and "2 channels" in r.json()["detail"]
    assert not (store / "upload1.nii.gz").exists() and not (store / "pet" / "upload1.nii.gz").exists()
    with open(tmp_path / "case.nii.gz", "rb") as fh:
        r = c.put("/datastore/image?image=upload1", files={"file": ("case.nii.gz", fh)}, data={"params": "{}"})
    assert r.status_code == 200, r.text
    assert np.allclose(nib.load(store / "pet" / "upload1.nii.gz").get_fdata(), pet.get_fdata(), atol=1e-4)
    r = c.post("/infer/muduo_student?image=upload1&output=json", data={"params": "{}"})
    assert r.status_code == 200, r.text


def test_no_web_page_may_drive_the_server_by_default(client):
    """CORS answers no origin unless configured (stock MONAI Label echoed any origin with credentials)."""
    c, _, _ = client
    r = c.get("/info/", headers={"Origin": "http://evil.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    assert "access-control-allow-credentials" not in r.headers
    pre = c.options(
        "/datastore/label", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "PUT"}
    )
    assert pre.status_code == 400 and "access-control-allow-origin" not in pre.headers
