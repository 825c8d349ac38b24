"""Click refinement through a frozen 3D SAM teacher (shared by ``sam_med3d_ct`` and ``seganypet_pet``).

The 3D Slicer plugin sends ``foreground`` / ``background`` lists of ``[i, j, k]`` voxel indices of the
image it shows (the CT; the PET shares its grid). One :class:`Sam3DPredictor` per image is kept (LRU),
so the image embedding of a crop is computed once and reused by later clicks on the same image.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

import numpy as np
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from lib.configs.server import Resources
from lib.infers.common import check_params, write_result
from mudo_app.errors import InputError
from mudo_app.io.volume import Volume, load_volume
from mudo_app.labels import NAME_TO_ID
from mudo_app.models.sam3d import Sam3DPredictor


class SamClickInfer(InferTask):
    modality = "CT"  # which image of the case the teacher reads: "CT" (request["image"]) or "PET"

    def __init__(self, resources: Resources, description: str, images_kept: int = 3):
        super().__init__(InferType.DEEPGROW, {"foreground": 1}, 3, description)
        self.resources = resources
        self.images_kept = images_kept
        self._predictors: OrderedDict[str, Sam3DPredictor] = OrderedDict()
        self._lock = threading.Lock()

    def is_valid(self) -> bool:
        return True

    def info(self) -> dict[str, Any]:
        out = super().info()
        out["teacher"] = self.describe()
        return out

    def describe(self) -> dict[str, Any]:
        """Whether the teacher is a stand-in or an official checkpoint (without loading it)."""
        conf = self.resources.config
        ckpt = conf.ct_teacher if self.modality == "CT" else conf.pet_teacher
        if ckpt is None:
            return {"stand_in": True, "checkpoint": "mudo_app/assets/teachers (shipped stand-in, synthetic data)"}
        return {"stand_in": False, "checkpoint": str(ckpt)}

    def _predictor(self, path: str) -> Sam3DPredictor:
        with self._lock:
            if path not in self._predictors:
                teacher = self.resources.teacher(self.modality)
                volume = load_volume(path, self.modality, dtype=np.float32)
                pred = Sam3DPredictor(teacher.model, teacher.contract)
                pred.set_image(volume.array, volume.affine, self.modality)
                self._predictors[path] = pred
                while len(self._predictors) > self.images_kept:
                    self._predictors.popitem(last=False)
            self._predictors.move_to_end(path)
            return self._predictors[path]

    def __call__(self, request: dict[str, Any]) -> tuple[str, dict]:
        check_params(request, extra=("pet", "foreground", "background"))
        fg = [list(p) for p in request.get("foreground") or []]
        bg = [list(p) for p in request.get("background") or []]
        if not fg:
            raise InputError("give at least one foreground click ([i, j, k] voxel indices of the image)")
        started = time.perf_counter()
        path = request["image"] if self.modality == "CT" else request["pet"]
        predictor = self._predictor(path)
        calls = predictor.encoder_calls
        ready = time.perf_counter()
        result = predictor.predict(points=fg + bg, labels=[1] * len(fg) + [0] * len(bg))
        label = str(request.get("label"))
        name, value = (label, NAME_TO_ID[label]) if NAME_TO_ID.get(label, 0) > 0 else ("foreground", 1)
        mask = Volume(result.mask.astype(np.uint8) * value, predictor.affine)
        done = time.perf_counter()
        params = {
            "label_names": {name: value},
            "iou_estimate": result.iou,
            "embedding_reused": predictor.encoder_calls == calls,
            "latency": {"image": round(ready - started, 3), "click": round(done - ready, 3)},
            "teacher": self.describe(),
        }
        return write_result(mask, request), params
