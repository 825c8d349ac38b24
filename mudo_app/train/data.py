"""Training data preprocessed once onto disk and read a patch at a time: memory that does not grow
with the number of cases.

Labelled cases are those with ``labels/final`` in the datastore, unlabelled ones the rest. Each case
is preprocessed once (the student's 2-channel input, the label with classes outside the config's set
set to 0, the voxel list foreground over-sampling draws from, and for MuDuo's teachers the raw HU and
SUV volumes) into a folder (config field ``preprocessed``, default ``<out>/preprocessed``)::

    <id>-<key>.json           the grid (shape, padded shape, affine), class voxel counts; written last
    <id>-<key>.image.npy      float32 (2, X', Y', Z') [CT, PET] student input, padded at the end to at
                              least one patch (edge values)
    <id>-<key>.label.npy      uint8 (X', Y', Z') label, padded with 0                       (labelled)
    <id>-<key>.voxels.npy     int32 (N, 3) voxel indices of each present class, classes ascending
    <id>-<key>.lesions.npy    int32 positions of the lesion voxels in that list, grouped by lesion
                              (:func:`~mudo_app.transforms.patches.lesion_components`; lesion-centred
                              patches), each lesion's size in the .json              (with lesions)
    <id>-<key>.ct.npy / .pet.npy   float32 (X, Y, Z) raw HU / SUV on the case grid           (MuDuo, unlabelled)
    <id>-<key>.truth.npy      uint8 (X', Y', Z') synthetic ground truth of an unlabelled case, padded, read
                              only by the truth diagnostics (config ``truth_dice_every``), never trained on

``<key>`` hashes what the files depend on (the source files' sizes and times, the preprocessing,
patch size, class set, role), so runs that differ share the folder without clashing and a changed
case is preprocessed again. Arrays are ``[i, j, k]`` on the case grid. Every file is written
atomically, the ``.json`` last: a case without it is incomplete and is redone.

Why ``.npy``: numpy's own format, no further package; ``np.load(mmap_mode="r")`` maps a file and a
patch read touches only its pages. Each read maps, copies the patch out and unmaps, so no page of the
arrays stays counted in the training process (the operating system's page cache keeps what fits).
Where the preprocessed set does not fit in the page cache, a 64^3 float32 patch costs 2 x 64 x 64
reads of 256 bytes; chunked compressed storage (blosc2, as nnU-Net >= 2.5 uses) would make that a
few chunk reads. That is not done here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from mudo_app.distill.teacher_bank import patch_centre_world, patch_starts
from mudo_app.errors import InputError
from mudo_app.io.atomic import atomic_write
from mudo_app.io.datastore import PetCtDatastore
from mudo_app.io.volume import Volume, load_volume
from mudo_app.labels import LESION, check_label_values
from mudo_app.train.config import TrainConfig
from mudo_app.transforms.intensity import StudentInput
from mudo_app.transforms.patches import class_voxels, draw_start, lesion_components, pad_to

FORMAT_VERSION = 2  # 2: lesion components for lesion-centred patches


def _read(path: Path, index: tuple[slice, ...]) -> np.ndarray:
    """A copy of ``array[index]`` of a ``.npy`` file, mapped only for the read."""
    mapped = np.load(path, mmap_mode="r")
    try:
        return np.array(mapped[index])
    finally:
        del mapped  # unmapped here: its pages leave this process


def _part(stem: Path, part: str) -> Path:
    """``<folder>/<id>-<key>.<part>.npy``: one array of a preprocessed case."""
    return stem.with_name(f"{stem.name}.{part}.npy")


def _window(start: Sequence[int] | np.ndarray, size: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(int(a), int(a) + int(p)) for a, p in zip(start, size))


@dataclass(frozen=True)
class StoredCase:
    """One preprocessed case (module docstring); its arrays are opened only while a patch is read."""

    case_id: str
    stem: Path  # folder / "<id>-<key>"
    shape: tuple[int, int, int]  # the padded grid the patches are cut from
    affine: np.ndarray  # the case grid (voxel [i, j, k] -> world mm)
    class_counts: tuple[tuple[int, int], ...]  # (class, voxels) of the present classes, ascending
    starts: np.ndarray | None  # (N, 3) fixed patch positions of an unlabelled case (embedding cache keys)
    lesion_counts: tuple[int, ...] = ()  # voxels of each lesion (lesions.npy's grouping)

    def file(self, part: str) -> Path:
        return _part(self.stem, part)

    # ---- labelled cases -----------------------------------------------------------------------
    def _class_rows(self, cls: int) -> slice:
        """The rows of ``voxels.npy`` that hold class ``cls`` (classes ascending); KeyError if absent."""
        offset = 0
        for c, n in self.class_counts:
            if c == cls:
                return slice(offset, offset + n)
            offset += n
        raise KeyError(cls)

    def voxel(self, cls: int, r: int) -> np.ndarray:
        """The ``r``-th voxel (3,) of class ``cls`` (the order of :func:`class_voxels`)."""
        first = self._class_rows(cls).start + r
        return _read(self.file("voxels"), (slice(first, first + 1),))[0].astype(np.int64)

    def lesion_voxel(self, p: int) -> np.ndarray:
        """The ``p``-th lesion voxel (3,) in the grouping by lesion (``lesions.npy``)."""
        return self.voxel(LESION, int(_read(self.file("lesions"), (slice(p, p + 1),))[0]))

    def lesion_box(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Lesion ``k`` (``lesions.npy``'s grouping): the (2, Bi, Bj, Bk) student input of its bounding
        box widened by one voxel on every side (within the grid: room for the pasted rim) and the
        (Bi, Bj, Bk) bool mask of its voxels there."""
        first = int(sum(self.lesion_counts[:k]))
        order = _read(self.file("lesions"), (slice(first, first + self.lesion_counts[k]),))
        where = _read(self.file("voxels"), (self._class_rows(LESION),))[order].astype(np.int64)
        lo, hi = np.maximum(where.min(0) - 1, 0), np.minimum(where.max(0) + 2, self.shape)
        mask = np.zeros(tuple(hi - lo), bool)
        mask[tuple((where - lo).T)] = True
        return _read(self.file("image"), (slice(None), *_window(lo, hi - lo))), mask

    def draw(
        self, size: Sequence[int], rng: np.random.Generator, foreground_prob: float, lesion_share: float = 0.0
    ) -> np.ndarray:
        """A random patch start (:func:`draw_start`: foreground over-sampled, lesion-centred by ``lesion_share``)."""
        return draw_start(
            self.shape,
            size,
            rng,
            foreground_prob,
            self.class_counts,
            self.voxel,
            lesion_share=lesion_share,
            lesion_counts=self.lesion_counts,
            lesion_voxel=self.lesion_voxel,
        )

    def image_patch(self, start: Sequence[int] | np.ndarray, size: Sequence[int]) -> np.ndarray:
        """(2, Pi, Pj, Pk) float32 student input."""
        return _read(self.file("image"), (slice(None), *_window(start, size)))

    def label_patch(self, start: Sequence[int] | np.ndarray, size: Sequence[int]) -> np.ndarray:
        """(Pi, Pj, Pk) int64 label."""
        return _read(self.file("label"), _window(start, size)).astype(np.int64)

    def random_patch(
        self, size: Sequence[int], rng: np.random.Generator, foreground_prob: float, lesion_share: float = 0.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """(image, label) of a random patch: the draws of :func:`mudo_app.transforms.patches.random_patch`."""
        start = self.draw(size, rng, foreground_prob, lesion_share)
        return self.image_patch(start, size), self.label_patch(start, size)

    # ---- unlabelled cases ---------------------------------------------------------------------
    def patch(self, position: int, size: Sequence[int]) -> np.ndarray:
        """(2, Pi, Pj, Pk) student input at fixed position ``position``."""
        assert self.starts is not None, f"{self.case_id} is a labelled case: it has no fixed positions"
        return self.image_patch(self.starts[position], size)

    def truth_patch(self, position: int, size: Sequence[int]) -> np.ndarray:
        """(Pi, Pj, Pk) int64 synthetic ground truth at fixed position ``position`` (diagnostics only)."""
        assert self.starts is not None
        return _read(self.file("truth"), _window(self.starts[position], size)).astype(np.int64)

    def centre_world(self, position: int, size: Sequence[int]) -> np.ndarray:
        assert self.starts is not None
        return patch_centre_world(self.affine, self.starts[position], size)

    def volume(self, modality: str) -> Volume:
        """The raw ``ct`` (HU) or ``pet`` (SUV) volume on the case grid, memory-mapped: drop it after use."""
        return Volume(np.load(self.file(modality), mmap_mode="r"), self.affine)


@dataclass
class TrainingSet:
    labelled: list[StoredCase]
    unlabelled: list[StoredCase]

    def describe(self) -> dict[str, list[str]]:
        return {"labelled": [c.case_id for c in self.labelled], "unlabelled": [c.case_id for c in self.unlabelled]}


def _keep_classes(label: np.ndarray, class_ids: Sequence[int]) -> np.ndarray:
    out = label.astype(np.uint8)
    out[~np.isin(out, list(class_ids))] = 0
    return out


def _source(path: Path) -> list[Any]:
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def _save(path: Path, array: np.ndarray) -> None:
    with atomic_write(path, ".npy") as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.ascontiguousarray(array))


class _Preprocessor:
    """Writes (or finds) the preprocessed files of one case."""

    def __init__(self, store: PetCtDatastore, config: TrainConfig, prep: StudentInput, folder: Path, raw: bool):
        self.store, self.config, self.prep, self.folder, self.raw = store, config, prep, folder, raw

    def case(self, cid: str, role: str) -> StoredCase:
        """``role``: ``labelled`` (labels/final), ``truth`` (ground truth, fully_supervised only) or
        ``unlabelled`` (with the raw volumes when the teachers need them)."""
        c, store = self.config, self.store
        sources = {"ct": store.ct_path(cid), "pet": store.pet_path(cid)}
        if role == "labelled":
            sources["label"] = store.label_path(cid)
        elif role == "truth":
            sources["label"] = store.ground_truth_path(cid)
            if not sources["label"].is_file():
                raise InputError(f"fully_supervised needs ground truth for every case; {sources['label']} is missing")
        raw = role == "unlabelled" and self.raw
        with_truth = role == "unlabelled" and c.truth_dice_every > 0
        if with_truth:
            sources["truth"] = store.ground_truth_path(cid)
            if not sources["truth"].is_file():
                raise InputError(
                    f"config field 'truth_dice_every' needs the ground truth of every unlabelled case "
                    f"(synthetic data); {sources['truth']} is missing"
                )
        key = {
            "version": FORMAT_VERSION,
            "role": role,
            "raw": raw,
            "ct_window": list(self.prep.ct_window),
            "patch": list(c.patch),
            "classes": list(c.class_ids),
            "sources": {name: _source(path) for name, path in sources.items()},
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
        stem = self.folder / f"{cid}-{digest}"
        meta_path = stem.with_name(f"{stem.name}.json")
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
        else:
            meta = self._write(cid, role, raw, with_truth, stem, key)
            with atomic_write(meta_path) as tmp:
                tmp.write_text(json.dumps(meta, indent=1))
        starts = None if role != "unlabelled" else np.asarray(meta["starts"], np.int64).reshape(-1, 3)
        return StoredCase(
            cid,
            stem,
            tuple(meta["padded_shape"]),
            np.asarray(meta["affine"], np.float64),
            tuple((int(a), int(b)) for a, b in meta["class_counts"]),
            starts,
            tuple(int(n) for n in meta.get("lesion_counts", [])),
        )

    def _write(
        self, cid: str, role: str, raw: bool, with_truth: bool, stem: Path, key: dict[str, Any]
    ) -> dict[str, Any]:
        c = self.config
        case = self.store.load_case(cid)
        image = self.prep(case.ct.array, case.pet.array)
        grid = case.ct.shape
        meta: dict[str, Any] = {"case_id": cid, "key": key, "shape": list(grid), "affine": case.ct.affine.tolist()}
        if role == "unlabelled":
            label = np.zeros(grid, np.uint8)
            meta["starts"] = patch_starts(grid, c.patch).tolist()
            meta["class_counts"] = []
        else:
            if role == "labelled":
                truth = case.require_label().array
            else:
                truth = load_volume(self.store.ground_truth_path(cid), f"{cid} ground truth").array
                check_label_values(truth, f"{cid} ground truth")
            label = _keep_classes(truth, c.class_ids)
            voxels = class_voxels(label)
            table = np.concatenate([v for v in voxels.values()]) if voxels else np.zeros((0, 3))
            _save(_part(stem, "voxels"), table.astype(np.int32))
            meta["class_counts"] = [[k, len(v)] for k, v in voxels.items()]
            if LESION in voxels:
                order, counts = lesion_components(label, voxels[LESION])
                _save(_part(stem, "lesions"), order)
                meta["lesion_counts"] = list(counts)
        image, label = pad_to(image, label, c.patch)
        _save(_part(stem, "image"), image)
        if role != "unlabelled":
            _save(_part(stem, "label"), label)
        if with_truth:
            known = load_volume(self.store.ground_truth_path(cid), f"{cid} ground truth").array
            check_label_values(known, f"{cid} ground truth")
            _save(_part(stem, "truth"), pad_to(image, _keep_classes(known, c.class_ids), c.patch)[1])
        if raw:
            _save(_part(stem, "ct"), case.ct.array.astype(np.float32, copy=False))
            _save(_part(stem, "pet"), case.pet.array.astype(np.float32, copy=False))
        meta["padded_shape"] = list(label.shape)
        return meta


def preprocessed_folder(config: TrainConfig) -> Path:
    """Where a run's preprocessed cases live: ``config.preprocessed``, or ``<out>/preprocessed``."""
    return Path(config.preprocessed) if config.preprocessed else Path(config.out) / "preprocessed"


def load_training_set(
    config: TrainConfig,
    prep: StudentInput = StudentInput(),
    progress: bool = False,
    unlabelled: str | None = "patches",
    raw_volumes: bool = True,
) -> TrainingSet:
    """Preprocess the datastore the config names (cases already preprocessed are reused) and return
    its cases; one case is in memory at a time.

    ``unlabelled`` (what the method needs of the unlabelled cases): ``"patches"`` (an unlabelled set;
    with ``raw_volumes`` the teachers' raw HU / SUV too), ``"truth"`` (they join the labelled set
    with their ``ground_truth/``: synthetic data only, the fully supervised upper bound) or ``None``.
    The semi-supervised methods never train on ``ground_truth/``; with ``truth_dice_every`` the
    unlabelled cases' truth is preprocessed for the diagnostics alone.
    """
    if not config.datastore:
        raise InputError("config field 'datastore' is empty: give the datastore folder to train from")
    store = PetCtDatastore(config.datastore)
    labelled_ids = store.labelled_ids()
    if config.labelled_limit is not None:
        labelled_ids = labelled_ids[: config.labelled_limit]
    unlabelled_ids = [i for i in store.case_ids() if i not in labelled_ids]
    if not labelled_ids:
        raise InputError(f"no labelled case in {store.root} (labels/final is empty): at least one is needed")
    if unlabelled == "patches" and not unlabelled_ids:
        raise InputError(f"method {config.method!r} needs unlabelled cases; every case in {store.root} is labelled")
    folder = preprocessed_folder(config)
    folder.mkdir(parents=True, exist_ok=True)
    pre = _Preprocessor(store, config, prep, folder, raw_volumes)
    jobs = [(cid, "labelled") for cid in labelled_ids]
    if unlabelled is not None:
        jobs += [(cid, "truth" if unlabelled == "truth" else "unlabelled") for cid in unlabelled_ids]
    labelled: list[StoredCase] = []
    unlabelled_cases: list[StoredCase] = []
    for cid, role in tqdm(jobs, desc="preprocessing", unit="case", disable=not progress, leave=False):
        (unlabelled_cases if role == "unlabelled" else labelled).append(pre.case(cid, role))
    return TrainingSet(labelled, unlabelled_cases)
