"""MuDuo Label: the MONAI Label app. Assembles the tasks of ``lib/``; no maths and no IO logic here.

    monailabel start_server --app apps/muduo --studies sample-datasets/demo/datastore \\
        --host 127.0.0.1 --port 8000 [--conf ct_teacher PATH --conf pet_teacher PATH ...]

``--conf`` keys: see :class:`lib.configs.server.ServerConfig`.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from monailabel.config import settings
from monailabel.interfaces.app import MONAILabelApp

from lib import routes
from lib.activelearning.random import RandomUnlabelled
from lib.activelearning.served import RecentlyServed
from lib.activelearning.teacher_disagreement import TeacherDisagreement
from lib.configs.server import Resources, ServerConfig
from lib.datastore import MuDuoDatastore, PacsDatastore
from lib.errors import http_errors, not_found, unprocessable
from lib.infers.muduo_student import MuDuoStudentInfer
from lib.infers.sam_med3d_ct import SamMed3DCTInfer
from lib.infers.seganypet_pet import SegAnyPETInfer
from lib.security import Users, bound_host, is_loopback
from lib.trainers.muduo import MuDuoTrainTask
from mudo_app import __version__
from mudo_app.dicom.pacs import PacsMirror
from mudo_app.errors import InputError
from mudo_app.labels import LABELS, label_names
from mudo_app.models.checkpoint import publish_student

logger = logging.getLogger(__name__)


class MuDuoApp(MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]):
        self.server_config = ServerConfig.from_conf(app_dir, conf)
        self.users = Users.load(self.server_config.auth_users) if self.server_config.auth_users else None
        host = bound_host(sys.argv)
        if host is not None and not is_loopback(host) and self.users is None:
            raise InputError(
                f"this server would listen on {host}, reachable from other machines, without authentication: "
                "give --conf auth_users FILE (see README, Security), or --host 127.0.0.1"
            )
        self.resources = Resources(self.server_config)
        self.served = RecentlyServed(self.server_config.recent_minutes)
        self._publish_initial_student()
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="MuDuo Label",
            description="PET/CT segmentation of 12 organs and lesions: a prompt-free MuDuo student, "
            "click refinement through the CT and PET teachers, background retraining",
            version=__version__,
            labels=label_names(),
        )

    def _publish_initial_student(self) -> None:
        conf = self.server_config
        conf.model_dir.mkdir(parents=True, exist_ok=True)
        if not conf.published_student.is_file() and conf.student is not None and conf.student.is_file():
            publish_student(conf.student, conf.published_student)
            logger.info(f"serving the initial student {conf.student}")

    # ---- tasks -------------------------------------------------------------------------------------
    def init_datastore(self):
        studies = str(self.studies)  # type: ignore[has-type]  # set by MONAILabelApp.__init__ before this call
        if studies.startswith(("http://", "https://")):  # a PACS: served through its local mirror
            mirror = PacsMirror(studies, self.server_config.pacs_folder)
            self.studies = str(mirror.datastore)  # what training reads
            return PacsDatastore(
                mirror,
                student=self.server_config.published_student,
                max_voxels=self.server_config.max_voxels,
                auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
                read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
            )
        return MuDuoDatastore(
            self.studies,
            max_voxels=self.server_config.max_voxels,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def init_infers(self):
        return {
            "muduo_student": MuDuoStudentInfer(self.resources),
            "sam_med3d_ct": SamMed3DCTInfer(self.resources),
            "seganypet_pet": SegAnyPETInfer(self.resources),
        }

    def init_trainers(self):
        return {"muduo": MuDuoTrainTask(self.resources, self.studies)}

    def init_strategies(self):
        return {
            "teacher_disagreement": TeacherDisagreement(self.resources, self.served),
            "random": RandomUnlabelled(self.served),
        }

    def on_init_complete(self):
        """Server start (MONAI Label calls it only in the server process, not in training subprocesses)."""
        self._datastore.remove_stale_temporaries()
        super().on_init_complete()
        routes.install(self)

    # ---- requests ----------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        meta = super().info()
        meta["labels"] = label_names()
        meta["label_colors"] = {lbl.name: list(lbl.color) for lbl in LABELS}
        meta["teachers"] = {name: task.describe() for name, task in self._infers.items() if hasattr(task, "describe")}
        return meta

    def model_info(self, model):
        info = super().model_info(model)
        trainer = self._trainers.get("muduo")
        if info is not None and model == "muduo_student" and trainer is not None:  # the muduo task makes the student
            info["train_stats"] = trainer.stats()
        return info

    def infer(self, request, datastore=None):
        model = request.get("model")
        if model not in self._infers:
            raise not_found(f"unknown model {model!r}; available: {sorted(self._infers)}")
        image = request.get("image")
        if not isinstance(image, str):
            raise unprocessable(f"image must be the id of a datastore case, got {image!r}")
        self._datastore.require(image)  # ids only: a path, existing or not, is an unknown id
        request = {**request, "pet": self._datastore.pet_uri(image)}
        if request.get("save_label") or request.get("label_tag"):
            raise unprocessable("inference never stores a label: save a corrected label with PUT /datastore/label")
        self.resources.use_inference_threads()  # the cores a background training leaves
        with http_errors():
            return super().infer(request, datastore)

    def next_sample(self, request):
        strategy = request.get("strategy") or "random"
        if strategy not in self._strategies:
            raise not_found(f"unknown strategy {strategy!r}; available: {sorted(self._strategies)}")
        self.resources.use_inference_threads()  # teacher disagreement runs the teachers
        with http_errors():
            return super().next_sample(request)
