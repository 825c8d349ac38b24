"""Typed training configuration, parsed once (from a JSON or TOML file, a dict, or a request body).

Every switch of the paper's ablations is a field, so that e.g. ``muduo_no_filter`` is the config
``{"method": "muduo", "filter": "none"}``. Unknown keys and wrong types are refused with a message
that names the field (:class:`mudo_app.errors.InputError`, CLI exit 2).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from mudo_app.distill.consensus import ConsensusSettings
from mudo_app.distill.embedding_cache import STORAGE_DTYPES
from mudo_app.errors import InputError
from mudo_app.labels import LESION, NUM_CLASSES
from mudo_app.models.student import STUDENTS
from mudo_app.runtime.choices import DEVICES

METHODS = ("supervised", "mean_teacher", "muduo", "fully_supervised")
CLASS_SETS = {"all": tuple(range(1, NUM_CLASSES)), "organs": tuple(range(1, LESION)), "lesion": (LESION,)}
OPTIMISERS = ("adamw", "sgd")
AUGMENTATIONS = ("none", "flip_rot")
DICE_REDUCTIONS = ("sample", "batch")


ITERATIONS_PER_EPOCH = 50  # one "epoch" of MuDuo training, for clients that count in epochs (MONAI Label)
# upper bounds that no sensible run reaches (they keep a typo or a hostile request from running for ever)
LIMITS = {
    "iterations": 10_000_000,
    "batch_labelled": 1024,
    "batch_unlabelled": 1024,
    "k_points": 1024,
    "prompt_net_iterations": 10_000_000,
    "checkpoint_every": 10_000_000,
    "seed": 2**32 - 1,
    "threads": 1024,
    "labelled_limit": 1_000_000,
    "truth_dice_every": 10_000_000,
}
PROMPT_NET_MAX_ITERATIONS = 200  # the PET prompt network's default training length, at most 3 per student iteration


@dataclass(frozen=True)
class TrainConfig(ConsensusSettings):
    """One training run. Patch sides are voxels ``[i, j, k]`` of the case grid (multiples of 16).

    ``method``: ``supervised`` (labelled cases only), ``mean_teacher`` (EMA teacher, softmax MSE),
    ``muduo`` (the method), ``fully_supervised`` (every case with its ground truth: the upper bound).
    ``classes``: ``all`` (13 foreground classes), ``organs`` (1-12) or ``lesion`` (13); labels of
    other classes count as background and only these classes get a consistency term.
    ``filter`` / ``keep_fraction`` / ``iou_threshold`` / ``teachers`` (inherited from
    :class:`mudo_app.distill.consensus.ConsensusSettings`, declared there only) and ``k_points``: the
    MuDuo ablations.
    ``foreground_prob``: the share of labelled patches centred on a foreground voxel (a present class
    drawn uniformly, as nnU-Net does); ``lesion_share``: of those, the share centred on a random lesion
    (each lesion equally likely, :func:`mudo_app.transforms.patches.draw_start`), so that lesions, small
    and rare, get their share of patches. ``dice``: the supervised Dice term per ``sample`` (MONAI's
    default: a class absent from a patch and not predicted counts as perfect) or over the whole
    ``batch`` (nnU-Net's batch Dice: one Dice per class over all labelled patches of the step).
    ``lesion_paste``: lesion copy-paste augmentation, the probability that a labelled patch gets one
    lesion of a labelled case (cases with lesions equally likely, then each of its lesions) pasted
    centred on a random tissue voxel of the patch (:func:`mudo_app.transforms.patches.paste_lesion`);
    0 (default): none, and the random stream of runs without it.
    ``lesion_weight``: the lesion class's weight in the supervised Dice and cross-entropy terms (every
    other class 1; default 1: unweighted, as nnU-Net).
    ``augment``: ``none`` (default) or ``flip_rot`` (the reference: random flips and axial 90-degree
    turns; they swap left and right, which this label map distinguishes: kidneys, lung lobes).
    ``optimiser``: ``adamw`` (default; converges within CPU budgets) or ``sgd`` (the reference:
    lr 0.01, momentum 0.9); either with weight decay 1e-4 and poly decay (power 0.9).
    ``prompt_net_iterations``: the frozen PET prompt network's training length; ``None`` (default):
    ``min(200, 3 * iterations)`` (:attr:`prompt_net_steps`), so short runs (a server retraining of a
    few dozen iterations) do not spend most of their time on it.
    ``checkpoint_every``: iterations between resumable checkpoints (the last iteration always is one).
    ``device``: ``auto`` (a GPU when PyTorch sees one, else the CPU), ``cpu`` or ``cuda`` (under
    ``torchrun`` each process takes GPU ``LOCAL_RANK``). ``device``, ``threads``, ``iterations``,
    ``embedding_cache_mb`` and ``preprocessed`` may change when a run is resumed; GPU runs are
    seeded but not bit-for-bit repeatable (cuDNN).
    ``embedding_cache_mb``: the most memory (MiB, on the teachers' device) the teachers' image
    embeddings may hold, least recently used evicted and recomputed when needed again; 0 caches
    nothing. ``embedding_storage``: ``fp16`` (default; half the memory, teacher outputs within 1e-2
    of fp32's) or ``fp32``. Every embedding a teacher uses is rounded to this storage, cached or not,
    so the budget changes the time a run takes, never its results.
    ``preprocessed``: the folder of preprocessed cases (:mod:`mudo_app.train.data`; default
    ``<out>/preprocessed``); runs on one datastore may share one. It may change on resume.
    ``truth_dice_every``: MuDuo's mechanism made visible on synthetic data (0, the default: off). Every
    so many iterations ``log.jsonl`` gets ``truth_dice``: per class, the Dice against the unlabelled
    patches' ground truth (``ground_truth/``, read for this only, never trained on) of the student, of
    the CT and PET teachers' answers, and of the kept fused pseudo-labels beside the student on those
    same kept samples, pooled over the iterations since the last report (rank 0's samples).
    """

    datastore: str = ""
    out: str = "runs/muduo"
    method: str = "muduo"
    student: str = "unet_lite"
    classes: str = "all"
    iterations: int = 300
    batch_labelled: int = 2
    batch_unlabelled: int = 2
    patch: tuple[int, int, int] = (64, 64, 64)
    foreground_prob: float = 0.5
    lesion_share: float = 0.0
    dice: str = "sample"
    lesion_weight: float = 1.0
    lesion_paste: float = 0.0
    augment: str = "none"
    optimiser: str = "adamw"
    lr: float = 2e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    seed: int = 0
    lambda_max: float = 0.1
    k_points: int = 3
    ema_decay: float = 0.99
    prompt_net_iterations: int | None = None
    ct_teacher: str | None = None
    pet_teacher: str | None = None
    init_from: str | None = None
    checkpoint_every: int = 100
    labelled_limit: int | None = None
    threads: int | None = None
    device: str = "auto"
    embedding_cache_mb: float = 2048.0
    embedding_storage: str = "fp16"
    preprocessed: str | None = None
    truth_dice_every: int = 0

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> None:
            raise InputError(f"config field {name!r}: {why}")

        choices = {
            "method": METHODS,
            "student": tuple(sorted(STUDENTS)),
            "classes": tuple(sorted(CLASS_SETS)),
            "augment": AUGMENTATIONS,
            "device": DEVICES,
            "optimiser": OPTIMISERS,
            "embedding_storage": tuple(STORAGE_DTYPES),
            "dice": DICE_REDUCTIONS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                bad(name, f"must be one of {allowed}, got {getattr(self, name)!r}")
        self.check_consensus()
        if len(self.patch) != 3 or any(int(p) < 16 or int(p) % 16 for p in self.patch):
            bad("patch", f"needs three sides, each a multiple of 16, got {list(self.patch)}")
        for name in ("iterations", "batch_labelled", "k_points", "checkpoint_every"):
            if getattr(self, name) < 1:
                bad(name, f"must be at least 1, got {getattr(self, name)}")
        for name in ("batch_unlabelled", "prompt_net_iterations", "seed", "truth_dice_every"):
            value = getattr(self, name)
            if value is not None and value < 0:
                bad(name, f"must not be negative, got {value}")
        for name, limit in LIMITS.items():
            value = getattr(self, name)
            if value is not None and value > limit:
                bad(name, f"must be at most {limit}, got {value}")
        if any(int(p) > 1024 for p in self.patch):
            bad("patch", f"sides must be at most 1024 voxels, got {list(self.patch)}")
        if self.method in ("muduo", "mean_teacher") and self.batch_unlabelled < 1:
            bad("batch_unlabelled", f"method {self.method!r} needs unlabelled patches (at least 1)")
        # written so that NaN fails every range (a comparison with NaN is False)
        ranges = {
            "foreground_prob": (0 <= self.foreground_prob <= 1, "in [0, 1]"),
            "lesion_share": (0 <= self.lesion_share <= 1, "in [0, 1]"),
            "lesion_paste": (0 <= self.lesion_paste <= 1, "in [0, 1]"),
            "ema_decay": (0 <= self.ema_decay < 1, "in [0, 1)"),
            "lr": (0 < self.lr < math.inf, "positive and finite"),
            "momentum": (0 <= self.momentum < 1, "in [0, 1)"),
            "weight_decay": (0 <= self.weight_decay < math.inf, "finite and not negative"),
            "lambda_max": (0 <= self.lambda_max < math.inf, "finite and not negative"),
            "lesion_weight": (0 < self.lesion_weight < math.inf, "positive and finite"),
            "embedding_cache_mb": (0 <= self.embedding_cache_mb <= 2**30, "in [0, 2^30] MiB"),
        }
        for name, (ok, rule) in ranges.items():
            if not ok:
                bad(name, f"must be {rule}, got {getattr(self, name)}")
        for name in ("labelled_limit", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                bad(name, f"must be at least 1, got {value}")

    @property
    def prompt_net_steps(self) -> int:
        """The prompt network's training length: ``prompt_net_iterations``, or its default (class docstring)."""
        if self.prompt_net_iterations is not None:
            return self.prompt_net_iterations
        return min(PROMPT_NET_MAX_ITERATIONS, 3 * self.iterations)

    @property
    def class_ids(self) -> tuple[int, ...]:
        return CLASS_SETS[self.classes]

    def consensus(self) -> ConsensusSettings:
        """The consensus filter's settings, as :class:`ConsensusSettings` (its inherited fields)."""
        return ConsensusSettings(**{f.name: getattr(self, f.name) for f in fields(ConsensusSettings)})

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["patch"] = list(self.patch)
        return out

    def replace(self, **changes: Any) -> TrainConfig:
        return config_from_dict({**self.to_dict(), **changes})


def _coerce(name: str, kind: Any, value: Any) -> Any:
    """Check one value against its field's declared type (``kind``, resolved from the annotation)."""
    args = typing.get_args(kind)
    if value is None:
        if type(None) in args:
            return None
        raise InputError(f"config field {name!r} must not be null")
    if type(None) in args:  # Optional[X]: check X
        kind = next(a for a in args if a is not type(None))
    if typing.get_origin(kind) is tuple:
        if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise InputError(f"config field {name!r} must be a list of integers, got {value!r}")
        return tuple(value)
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"config field {name!r} must be an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"config field {name!r} must be a number, got {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise InputError(f"config field {name!r} must be a string, got {value!r}")
        return value
    raise AssertionError(f"unhandled config type {kind}")  # pragma: no cover - a new field without a rule


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """A :class:`TrainConfig` from a mapping; unknown keys or wrong types raise :class:`InputError`."""
    if not isinstance(values, dict):
        raise InputError(f"a training config must be a mapping of fields, got {type(values).__name__}")
    known = typing.get_type_hints(TrainConfig)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise InputError(f"unknown config key(s) {unknown}; known keys: {sorted(known)}")
    return TrainConfig(**{k: _coerce(k, known[k], v) for k, v in values.items()})


def load_config(path: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a ``.json`` or ``.toml`` config file; ``overrides`` (e.g. from the CLI) win."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config file not found: {path}")
    text = path.read_text()
    try:
        values = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(
            f"config file {path} is not valid {'TOML' if path.suffix == '.toml' else 'JSON'}: {exc}"
        ) from exc
    return config_from_dict({**values, **(overrides or {})})
