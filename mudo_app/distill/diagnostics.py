"""MuDuo's mechanism against known truth (synthetic data): does the pseudo-label beat the student?

On synthetic datastores the unlabelled cases' ground truth is known (``ground_truth/``; read for this
only, never trained on). :class:`TruthDice` pools, per class, the Dice against that truth of the
student's prediction, the CT and PET teachers' answers, and the kept fused pseudo-label beside the
student on those same kept samples; MuDuo can only help where the pseudo-label beats the student.
Masks: the student's arg-max, a teacher's probability > 0.5, the fused pseudo-label (already binary).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mudo_app.distill.consensus import ConsensusSettings, fuse
from mudo_app.distill.step import ConsistencyParts
from mudo_app.labels import ID_TO_NAME

SOURCES = ("student", "student_kept", "ct_teacher", "pet_teacher", "pseudo_label")


class TruthDice:
    """Pooled Dice per (source, class): ``2 sum |P & T| / (sum |P| + sum |T|)`` over the samples added
    since the last :meth:`report`; a (source, class) with no sample, or empty prediction and truth in
    every one, is left out of the report."""

    def __init__(self, class_ids: Sequence[int]):
        self.class_ids = tuple(class_ids)
        self._sums = np.zeros((len(SOURCES), len(self.class_ids), 3))  # intersection, |P|, |T|
        self.samples = 0

    def add_mask(self, source: str, c: int, pred: torch.Tensor, truth: torch.Tensor) -> None:
        """One sample's binary ``pred`` and ``truth`` (same shape) for class index ``c`` of ``source``."""
        row = self._sums[SOURCES.index(source), c]
        row += (float((pred & truth).sum()), float(pred.sum()), float(truth.sum()))

    def add(
        self,
        student_prob: torch.Tensor,
        truth: torch.Tensor,
        parts: ConsistencyParts,
        settings: ConsensusSettings,
    ) -> None:
        """One iteration's samples.

        Args:
            student_prob: (b, n_classes_total, Pi, Pj, Pk) the student's softmax, un-augmented frame.
            truth: (b, Pi, Pj, Pk) integer ground truth of the same patches.
            parts: what the consistency term was made of (:func:`mudo_app.distill.step.muduo_consistency`).
            settings: the consensus settings (which teachers, how they are fused).
        """
        pred = student_prob.argmax(1).cpu()
        truth = truth.cpu()
        use_ct, use_pet = settings.teachers in ("both", "ct"), settings.teachers in ("both", "pet")
        kept, valid = parts.kept.cpu(), parts.valid.cpu()
        for c, cls in enumerate(self.class_ids):
            fused = fuse(parts.p_ct[:, c], parts.p_pet[:, c], settings, alpha=parts.alphas[c]).cpu() > 0.5
            for s in range(pred.shape[0]):
                t = truth[s] == cls
                self.add_mask("student", c, pred[s] == cls, t)
                if use_ct:
                    self.add_mask("ct_teacher", c, parts.p_ct[s, c].cpu() > 0.5, t)
                if use_pet and bool(valid[s, c]):
                    self.add_mask("pet_teacher", c, parts.p_pet[s, c].cpu() > 0.5, t)
                if bool(kept[s, c]):
                    self.add_mask("pseudo_label", c, fused[s], t)
                    self.add_mask("student_kept", c, pred[s] == cls, t)
        self.samples += pred.shape[0]

    def report(self) -> dict:
        """``{"samples": n, source: {class name: Dice}}`` since the last report; then starts again."""
        out: dict = {"samples": self.samples}
        for i, source in enumerate(SOURCES):
            inter, p, t = self._sums[i].T
            out[source] = {
                ID_TO_NAME[cls]: float(2 * inter[c] / (p[c] + t[c]))
                for c, cls in enumerate(self.class_ids)
                if p[c] + t[c] > 0
            }
        self._sums[:] = 0
        self.samples = 0
        return out
