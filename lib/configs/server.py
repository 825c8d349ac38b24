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
from monailabel.utils.async_tasks.utils import processes

from mudo_app.errors import InputError
from mudo_app.io.uploads import DEFAULT_MAX_VOXELS
from mudo_app.io.volume import Volume
from mudo_app.models.checkpoint import load_student, training_patch
from mudo_app.models.teachers import Teacher, load_teacher
from mudo_app.predict import predict_volume
from mudo_app.resources import shipped_student
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


# numeric --conf keys: (type, default, smallest, largest)
NUMBERS: dict[str, tuple[type, float, float, float]] = {
    "train_iterations": (int, 300, 1, 1_000_000),  # default length of a POST /train/muduo run
    "max_train_iterations": (int, 100_000, 1, 10_000_000),  # the longest run a request may ask for
    "recent_minutes": (float, 10.0, 0.0, 100_000.0),  # a case served to one client is skipped for others
    "max_upload_mb": (float, 1024.0, 1.0, 100_000.0),  # bytes of one upload
    "max_voxels": (int, DEFAULT_MAX_VOXELS, 1, 2**34),  # voxels of one uploaded volume (from its header)
    "max_clicks": (int, 200, 1, 100_000),  # clicks of one refinement request
    "token_minutes": (float, 480.0, 1.0, 100_000.0),  # lifetime of a login token (auth on)
    "train_threads": (int, 1, 1, 1024),  # torch threads of a background training run
    "infer_threads": (int, 0, 0, 1024),  # torch threads of an inference; 0: see ServerConfig.inference_threads
}
PATHS = ("student", "ct_teacher", "pet_teacher", "model_dir", "auth_users", "pacs_mirror")


@dataclass(frozen=True)
class ServerConfig:
    """``model_dir``: where the served student is published (``muduo_student.pt``) and runs are kept;
    ``student``: the initial student published there on first start (default: the shipped student,
    :func:`mudo_app.resources.shipped_student`);
    ``ct_teacher`` / ``pet_teacher``: official checkpoints (default: the shipped stand-ins);
    ``precision``: inference; the numeric limits: :data:`NUMBERS`;
    ``auth_users``: a users file (:mod:`lib.security`): authentication on; ``allowed_origins``: the
    browser origins CORS answers (``--conf allowed_origins http://a:3000,http://b``; none by default).
    ``train_threads`` / ``infer_threads``: torch threads of background training and of inference, so
    that the two share the cores instead of oversubscribing them (:meth:`inference_threads`).
    ``pacs_mirror``: with ``--studies http://.../dicom-web`` (a PACS), the local mirror of its PET/CT
    studies (default ``<model_dir>/pacs``; :class:`mudo_app.dicom.pacs.PacsMirror`)."""

    model_dir: Path
    student: Path | None = None
    ct_teacher: Path | None = None
    pet_teacher: Path | None = None
    train_iterations: int = 300
    max_train_iterations: int = 100_000
    precision: str = "auto"
    recent_minutes: float = 10.0
    max_upload_mb: float = 1024.0
    max_voxels: int = DEFAULT_MAX_VOXELS
    max_clicks: int = 200
    token_minutes: float = 480.0
    train_threads: int = 1
    infer_threads: int = 0
    auth_users: Path | None = None
    allowed_origins: tuple[str, ...] = ()
    pacs_mirror: Path | None = None

    @property
    def pacs_folder(self) -> Path:
        return self.pacs_mirror or self.model_dir / "pacs"

    @property
    def published_student(self) -> Path:
        return self.model_dir / "muduo_student.pt"

    def inference_threads(self, training: bool) -> int:
        """Threads of one inference: ``infer_threads`` when set; else every core this process may use,
        less ``train_threads`` while a training run is going (at least 1)."""
        if self.infer_threads:
            return self.infer_threads
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return max(1, cores - self.train_threads) if training else cores

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @staticmethod
    def from_conf(app_dir: str, conf: dict[str, str]) -> ServerConfig:
        known = {*NUMBERS, *PATHS, "precision", "allowed_origins"}
        unknown = sorted(set(conf) - known - MONAI_LABEL_KEYS)
        if unknown:
            raise InputError(f"unknown --conf key(s) {unknown}; MuDuo keys: {sorted(known)}")

        def path(key: str) -> Path | None:
            return Path(conf[key]).expanduser().resolve() if conf.get(key) else None

        numbers: dict[str, Any] = {}
        for key, (kind, default, lo, hi) in NUMBERS.items():
            text = conf.get(key, default)
            try:
                value = kind(text)
            except (TypeError, ValueError) as exc:
                raise InputError(
                    f"--conf {key} must be {'an integer' if kind is int else 'a number'}, got {text!r}"
                ) from exc
            if not lo <= value <= hi:  # also refuses NaN
                raise InputError(f"--conf {key} must be in [{lo:g}, {hi:g}], got {value}")
            numbers[key] = value
        precision = conf.get("precision", "auto")
        if precision not in PRECISIONS:
            raise InputError(f"--conf precision must be one of {PRECISIONS}, got {precision!r}")
        return ServerConfig(
            model_dir=path("model_dir") or Path(app_dir) / "model",
            student=path("student") or shipped_student(),
            ct_teacher=path("ct_teacher"),
            pet_teacher=path("pet_teacher"),
            precision=precision,
            auth_users=path("auth_users"),
            pacs_mirror=path("pacs_mirror"),
            allowed_origins=_origins(conf.get("allowed_origins", "")),
            **numbers,
        )


def _origins(text: str) -> tuple[str, ...]:
    """``http://host:port`` origins, comma-separated; ``*`` is refused (it would let any web page in)."""
    origins = tuple(o.strip().rstrip("/") for o in str(text).split(",") if o.strip())
    for origin in origins:
        if origin == "*" or not origin.startswith(("http://", "https://")) or origin.count("/") != 2:
            raise InputError(
                f"--conf allowed_origins: {origin!r} is not an origin like http://host:3000 ('*' is refused)"
            )
    return origins


class Resources:
    """Models shared by the app's tasks, loaded on first use (start-up stays fast, and the training
    subprocess that re-creates the app loads nothing it does not need)."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self._lock = threading.Lock()
        self._teachers: dict[str, Teacher] = {}
        self._student: tuple[int, torch.nn.Module, StudentInput, dict[str, Any]] | None = None  # (mtime_ns, ...)

    def use_inference_threads(self) -> int:
        """Set this process's torch threads for the inference about to run (the cores a running
        training leaves, :meth:`ServerConfig.inference_threads`); returns the number."""
        threads = self.config.inference_threads(training=bool(processes("train")))
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        return threads

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
                f"no student published at {path}: start with `--conf student PATH`, or train one with POST /train/muduo"
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
