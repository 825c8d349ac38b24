"""Active-learning strategy ``teacher_disagreement``: the unlabelled case the teachers (and the student)
disagree on most, skipping cases recently served to another client."""

from __future__ import annotations

import logging
from typing import Any

from monailabel.interfaces.tasks.strategy import Strategy

from lib.activelearning.served import RecentlyServed
from lib.configs.server import Resources
from mudo_app.distill.disagreement import case_disagreement

logger = logging.getLogger(__name__)


class TeacherDisagreement(Strategy):
    def __init__(self, resources: Resources, served: RecentlyServed):
        super().__init__(
            "Unlabelled case where the CT and PET teachers, and the student, disagree most "
            "(not one served to another client in the last minutes)"
        )
        self.resources = resources
        self.served = served
        self._scores: dict[tuple[str, int], dict[str, Any]] = {}  # (case, student mtime) -> score

    def score(self, datastore, image_id: str) -> dict[str, Any]:
        key = (image_id, self.resources.student_mtime() or 0)
        if key not in self._scores:
            case = datastore.store.load_case(image_id)
            label = self.resources.predict(case.ct, case.pet).array
            teachers = (self.resources.teacher("CT"), self.resources.teacher("PET"))
            self._scores[key] = case_disagreement(label, case.ct, case.pet, teachers)
            logger.info(f"teacher disagreement of {image_id}: {self._scores[key]['score']:.3f}")
        return self._scores[key]

    def __call__(self, request: dict[str, Any], datastore) -> dict[str, Any]:
        client, candidates = self.served.candidates(request, datastore)
        if not candidates:
            return {}
        scored = sorted(((self.score(datastore, i)["score"], i) for i in candidates), key=lambda t: (-t[0], t[1]))
        best_score, best = scored[0]
        self.served.mark(best, client)
        return {
            "id": best,
            "score": round(best_score, 4),
            "strategy": "teacher_disagreement",
            "per_structure": self.score(datastore, best)["per_structure"],
        }
