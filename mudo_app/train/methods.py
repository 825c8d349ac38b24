"""The training methods as small objects: what each adds to the supervised step.

The trainer (:mod:`mudo_app.train.trainer`) runs one loop for all of them: draw patches, one student
forward pass on labelled and unlabelled patches, the supervised term, ``+ lambda(t) *`` the method's
consistency term, one optimiser step. A method says which cases it reads and how (``unlabelled``), may
change what the student sees of the unlabelled patches, gives the consistency term, and may update
state after the step (the EMA teacher) that the checkpoint then carries.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from mudo_app.distill.diagnostics import TruthDice
from mudo_app.distill.embedding_cache import EmbeddingCache
from mudo_app.distill.step import UnlabelledPatch, muduo_consistency
from mudo_app.distill.teacher_bank import TeacherBank
from mudo_app.models.student import build_student
from mudo_app.models.teachers import load_teacher
from mudo_app.runtime.distributed import Shard
from mudo_app.train.config import METHODS, TrainConfig
from mudo_app.train.data import TrainingSet
from mudo_app.train.prompt_net import load_or_train_prompt_net


class Trainer(Protocol):
    """What a method reads of the trainer that drives it (:class:`mudo_app.train.trainer.Trainer`)."""

    config: TrainConfig
    device: torch.device
    net: torch.nn.Module  # the student
    out: Path
    shard: Shard
    progress: bool
    noise: torch.Generator  # the CPU stream of Mean Teacher's input noise
    iteration: int


REGION_CACHE_BYTES = 256 * 2**20  # the prompt network's argmax per unlabelled position (uint8), LRU


class Method:
    """Plain supervised training on the labelled cases (the base every method extends).

    ``unlabelled``: how the datastore's unlabelled cases are read: ``None`` (not at all),
    ``"patches"`` (unlabelled patches for a consistency term), ``"truth"`` (they join the labelled
    set with their synthetic ground truth: the fully supervised upper bound).
    ``raw_volumes``: the teachers sample their crops from the raw HU / SUV volumes.
    """

    name = "supervised"
    unlabelled: str | None = None
    raw_volumes = False

    def prepare(self, trainer: Trainer) -> None:
        """Build and check what needs no data, before the data is read or anything is written (a bad
        setting fails here, with nothing written)."""

    def setup(self, trainer: Trainer, data: TrainingSet, resume: bool) -> None:
        """Build what the method needs of the data (after the student, before the optimiser)."""

    def student_inputs(self, trainer: Trainer, unlabelled: list[torch.Tensor]) -> list[torch.Tensor]:
        """What the student sees of this rank's (augmented) unlabelled patches."""
        return unlabelled

    def consistency(
        self, trainer: Trainer, data: TrainingSet, logits: torch.Tensor, draws: Sequence[tuple], alphas: np.ndarray
    ) -> tuple[torch.Tensor | None, dict[str, float]]:
        """``(term, stats)`` for the unlabelled ``logits`` (b, classes, ...) of this rank's ``draws``
        ``(case, position, augmentation, point seed)``, ``alphas`` the global batch's fusion weights
        (classes, B); ``None``: no consistency term."""
        return None, {}

    def after_step(self, trainer: Trainer) -> None:
        """Called after each optimiser step."""

    def state_dict(self) -> dict[str, Any] | None:
        """What a checkpoint must carry for a resumed run (``None``: nothing)."""
        return None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore :meth:`state_dict`."""

    def log(self) -> dict[str, Any]:
        """What the method adds to ``log.jsonl`` (teacher calls, cache, truth diagnostics)."""
        return {}

    def provenance(self) -> dict[str, Any]:
        """What the student checkpoint's provenance records of the method (its teachers)."""
        return {"teachers": []}


class FullySupervised(Method):
    """Every case with its ground truth (synthetic data only): the upper bound."""

    name = "fully_supervised"
    unlabelled = "truth"


class MeanTeacher(Method):
    """An EMA copy of the student teaches it on noisy unlabelled patches (softmax MSE)."""

    name = "mean_teacher"
    unlabelled = "patches"

    def setup(self, trainer: Trainer, data: TrainingSet, resume: bool) -> None:
        self.ema = build_student(trainer.config.student).to(trainer.device)
        self.ema.load_state_dict(trainer.net.state_dict())
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.clean: torch.Tensor | None = None

    def student_inputs(self, trainer: Trainer, unlabelled: list[torch.Tensor]) -> list[torch.Tensor]:
        if not unlabelled:
            self.clean = None
            return unlabelled
        clean = torch.stack(unlabelled)
        noisy = clean + 0.1 * torch.randn(clean.shape, generator=trainer.noise)  # CPU stream: same on any device
        self.clean = clean.to(trainer.device)
        return list(noisy)

    def consistency(
        self, trainer: Trainer, data: TrainingSet, logits: torch.Tensor, draws: Sequence[tuple], alphas: np.ndarray
    ) -> tuple[torch.Tensor | None, dict[str, float]]:
        if self.clean is None:
            return None, {}
        with torch.no_grad():
            target = torch.softmax(self.ema(self.clean), 1)
        return ((torch.softmax(logits, 1) - target) ** 2).mean(), {}

    def after_step(self, trainer: Trainer) -> None:
        decay = trainer.config.ema_decay
        with torch.no_grad():
            for e, p in zip(self.ema.parameters(), trainer.net.parameters()):
                e.mul_(decay).add_(p.detach(), alpha=1 - decay)

    def state_dict(self) -> dict[str, Any] | None:
        return self.ema.state_dict()

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        assert state is not None, "a Mean Teacher checkpoint carries its EMA model"
        self.ema.load_state_dict(state)


class MuDuo(Method):
    """The method (MUDUO_METHOD.md): frozen CT and PET teachers, consensus filter, random-alpha fusion."""

    name = "muduo"
    unlabelled = "patches"
    raw_volumes = True

    def prepare(self, trainer: Trainer) -> None:
        """The teachers and their embedding cache (a budget below one embedding is refused here)."""
        c, device = trainer.config, trainer.device
        self.cache = EmbeddingCache(
            int(c.embedding_cache_mb * 2**20), c.embedding_storage, "config field 'embedding_cache_mb'"
        )
        self.regions = EmbeddingCache(REGION_CACHE_BYTES, storage=None, what="prompt region cache")
        self.banks: dict[str, TeacherBank | None] = {"ct": None, "pet": None}
        self.truth = TruthDice(c.class_ids) if c.truth_dice_every else None
        self._truth_report: dict | None = None
        self.prompt_net: torch.nn.Module | None = None
        if c.teachers in ("both", "ct"):
            self.banks["ct"] = TeacherBank(load_teacher("CT", c.ct_teacher, device), c.patch, self.cache)
        if c.teachers in ("both", "pet"):
            self.banks["pet"] = TeacherBank(load_teacher("PET", c.pet_teacher, device), c.patch, self.cache)

    def setup(self, trainer: Trainer, data: TrainingSet, resume: bool) -> None:
        """The frozen PET prompt network, trained on the labelled cases (or read back on resume)."""
        c, device = trainer.config, trainer.device
        if self.banks["pet"] is not None:
            self.prompt_net = load_or_train_prompt_net(
                data.labelled, c, trainer.out, trainer.shard, trainer.progress, reuse=resume, device=device
            )

    def _region(self, trainer: Trainer, data: TrainingSet, ci: int, pos: int) -> Any:
        """The frozen prompt network's argmax on position ``pos`` of unlabelled case ``ci`` (cached)."""
        cached = self.regions.get((ci, pos))
        if cached is None:
            patch = data.unlabelled[ci].patch(pos, trainer.config.patch)[1:]
            assert self.prompt_net is not None, "MuDuo's PET teacher needs the prompt network"
            with torch.no_grad():
                x = torch.from_numpy(patch)[None].to(trainer.device)
                # max's indices: the first maximal class, as argmax, and 7x faster over the channel axis
                cached = self.prompt_net(x).max(1).indices[0].to(torch.uint8).cpu()
            self.regions.put((ci, pos), cached)
        return cached.numpy()

    def consistency(
        self, trainer: Trainer, data: TrainingSet, logits: torch.Tensor, draws: Sequence[tuple], alphas: np.ndarray
    ) -> tuple[torch.Tensor | None, dict[str, float]]:
        c: TrainConfig = trainer.config
        prob = torch.softmax(logits, 1)
        prob = torch.stack([aug.invert(p) for p, (_, _, aug, _) in zip(prob, draws)])
        samples = [
            UnlabelledPatch(
                (ci, pos),
                data.unlabelled[ci].affine,
                partial(data.unlabelled[ci].volume, "ct"),
                partial(data.unlabelled[ci].volume, "pet"),
                data.unlabelled[ci].centre_world(pos, c.patch),
                None if self.prompt_net is None else self._region(trainer, data, ci, pos),
                (c.seed, trainer.iteration, seed),
            )
            for ci, pos, _, seed in draws
        ]
        loss, stats, parts = muduo_consistency(
            prob, samples, c.class_ids, self.banks["ct"], self.banks["pet"], c.consensus(), c.k_points,
            alphas, trainer.shard,
        )  # fmt: skip
        if self.truth is not None:  # diagnostics only: the truth never reaches the loss
            truth = [torch.from_numpy(data.unlabelled[ci].truth_patch(pos, c.patch)) for ci, pos, _, _ in draws]
            self.truth.add(prob.detach(), torch.stack(truth), parts, c.consensus())
            if (trainer.iteration + 1) % c.truth_dice_every == 0:
                self._truth_report = self.truth.report()
        return loss, stats

    def log(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, bank in self.banks.items():
            if bank is not None:
                out[f"{name}_encoder_calls"] = bank.encoder_calls
                out[f"{name}_decoder_calls"] = bank.decoder_calls
        out.update({f"cache_{k}": v for k, v in self.cache.stats().items()})
        if self._truth_report is not None:
            out["truth_dice"], self._truth_report = self._truth_report, None
        return out

    def provenance(self) -> dict[str, Any]:
        return {"teachers": [b.teacher.describe() for b in self.banks.values() if b is not None]}


METHOD_TYPES: dict[str, type[Method]] = {m.name: m for m in (Method, FullySupervised, MeanTeacher, MuDuo)}
assert set(METHOD_TYPES) == set(METHODS), "every config method has a method object"


def build_method(name: str) -> Method:
    """The method object of a config's ``method`` field."""
    return METHOD_TYPES[name]()
