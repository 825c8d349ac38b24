"""Random training patches with foreground over-sampling (as nnU-Net does)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
from scipy import ndimage

from mudo_app.evaluation.autopet import CONNECTIVITY_18
from mudo_app.labels import LESION


class PatchSource(Protocol):
    """A labelled case that cuts random training patches (in memory: :class:`ArrayCase`; on disk:
    :class:`mudo_app.train.data.StoredCase`); both make the draws of :func:`draw_start`."""

    def random_patch(
        self, size: Sequence[int], rng: np.random.Generator, foreground_prob: float, lesion_share: float = 0.0
    ) -> tuple[np.ndarray, np.ndarray]: ...


def pad_to(image: np.ndarray, label: np.ndarray, size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Pad (C, X, Y, Z) image and (X, Y, Z) label at the end so every side is at least ``size``."""
    pad = [(0, max(0, s - d)) for s, d in zip(size, label.shape)]
    if any(p[1] for p in pad):
        image = np.pad(image, [(0, 0), *pad], mode="edge")
        label = np.pad(label, pad)
    return image, label


def class_voxels(label: np.ndarray) -> dict[int, np.ndarray]:
    """Voxel indices (N, 3) of each non-zero class present, ascending by class: compute once per case."""
    return {int(c): np.argwhere(label == c) for c in np.unique(label) if c != 0}


def lesion_components(label: np.ndarray, lesion_voxels: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """The lesions of ``label`` as separate objects, for lesion-centred patches.

    Args:
        label: (X, Y, Z) label map.
        lesion_voxels: (N, 3) voxel indices of label :data:`LESION` in :func:`class_voxels` order.

    Returns:
        ``(order, counts)``: ``order`` (N,) int32 positions into ``lesion_voxels`` grouped by lesion
        (18-connected components, numbered in scan order; within one, the voxel list's order), and
        ``counts``, each lesion's number of voxels, in that grouping.
    """
    comps, n = ndimage.label(label == LESION, structure=CONNECTIVITY_18)
    ids = comps[tuple(np.asarray(lesion_voxels).T)] if len(lesion_voxels) else np.zeros(0, np.int32)
    order = np.argsort(ids, kind="stable").astype(np.int32)
    counts = np.bincount(ids, minlength=n + 1)[1:]
    return order, tuple(int(c) for c in counts)


def paste_lesion(
    image: np.ndarray,
    label: np.ndarray,
    lesion_image: np.ndarray,
    lesion_mask: np.ndarray,
    corner: Sequence[int],
) -> int:
    """Paste one lesion into a training patch, in place (lesion copy-paste augmentation).

    Args:
        image: (2, Pi, Pj, Pk) student input of the patch, [CT, PET] (:class:`StudentInput` scale).
        label: (Pi, Pj, Pk) label of the patch.
        lesion_image: (2, Bi, Bj, Bk) student input of the lesion's bounding box in its own case.
        lesion_mask: (Bi, Bj, Bk) bool, the lesion's voxels in that box.
        corner: where the box's voxel [0, 0, 0] lands in the patch (the box may reach outside it:
            what lies outside is dropped).

    On the lesion's voxels the CT is replaced and the label becomes :data:`LESION`; the PET becomes
    the larger of the two on the lesion dilated by one voxel (the source's blurred rim comes along, a
    hotter target stays hot). Returns the number of lesion voxels pasted.
    """
    lo = np.maximum(np.asarray(corner, np.int64), 0)
    hi = np.minimum(np.asarray(corner, np.int64) + lesion_mask.shape, label.shape)
    if np.any(hi <= lo):
        return 0
    src = tuple(slice(int(a - c), int(b - c)) for a, b, c in zip(lo, hi, corner))
    dst = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    mask = lesion_mask[src]
    rim = ndimage.binary_dilation(lesion_mask, iterations=1)[src]
    ct, pet = image[0][dst], image[1][dst]  # views into the patch
    ct[mask] = lesion_image[0][src][mask]
    pet[rim] = np.maximum(pet[rim], lesion_image[1][src][rim])
    label[dst][mask] = LESION
    return int(mask.sum())


def draw_start(
    shape: Sequence[int],
    size: Sequence[int],
    rng: np.random.Generator,
    foreground_prob: float,
    class_counts: Sequence[tuple[int, int]],
    voxel_at: Callable[[int, int], np.ndarray],
    lesion_share: float = 0.0,
    lesion_counts: Sequence[int] = (),
    lesion_voxel: Callable[[int], np.ndarray] | None = None,
) -> np.ndarray:
    """The start voxel (3,) of a random patch of ``size`` in a volume of ``shape`` (already padded to
    at least ``size``): with ``foreground_prob`` centred on a random voxel of a random present class.

    ``class_counts``: ``(class, number of voxels)`` of the present non-zero classes, ascending;
    ``voxel_at(class, r)``: that class's ``r``-th voxel index (3,), in :func:`class_voxels` order. Only
    the draws are made here, so the volume itself may stay on disk (:mod:`mudo_app.train.data`).

    Lesion-centred patches: of the foreground-centred draws, a share ``lesion_share`` is centred on a
    random voxel of a random *lesion* (every lesion, small or large, equally likely; the uniform choice
    among present classes, as nnU-Net makes it, gives all lesions of a case together 1/13 of the
    foreground draws). ``lesion_counts``: each lesion's voxel count; ``lesion_voxel(p)``: the ``p``-th
    lesion voxel in the grouping of :func:`lesion_components`. With ``lesion_share`` 0, or a case
    without lesions, the draws (and the random stream) are the class-uniform ones.
    """
    shape_a, sides = np.array(shape), np.array(size)
    if rng.random() < foreground_prob and class_counts:
        if lesion_share > 0 and lesion_counts and lesion_voxel is not None and rng.random() < lesion_share:
            k = int(rng.integers(len(lesion_counts)))
            centre = lesion_voxel(int(sum(lesion_counts[:k])) + int(rng.integers(lesion_counts[k])))
        else:
            classes = [c for c, _ in class_counts]
            c = int(rng.choice(classes))
            centre = voxel_at(c, int(rng.integers(dict(class_counts)[c])))
        return np.clip(centre - sides // 2, 0, shape_a - sides)
    return np.array([rng.integers(0, s - p + 1) for s, p in zip(shape_a, sides)])


def random_patch(
    image: np.ndarray,
    label: np.ndarray,
    size: Sequence[int],
    rng: np.random.Generator,
    foreground_prob: float = 0.33,
    voxels: dict[int, np.ndarray] | None = None,
    lesion_share: float = 0.0,
    lesions: tuple[np.ndarray, tuple[int, ...]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One patch of ``size`` (:func:`draw_start`) of an image and label held in memory.

    ``voxels``: :func:`class_voxels` of ``label``, ``lesions``: :func:`lesion_components` of it, both
    precomputed so that no patch rescans the volume.
    """
    voxels = class_voxels(label) if voxels is None else voxels
    lesion_list = voxels.get(LESION, np.zeros((0, 3), np.int64))
    order, lesion_counts = lesion_components(label, lesion_list) if lesions is None else lesions
    image, label = pad_to(image, label, size)  # padding at the end keeps voxel indices valid
    counts = [(c, len(v)) for c, v in voxels.items()]
    start = draw_start(
        label.shape,
        size,
        rng,
        foreground_prob,
        counts,
        lambda c, r: voxels[c][r],
        lesion_share=lesion_share,
        lesion_counts=lesion_counts,
        lesion_voxel=lambda p: lesion_list[order[p]],
    )
    sl = tuple(slice(int(a), int(a + p)) for a, p in zip(start, size))
    return image[(slice(None), *sl)], label[sl]


class ArrayCase:
    """An image (C, X, Y, Z) and label (X, Y, Z) held in memory, as a :class:`PatchSource`."""

    def __init__(self, image: np.ndarray, label: np.ndarray):
        self.image, self.label = image, label
        self.voxels = class_voxels(label)  # once per case: no patch rescans the volume
        self.lesions = lesion_components(label, self.voxels.get(LESION, np.zeros((0, 3), np.int64)))

    def random_patch(
        self, size: Sequence[int], rng: np.random.Generator, foreground_prob: float, lesion_share: float = 0.0
    ) -> tuple[np.ndarray, np.ndarray]:
        return random_patch(self.image, self.label, size, rng, foreground_prob, self.voxels, lesion_share, self.lesions)
