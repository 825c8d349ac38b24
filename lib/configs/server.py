"""The server's typed configuration (MONAI Label ``--conf`` strings parsed once) and its shared models.

``monailabel start_server ... --conf student PATH --conf ct_teacher PATH --conf pet_teacher PATH
--conf train_iterations 300 --conf precision auto``. Unknown ``--conf`` keys that are not MONAI
Label's own are refused at start-up with the list of known ones.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mudo_app.errors import InputError
from mudo_app.io.volume import Volume
from mudo_app.models.checkpoint import load_student, training_patch
from mudo_app.models.teachers import Teacher, load_teacher
from mudo_app.predict import predict_volume
from mudo_app.resources import demo_student
from mudo_app.runtime.choices import PRECISIONS
from mudo_app.transforms.intensity import StudentInput

# --conf keys MONAI Label itself (or its sample apps) use; passed through untouched
MONAI_LABEL_KEYS = {
    "models",
    "preload",
    "skip_scoring",
    "skip_strategies",
    "skip_trainers",
    "server_mode",
    "tracking",
    "tracking_uri",
    "tracking_experiment_name",
    "epistemic_enabled",
    "use_pretrained_model",
}


@dataclass(frozen=True)
class ServerConfig:
    """``model_dir``: where the served student is published (``muduo_student.pt``) and runs are kept;
    ``student``: the initial student published there on first start (default: the demo student,
    :func:`mudo_app.resources.demo_student`; None where no demo folder is known);
    ``ct_teacher`` / ``pet_teacher``: official checkpoints (default: the shipped stand-ins);
    ``train_iterations``: default length of a ``POST /train/muduo`` run; ``precision``: inference."""

    model_dir: Path
    student: Path | None = None
    ct_teacher: Path | None = None
    pet_teacher: Path | None = None
    train_iterations: int = 300
    precision: str = "auto"
    recent_minutes: float = 10.0

    @property
    def published_student(self) -> Path:
        return self.model_dir / "muduo_student.pt"

    @staticmethod
    def from_conf(app_dir: str, conf: dict[str, str]) -> ServerConfig:
        known = {"student", "ct_teacher", "pet_teacher", "train_iterations", "precision", "recent_minutes", "model_dir"}
        unknown = sorted(set(conf) - known - MONAI_LABEL_KEYS)
        if unknown:
            raise InputError(f"unknown --conf key(s) {unknown}; MuDuo keys: {sorted(known)}")

        def path(key):
            return Path(conf[key]).expanduser().resolve() if conf.get(key) else None

        try:
            iterations = int(conf.get("train_iterations", 300))
            recent = float(conf.get("recent_minutes", 10.0))
        except ValueError as exc:
            raise InputError(f"--conf train_iterations / recent_minutes must be numbers: {exc}") from exc
        if iterations < 1:
            raise InputError(f"--conf train_iterations must be at least 1, got {iterations}")
        precision = conf.get("precision", "auto")
        if precision not in PRECISIONS:
            raise InputError(f"--conf precision must be one of {PRECISIONS}, got {precision!r}")
        return ServerConfig(
            model_dir=path("model_dir") or Path(app_dir) / "model",
            student=path("student") or demo_student(),
            ct_teacher=path("ct_teacher"),
            pet_teacher=path("pet_teacher"),
            train_iterations=iterations,
            precision=precision,
            recent_minutes=recent,
        )


class Resources:
    """Models shared by the app's tasks, loaded on first use (start-up stays fast, and the training
    subprocess that re-creates the app loads nothing it does not need)."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self._lock = threading.Lock()
        self._teachers: dict[str, Teacher] = {}
        self._student: tuple[int, torch.nn.Module, StudentInput, dict[str, Any]] | None = None  # (mtime_ns, ...)

    def teacher(self, modality: str) -> Teacher:
        with self._lock:
            if modality not in self._teachers:
                ckpt = self.config.ct_teacher if modality == "CT" else self.config.pet_teacher
                self._teachers[modality] = load_teacher(modality, ckpt)
            return self._teachers[modality]

    def student(self):
        """(model, prep, meta) of the published student, reloaded when the file changed (after training)."""
        path = self.config.published_student
        if not path.is_file():
            raise FileNotFoundError(
                f"no student published at {path}: run `make demo`, or train one with POST /train/muduo"
            )
        with self._lock:
            mtime = os.stat(path).st_mtime_ns
            if self._student is None or self._student[0] != mtime:
                model, prep, meta = load_student(path)
                self._student = (mtime, model, prep, meta)
            _, model, prep, meta = self._student
            return model, prep, meta

    def predict(self, ct: Volume, pet: Volume) -> Volume:
        """The served student's label map (0..13) on the PET grid: windows of its training patch size."""
        model, prep, meta = self.student()
        return predict_volume(model, prep, ct, pet, roi=training_patch(meta), precision=self.config.precision)

    def student_mtime(self) -> int | None:
        path = self.config.published_student
        return os.stat(path).st_mtime_ns if path.is_file() else None
