"""Patches of the preprocessed training set (:mod:`mudo_app.train.data`) read in a background thread:
the trainer draws one iteration ahead (:class:`Draws`) and finds its patches read (:class:`Patches`),
with the lesions of config ``lesion_paste`` already pasted in."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mudo_app.train.data import TrainingSet
from mudo_app.transforms.patches import paste_lesion

PASTE_TISSUE = -0.5  # a pasted lesion is centred on a voxel above -500 HU (student CT scale): tissue, not air


@dataclass
class Draws:
    """One iteration's random draws: labelled ``(case, start, augmentation)``, unlabelled
    ``(case, position, augmentation, point seed)``, the fusion weights (classes, samples) and, per
    labelled sample, the lesion pasted into it (config ``lesion_paste``): ``(source case, lesion,
    seed of the place)`` or ``None`` (an empty list: none pasted)."""

    labelled: list[tuple[int, np.ndarray, Any]]
    unlabelled: list[tuple[int, int, Any, int]]
    alphas: np.ndarray
    pastes: list[tuple[int, int, int] | None] = field(default_factory=list)


@dataclass
class Patches:
    """The arrays the draws of one process name: images (2, P...) and labels (P...) of its labelled
    samples, images of its unlabelled samples."""

    images: list[np.ndarray]
    labels: list[np.ndarray]
    unlabelled: list[np.ndarray]


class PatchReader:
    """Reads the patches of the draws it is given in a background thread, so the training step
    finds them read (the trainer draws one iteration ahead)."""

    def __init__(self, data: TrainingSet, patch: Sequence[int]):
        self.data, self.patch = data, tuple(patch)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="patch-reader")

    def _read(self, labelled: list[tuple[Any, ...]], unlabelled: list[tuple[Any, ...]], pastes: list[Any]) -> Patches:
        lab = [self.data.labelled[ci] for ci, _, _ in labelled]
        patches = Patches(
            [case.image_patch(start, self.patch) for case, (_, start, _) in zip(lab, labelled)],
            [case.label_patch(start, self.patch) for case, (_, start, _) in zip(lab, labelled)],
            [self.data.unlabelled[ci].patch(pos, self.patch) for ci, pos, _, _ in unlabelled],
        )
        for image, label, paste in zip(patches.images, patches.labels, pastes):
            if paste is not None:
                self._paste(image, label, *paste)
        return patches

    def _paste(self, image: np.ndarray, label: np.ndarray, source: int, lesion: int, seed: int) -> None:
        """Paste lesion ``lesion`` of labelled case ``source``, centred on a random tissue voxel of the patch."""
        tissue = np.argwhere(image[0] > PASTE_TISSUE)
        if not len(tissue):
            return
        box, mask = self.data.labelled[source].lesion_box(lesion)
        centre = tissue[np.random.default_rng(seed).integers(len(tissue))]
        paste_lesion(image, label, box, mask, centre - np.array(mask.shape) // 2)

    def submit(self, labelled: list, unlabelled: list, pastes: list | None = None) -> Future[Patches]:
        """Read (and paste into) the patches of these draws in the background."""
        return self._pool.submit(self._read, labelled, unlabelled, pastes or [])

    def close(self) -> None:
        self._pool.shutdown(wait=True)
