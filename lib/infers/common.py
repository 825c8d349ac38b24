"""What every MuDuo infer task shares: request checks and writing the result as the client asks."""

from __future__ import annotations

import tempfile
from typing import Any

import numpy as np

from mudo_app.errors import InputError
from mudo_app.io.volume import Volume, save_volume

EXTENSIONS = (".nii.gz", ".nii", ".nrrd")
DTYPES = {"uint8": np.uint8, "uint16": np.uint16, "int16": np.int16, "int32": np.int32, "float32": np.float32}
# params MONAI Label and the 3D Slicer plugin add to every infer request
COMMON_PARAMS = {
    "model",
    "image",
    "device",
    "result_extension",
    "result_dtype",
    "result_compress",
    "client_id",
    "description",
    "save_label",
    "label_tag",
    "label_info",
    "session",
    "timeout",
    "cache_transforms",
    "cache_transforms_in_memory",
    "cache_transforms_ttl",
    "pipeline",
    "output",
    "largest_cc",
    "restore_label_idx",
    "label",
}


def check_params(request: dict[str, Any], extra=()) -> None:
    unknown = sorted(set(request) - COMMON_PARAMS - set(extra))
    if unknown:
        raise InputError(f"unknown parameter(s) {unknown} for model {request.get('model')!r}")
    ext = request.get("result_extension", ".nii.gz")
    if ext not in EXTENSIONS:
        raise InputError(f"result_extension must be one of {EXTENSIONS}, got {ext!r}")
    dtype = request.get("result_dtype", "uint8")
    if dtype not in DTYPES:
        raise InputError(f"result_dtype must be one of {sorted(DTYPES)}, got {dtype!r}")


def write_result(label: Volume, request: dict[str, Any]) -> str:
    """Write ``label`` (on the image's grid and affine) to a temporary file the server sends and deletes."""
    ext = request.get("result_extension", ".nii.gz")
    path = tempfile.NamedTemporaryFile(suffix=ext, prefix="muduo-", delete=False).name
    save_volume(label, path, dtype=DTYPES[request.get("result_dtype", "uint8")])
    return path
