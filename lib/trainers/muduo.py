"""Train task ``muduo``: background MuDuo retraining from the datastore, published atomically.

MONAI Label runs it in a subprocess (``POST /train/muduo``; status in ``GET /train/``; ``DELETE
/train/`` stops it). Cases with a ``final`` label are the labelled set, all others unlabelled. The
new student is written to a run folder first and only then copied over the served file by an atomic
rename, so a failed, stopped or killed run leaves the previous student serving; a run folder holds
``FINISHED.json`` only once its student is published (one without it never finished).
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Any

from monailabel.interfaces.tasks.train import TrainTask

from lib.configs.muduo_train import train_config
from lib.configs.server import Resources
from mudo_app.errors import InputError
from mudo_app.io.atomic import atomic_write
from mudo_app.models.checkpoint import publish_student
from mudo_app.train.config import TrainConfig
from mudo_app.train.trainer import Trainer

logger = logging.getLogger(__name__)


FINISHED = "FINISHED.json"  # written into a run folder when its student has been published


def failure_reason(details: list[str]) -> str:
    """Why a run ended in ERROR, from the last lines of its process (``GET /train/`` ``details``)."""
    for line in reversed(details):
        for marker in ("MuDuo training refused: ", "MuDuo training failed: "):
            if marker in line:
                return line[line.index(marker) :]
    for line in reversed(details):  # the log line may have scrolled out: the traceback's last line
        match = re.match(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception)): (.+)$", line.strip())
        if match:
            kind = "refused" if match.group(1) == "InputError" else "failed"
            return f"MuDuo training {kind}: {match.group(2)}"
    return (
        "the training process ended without finishing and without an error message: it was killed "
        "(by a signal, or for lack of memory); the previous student keeps serving"
    )


DONE_LINE = "MuDuo training done: published"


def explain_end(task: dict[str, Any]) -> dict[str, Any]:
    """A snapshot of a ``GET /train/`` task with the reason of a failure; a run whose process was ended
    after it had published its student (its last line says so) is DONE, with a note. (A snapshot: MONAI
    Label's runner changes the live task while the answer is being written.)"""
    details = list(task.get("details") or [])
    task = {**task, "details": details}
    if task.get("status") != "ERROR":
        return task
    if any(DONE_LINE in line for line in details):
        return {**task, "status": "DONE", "note": "the process was ended after it had published its student"}
    return {**task, "reason": failure_reason(details)}


class MuDuoTrainTask(TrainTask):
    def __init__(self, resources: Resources, studies: str):
        super().__init__(
            "MuDuo: semi-supervised retraining of the student from the labelled and unlabelled cases "
            "(frozen CT + PET teachers)"
        )
        self.resources = resources
        self.studies = studies

    @property
    def runs(self) -> Path:
        return self.resources.config.model_dir / "runs"

    def config(self) -> dict[str, Any]:
        return {
            "max_iterations": self.resources.config.train_iterations,
            "pretrained": True,
            "seed": 0,
            "method": "muduo",
        }

    def stats(self) -> dict[str, Any]:
        path = self.resources.config.model_dir / "train_stats.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def _config(self, request: dict[str, Any], out: Path) -> TrainConfig:
        conf = self.resources.config
        return train_config(
            request,
            self.studies,
            conf.train_iterations,
            out,
            conf.published_student,
            conf.ct_teacher,
            conf.pet_teacher,
            max_iterations=conf.max_train_iterations,
            threads=conf.train_threads,
            preprocessed=conf.model_dir / "preprocessed",
        )

    def check(self, request: dict[str, Any]) -> TrainConfig:
        """Validate a request body before anything starts (used by the server's train route)."""
        return self._config(request, self.runs / "check")

    def __call__(self, request: dict[str, Any], datastore) -> dict[str, Any]:
        conf = self.resources.config
        run = self.runs / time.strftime("%Y%m%d-%H%M%S")
        started = time.time()
        try:
            config = self._config(request, run)
            logger.info(f"MuDuo training: {config.iterations} iterations, method {config.method}, run folder {run}")
            student = Trainer(config, progress=True).run()
        except InputError as exc:
            logger.error(f"MuDuo training refused: {exc}")
            raise
        except Exception as exc:
            logger.error(f"MuDuo training failed: {type(exc).__name__}: {exc}")
            raise
        self.publish(student)
        stats = {
            "last_run": str(run),
            "iterations": config.iterations,
            "method": config.method,
            "seconds": round(time.time() - started, 1),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
            "warm_start": config.init_from is not None,
        }
        with atomic_write(run / FINISHED) as tmp:  # last: a run folder without it never finished
            tmp.write_text(json.dumps(stats, indent=2))
        with atomic_write(conf.model_dir / "train_stats.json") as tmp:
            tmp.write_text(json.dumps(stats, indent=2))
        logger.info(f"{DONE_LINE} {conf.published_student}")
        return stats

    def publish(self, student: Path) -> None:
        """Serve ``student`` from now on (checked, then renamed over the served file: atomic)."""
        publish_student(student, self.resources.config.published_student)
