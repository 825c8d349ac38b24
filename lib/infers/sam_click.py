"""Click refinement through a frozen 3D SAM teacher (shared by ``sam_med3d_ct`` and ``seganypet_pet``).

The 3D Slicer plugin sends ``foreground`` / ``background`` lists of ``[i, j, k]`` voxel indices of the
image it shows (the CT; the PET shares its grid). One :class:`Sam3DPredictor` per image is kept (LRU),
so the image embedding of a crop is computed once and reused by later clicks on the same image.
"""

from __future__ import annotations

import math
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


def clicks(request: dict[str, Any], key: str, limit: int) -> list[list[float]]:
    """``request[key]``: a list of ``[i, j, k]`` voxel indices (3 finite numbers each), or absent / null."""
    value = request.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > limit:
        raise InputError(f"{key} must be a list of at most {limit} [i, j, k] voxel indices, got {value!r:.80}")
    out = []
    for point in value:
        ok = isinstance(point, list) and len(point) == 3
        ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in point)
        if not ok:
            raise InputError(f"{key}: each click must be [i, j, k], three finite numbers, got {point!r:.80}")
        out.append([float(v) for v in point])
    return out


def click_label(label: Any) -> tuple[str, int]:
    """(name, value) of the structure a click session segments: a label-map name, or none (``foreground``, 1)."""
    if label is None or label == "" or label == "foreground":
        return "foreground", 1
    if isinstance(label, str) and NAME_TO_ID.get(label, 0) > 0:
        return label, NAME_TO_ID[label]
    names = sorted(n for n, i in NAME_TO_ID.items() if i > 0)
    raise InputError(f"label {label!r:.80} is not a structure of the label map; one of {names}, or none")


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
        """The predictor of ``path``'s image (the caller holds ``self._lock``)."""
        if path not in self._predictors:
            teacher = self.resources.teacher(self.modality)
            volume = load_volume(path, self.modality, dtype=np.float32)
            pred = Sam3DPredictor(teacher.model, teacher.contract, one_click_multimask=teacher.one_click_multimask)
            pred.set_image(volume.array, volume.affine, self.modality)
            self._predictors[path] = pred
            while len(self._predictors) > self.images_kept:
                self._predictors.popitem(last=False)
        self._predictors.move_to_end(path)
        return self._predictors[path]

    def __call__(self, request: dict[str, Any]) -> tuple[str, dict]:
        check_params(request, extra=("pet", "foreground", "background"))
        limit = self.resources.config.max_clicks
        fg, bg = clicks(request, "foreground", limit), clicks(request, "background", limit)
        if not fg:
            raise InputError("give at least one foreground click ([i, j, k] voxel indices of the image)")
        if len(fg) + len(bg) > limit:
            raise InputError(f"{len(fg) + len(bg)} clicks exceed this server's limit of {limit} per request")
        name, value = click_label(request.get("label"))
        started = time.perf_counter()
        path = request["image"] if self.modality == "CT" else request["pet"]
        with self._lock:  # a predictor's crop cache is not shared between threads
            predictor = self._predictor(path)
            calls = predictor.encoder_calls
            ready = time.perf_counter()
            result = predictor.predict(points=fg + bg, labels=[1] * len(fg) + [0] * len(bg))
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
