"""Infer task ``muduo_student``: prompt-free segmentation (13 labels + background) by the served student."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from lib.configs.server import Resources
from lib.infers.common import check_params, write_result
from mudo_app.io.volume import load_volume
from mudo_app.labels import label_names


class MuDuoStudentInfer(InferTask):
    """``request["image"]``: the CT path (the datastore image); ``request["pet"]``: the PET path, filled
    in by the app from the image id. Output: labels 0..13 on exactly the CT/PET grid and affine."""

    def __init__(self, resources: Resources):
        super().__init__(
            InferType.SEGMENTATION,
            label_names(),
            3,
            "MuDuo student: prompt-free PET/CT segmentation of 12 organs and lesions",
        )
        self.resources = resources

    def get_path(self, validate=True):
        path = self.resources.config.published_student
        return str(path) if (path.is_file() or not validate) else None

    def is_valid(self) -> bool:
        return True  # listed even before a student exists: an infer then answers 503 with the reason

    def __call__(self, request: dict[str, Any]) -> tuple[str, dict]:
        check_params(request, extra=("pet",))
        started = time.perf_counter()
        _, _, meta = self.resources.student()
        ct = load_volume(request["image"], "CT", dtype=np.float32)
        pet = load_volume(request["pet"], "PET", dtype=np.float32)
        loaded = time.perf_counter()
        label = self.resources.predict(ct, pet)
        done = time.perf_counter()
        params = {
            "label_names": label_names(),
            "latency": {"load": round(loaded - started, 3), "infer": round(done - loaded, 3)},
            "student": {"method": meta["provenance"].get("method"), "iterations": meta["provenance"].get("iterations")},
        }
        return write_result(label, request), params
