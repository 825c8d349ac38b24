"""A catalogue of bad requests over every route the app exposes, each answered as a hostile or careless
client deserves: a 4xx whose message names the problem, no server path in it, nothing changed in the
datastore or the served model, no temporary file left, and a server that goes on answering.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.lib.harness import in_process_app

REPO = Path(__file__).resolve().parents[2]
MAX_UPLOAD_MB = 1


@pytest.fixture(scope="module")
def server(small_store, tmp_path_factory):
    """The app in-process on a copy of the small datastore, with a 1 MB upload cap and a voxel cap just
    above the cases' own size."""
    import shutil

    store_src, student = small_store
    root = tmp_path_factory.mktemp("bad")
    store = root / "studies"
    shutil.copytree(store_src, store)
    shape = nib.load(store / "syn000.nii.gz").shape
    conf = {
        "student": str(student),
        "model_dir": str(root / "model"),
        "train_iterations": "2",
        "max_upload_mb": str(MAX_UPLOAD_MB),
        "max_voxels": str(int(np.prod(shape)) + 10),
        "max_clicks": "50",
    }
    with in_process_app(store, conf, root / "sessions") as client:
        yield client, store, root / "model", _files(root / "files", store)


def _save(path: Path, array, affine) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), path)
    return path


def _files(folder: Path, store: Path) -> dict[str, Path]:
    """Bad uploads, each wrong in one way."""
    ct = nib.load(store / "syn000.nii.gz")
    pet = nib.load(store / "pet" / "syn000.nii.gz")
    shape, affine = ct.shape, ct.affine
    rng = np.random.default_rng(0)
    label = rng.integers(0, 14, shape).astype(np.uint8)  # noise: larger than gzip's read buffer
    files = {
        "grid": _save(folder / "grid.nii.gz", label[:-1], affine),
        "values": _save(folder / "values.nii.gz", label * 2, affine),
        "complex": _save(folder / "complex.nii.gz", label.astype(np.complex64), affine),
        "voxels": _save(folder / "voxels.nii.gz", np.zeros((shape[0] * 2, *shape[1:]), np.uint8), affine),
        "crc": _save(folder / "crc.nii.gz", label, affine),
        "one_channel": _save(folder / "ct_only.nii.gz", ct.get_fdata().astype(np.float32), affine),
        "swapped": _save(
            folder / "swapped.nii.gz", np.stack([pet.get_fdata(), ct.get_fdata()], -1).astype(np.float32), affine
        ),
        "nan": _save(folder / "nan.nii.gz", np.full((*shape, 2), np.nan, np.float32), affine),
    }
    flat = nib.Nifti1Image(np.stack([ct.get_fdata(), pet.get_fdata()], -1).astype(np.float32), None)
    flat.header.set_sform(np.diag([2.0, 2.0, 0.0, 1.0]), code=1)  # an axis of zero length: no grid
    files["flat"] = folder / "flat.nii.gz"
    nib.save(flat, files["flat"])
    data = bytearray(files["crc"].read_bytes())
    data[-8] ^= 0xFF  # the gzip trailer's CRC32
    files["crc"].write_bytes(bytes(data))
    files["junk"] = folder / "junk.nii.gz"
    files["junk"].write_bytes(b"not a volume")
    files["png"] = folder / "label.png"
    files["png"].write_bytes(b"\x89PNG")
    files["big"] = folder / "big.nii.gz"
    files["big"].write_bytes(gzip.compress(os.urandom(int(1.5 * MAX_UPLOAD_MB * 2**20)), compresslevel=0))
    files["huge"] = folder / "huge.nii.gz"  # its Content-Length alone is refused, before the body is read
    files["huge"].write_bytes(gzip.compress(os.urandom(3 * MAX_UPLOAD_MB * 2**20), compresslevel=0))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../escaped/PROOF.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"proof"))
    files["tar"] = folder / "evil.tar"
    files["tar"].write_bytes(buf.getvalue())
    return files


def _fingerprint(*folders: Path) -> str:
    digest = hashlib.sha256()
    for folder in folders:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            digest.update(str(path.relative_to(folder)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _leftovers() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("muduo-upload-*")}


def _message(response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        return response.text
    return detail if isinstance(detail, str) else json.dumps(detail)


CLICK = [[10, 10, 30]]


def _infer(model: str, params, query: str = "image=syn000") -> tuple:
    body = params if isinstance(params, str) else json.dumps(params)
    return ("post", f"/infer/{model}?{query}&output=json", {"data": {"params": body}})


def _put(url: str, key: str, name: str, params: str = "{}") -> tuple:
    return ("put", url, {"upload": (key, name), "data": {"params": params}})


CATALOGUE = [
    # inference: ids of the datastore only, params a JSON object, nothing stored
    (_infer("nope", {}), 404, "unknown model 'nope'"),
    (_infer("muduo_student", {}, "image=syn999"), 404, "unknown image id 'syn999'"),
    (_infer("muduo_student", {}, "image=STORE/syn000.nii.gz"), 404, "unknown image id"),
    (_infer("sam_med3d_ct", {"foreground": CLICK}, "image=STORE/ground_truth/syn002.nii.gz"), 404, "unknown image id"),
    (_infer("muduo_student", {}, "image="), 422, "give the case"),
    (_infer("muduo_student", "{not json"), 422, "params must be a JSON object"),
    (_infer("muduo_student", "[1, 2]"), 422, "params must be a JSON object, got list"),
    (_infer("muduo_student", {"save_label": True, "label_tag": "final"}), 422, "never stores a label"),
    (_infer("muduo_student", {"label_tag": "final"}), 422, "never stores a label"),
    (_infer("muduo_student", {}, "image=syn000&session_id=abc"), 422, "datastore cases only"),
    (_infer("muduo_student", {"result_extension": ".png"}), 422, "result_extension"),
    (_infer("muduo_student", {"result_dtype": "complex64"}), 422, "result_dtype"),
    (_infer("muduo_student", {"colour": "red"}), 422, "unknown parameter(s) ['colour']"),
    (_infer("sam_med3d_ct", {"foreground": 5}), 422, "foreground must be a list"),
    (_infer("sam_med3d_ct", {"foreground": "abc"}), 422, "foreground must be a list"),
    (_infer("sam_med3d_ct", {"foreground": [10, 10, 30]}), 422, "each click must be [i, j, k]"),
    (_infer("sam_med3d_ct", '{"foreground": [[NaN, 1, 1]]}'), 422, "three finite numbers"),
    (_infer("sam_med3d_ct", {"foreground": [[True, 1, 1]]}), 422, "three finite numbers"),
    (_infer("sam_med3d_ct", {"foreground": [[1, 1, 1]] * 51}), 422, "at most 50"),
    (_infer("sam_med3d_ct", {"foreground": CLICK, "background": [[1, 1, 1]] * 50}), 422, "limit of 50"),
    (_infer("sam_med3d_ct", {"foreground": [[999, 0, 0]]}), 422, "outside the volume"),
    (_infer("seganypet_pet", {"foreground": CLICK, "label": "tumour"}), 422, "not a structure of the label map"),
    (_infer("seganypet_pet", {"foreground": []}), 422, "at least one foreground click"),
    # label upload: checked before anything is stored
    (_put("/datastore/label?image=syn999&tag=final", "label", "grid"), 404, "unknown image id 'syn999'"),
    (_put("/datastore/label?image=syn002&tag=final", "label", "grid"), 422, "not on the grid"),
    (_put("/datastore/label?image=syn002&tag=final", "label", "values"), 422, "not in the label map"),
    (_put("/datastore/label?image=syn002&tag=final", "label", "junk"), 422, "cannot read"),
    (_put("/datastore/label?image=syn002&tag=final", "label", "crc"), 422, "corrupt gzip stream"),
    (_put("/datastore/label?image=syn002&tag=final", "label", "complex"), 422, "not a real number"),
    (_put("/datastore/label?image=syn002&tag=final", "label", "voxels"), 422, "exceed this server's limit"),
    (_put("/datastore/label?image=syn002&tag=final", "label", "big"), 413, "larger than this server's limit"),
    (_put("/datastore/image?image=new2", "file", "huge"), 413, "exceeds this server's limit"),
    (_put("/datastore/label?image=syn002&tag=final", "label", "png"), 422, "must end in one of"),
    (_put("/datastore/label?image=syn002&tag=final", "label", "grid", "[1, 2]"), 422, "JSON object, got list"),
    (_put("/datastore/label?image=syn002&tag=final", "label", "grid", "{x"), 422, "params must be a JSON object"),
    (_put("/datastore/label?image=syn002&tag=../x", "label", "values"), 422, "case id '../x'"),
    # case upload
    (_put("/datastore/image?image=syn000", "file", "swapped"), 422, "already exists"),
    (_put("/datastore/image?image=new1", "file", "one_channel"), 422, "2 channels"),
    (_put("/datastore/image?image=new1", "file", "swapped"), 422, "channels"),
    (_put("/datastore/image?image=new1", "file", "nan"), 422, "NaN"),
    (_put("/datastore/image?image=new1", "file", "flat"), 422, "singular"),
    (_put("/datastore/image?image=../../x", "file", "swapped"), 422, "case id"),
    (_put("/datastore/?image=new1", "file", "junk"), 422, "cannot read"),
    # deletes and uploads over the model: not offered
    (("delete", "/datastore/image?id=syn000", {}), 405, "not deleted"),
    (("delete", "/datastore/?id=syn000", {}), 405, "not deleted"),
    (("delete", "/datastore/label?id=syn000&tag=final", {}), 405, "label history is never lost"),
    (_put("/model/muduo_student", "file", "junk"), 405, "replaced only by a training run"),
    (("delete", "/model/muduo_student", {}), 405, "replaced only by a training run"),
    (_put("/model/nosuch", "file", "junk"), 405, "replaced only by a training run"),
    # stock routes closed
    (("put", "/session/?uncompress=true", {"upload": ("file", "tar")}), 404, "sessions are off"),
    (("get", "/session/abc", {}), 404, "sessions are off"),
    (("get", "/logs/", {}), 404, "logs are not served"),
    (("get", "/datastore/dataset", {}), 404, "not offered"),
    (("post", "/batch/infer/muduo_student", {"json": {}}), 404, "batch inference is not offered"),
    (("get", "/proxy/dicom/qido/studies", {}), 404, "proxy is not offered"),
    (("post", "/scoring/dice", {"json": {}}), 404, "scoring is not offered"),
    (("post", "/reload", {}), 404, "not offered"),
    # training: checked on every route, never inside the server process, one at a time
    (("post", "/train/muduo?run_sync=true", {"json": {"max_iterations": 2}}), 422, "run_sync is refused"),
    (("post", "/train/muduo?enqueue=true", {"json": {"bogus": 1}}), 422, "enqueue is refused"),
    (("post", "/train/", {"json": {}}), 404, "name the training task"),
    (("post", "/train/nope", {"json": {}}), 404, "unknown training task"),
    (("post", "/train/muduo", {"json": {"max_iterations": 10**9}}), 422, "max_iterations"),
    (("post", "/train/muduo", {"json": {"lr": "nan"}}), 422, "'lr'"),
    (("post", "/train/muduo", {"json": {"lr": "inf"}}), 422, "'lr'"),
    (("post", "/train/muduo", {"json": {"seed": 10**30}}), 422, "'seed'"),
    (("post", "/train/muduo", {"json": {"pretrained": "maybe"}}), 422, "'pretrained'"),
    (("post", "/train/muduo", {"json": {"learning_speed": 3}}), 422, "learning_speed"),
    (("post", "/train/muduo", {"json": [1, 2]}), 422, "dict"),
    # active learning
    (("post", "/activelearning/nope", {"json": {}}), 404, "unknown strategy 'nope'"),
    (("post", "/activelearning/random", {"json": [1]}), 422, "must be a JSON object, got list"),
]


def test_the_catalogue_covers_every_route_kind():
    assert len(CATALOGUE) >= 40
    kinds = {(m, u.split("?")[0].rstrip("/").split("/")[1]) for (m, u, _), _, _ in CATALOGUE}
    for kind in (
        ("post", "infer"),
        ("put", "datastore"),
        ("delete", "datastore"),
        ("post", "train"),
        ("put", "model"),
        ("delete", "model"),
        ("put", "session"),
        ("post", "activelearning"),
    ):
        assert kind in kinds, kind


@pytest.mark.parametrize("request_, status, message", CATALOGUE, ids=[f"{c[0][0]} {c[0][1]}" for c in CATALOGUE])
def test_a_bad_request_gets_a_4xx_naming_the_problem_and_changes_nothing(server, request_, status, message):
    client, store, model_dir, files = server
    method, url, kwargs = request_
    url = url.replace("STORE", str(store))
    kwargs = dict(kwargs)
    if "upload" in kwargs:
        field, name = kwargs.pop("upload")
        kwargs["files"] = {field: (files[name].name, files[name].read_bytes())}
    client.get("/info/")  # the served student is published at start-up
    before, temps = _fingerprint(store, model_dir), _leftovers()
    response = getattr(client, method)(url, **kwargs)
    text = _message(response)
    assert response.status_code == status, (response.status_code, text)
    assert message in text, text
    assert tempfile.gettempdir() not in text and str(store) not in text.replace(url, "")
    assert _fingerprint(store, model_dir) == before
    assert _leftovers() <= temps
    assert client.get("/info/").status_code == 200
    assert not (store.parent / "escaped").exists() and not (Path(tempfile.gettempdir()) / "escaped").exists()
