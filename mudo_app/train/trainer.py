"""One trainer for MuDuo and its baselines (supervised, Mean Teacher, fully supervised).

Files in ``config.out`` (written by rank 0 only, each atomically)::

    config.json       the parsed config
    state.pt          resumable state: student, optimiser, scheduler, EMA, random streams, iteration
    student.pt        student checkpoint (mudo_app.models.checkpoint): at checkpoints and at the end
    prompt_net.pt     MuDuo's frozen PET-only prompt network
    log.jsonl         one line per iteration: losses, lambda, filter statistics, teacher calls,
                      embedding-cache hits, misses, evictions and bytes, the iteration's seconds

Random draws (patches, augmentation, fusion weights, point seeds) come from one stream seeded by
``config.seed`` and are identical on every rank; each rank computes its block of the global batch
(``Shard``), and DistributedDataParallel averages the gradients. ``config.device`` places the networks,
teachers and cached embeddings (CPU or GPU); patches and random draws stay on the CPU, so a GPU run
starts from the same weights and batches as a CPU run. The model is the last iteration's:
no model selection, so test labels are never looked at.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from monai.losses import DiceCELoss
from tqdm.auto import tqdm

from mudo_app.distill.consensus import consistency_weight
from mudo_app.errors import InputError
from mudo_app.io.atomic import atomic_write, write_json
from mudo_app.labels import LESION, NUM_CLASSES
from mudo_app.models.checkpoint import load_student, save_student
from mudo_app.models.loading import read_checkpoint
from mudo_app.models.student import build_student
from mudo_app.runtime.devices import resolve_device
from mudo_app.runtime.distributed import Shard
from mudo_app.train.config import TrainConfig, config_from_dict
from mudo_app.train.data import TrainingSet, load_training_set
from mudo_app.train.methods import Method, build_method
from mudo_app.train.patch_reader import Draws, Patches, PatchReader
from mudo_app.transforms.augment import FlipRot
from mudo_app.transforms.intensity import StudentInput

# config fields a resumed run may change: where and how fast it runs, never what it computes
FREE_ON_RESUME = ("iterations", "threads", "device", "embedding_cache_mb", "preprocessed")


class Trainer:
    """``Trainer(config).run()`` trains and returns the path of ``student.pt``."""

    def __init__(self, config: TrainConfig, progress: bool = True, shard: Shard | None = None):
        self.config = config
        self.out = Path(config.out)
        self.shard = shard or Shard()
        self.progress = progress and self.shard.rank == 0
        self.prep = StudentInput()
        self.device = resolve_device(config.device)
        torch.manual_seed(config.seed)  # the initial weights are part of the seeded run (built on the CPU)
        self.net = build_student(config.student).to(self.device)
        self.method: Method = build_method(config.method)
        self.iteration = 0
        self._rng_at_next: Mapping[str, Any] | None = None  # the random stream before the look-ahead draw (checkpoints)

    # ---- set-up ----------------------------------------------------------------------------------
    def _check_out(self, resume: bool) -> None:
        saved = self.out / "config.json"
        if resume:
            if not (self.out / "state.pt").is_file():
                raise InputError(f"nothing to resume in {self.out} (no state.pt)")
            old = config_from_dict(json.loads(saved.read_text()))
            free = {k: getattr(self.config, k) for k in FREE_ON_RESUME}
            if old.replace(**free) != self.config:
                raise InputError(f"{saved} differs from this config (beyond {sorted(free)}): resume needs the same run")
        elif (self.out / "state.pt").is_file() or (self.out / "student.pt").is_file():
            raise InputError(f"{self.out} already holds a run: pass --resume, or choose another 'out'")

    def _setup(self, data: TrainingSet, resume: bool) -> None:
        c = self.config
        if c.init_from:
            warm, _, meta = load_student(c.init_from)
            if meta["architecture"]["name"] != c.student:
                raise InputError(
                    f"init_from {c.init_from} is a {meta['architecture']['name']}, config says {c.student}"
                )
            self.net.load_state_dict(warm.state_dict())
        self.noise = torch.Generator().manual_seed(c.seed)
        self.method.setup(self, data, resume)
        self.optimiser: torch.optim.Optimizer
        if c.optimiser == "sgd":
            self.optimiser = torch.optim.SGD(
                self.net.parameters(), lr=c.lr, weight_decay=c.weight_decay, momentum=c.momentum
            )
        else:
            self.optimiser = torch.optim.AdamW(self.net.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimiser, lambda it: max(0.0, 1 - it / c.iterations) ** 0.9
        )
        class_weight = None  # unweighted unless the lesion class is weighted (config lesion_weight)
        if c.lesion_weight != 1:
            class_weight = torch.ones(NUM_CLASSES, device=self.device)
            class_weight[LESION] = c.lesion_weight
        self.loss_fn = DiceCELoss(
            to_onehot_y=True,
            softmax=True,
            lambda_dice=0.5,
            lambda_ce=0.5,
            batch=c.dice == "batch",
            weight=class_weight,
        )
        self.rng = np.random.default_rng(c.seed)
        self.paste_sources = [i for i, case in enumerate(data.labelled) if case.lesion_counts]  # lesion_paste
        self.model = self.net
        if dist.is_initialized():  # under torchrun (also with one process: the nccl/gloo path is the same)
            ids = [self.device] if self.device.type == "cuda" else None
            self.model = torch.nn.parallel.DistributedDataParallel(self.net, device_ids=ids)

    def _state(self) -> dict:
        return {
            "iteration": self.iteration,
            "student": self.net.state_dict(),
            "optimiser": self.optimiser.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "method": self.method.state_dict(),  # Mean Teacher: its EMA model
            "rng": self._rng_at_next,
            "noise": self.noise.get_state(),
        }

    def _restore(self) -> None:
        state = read_checkpoint(self.out / "state.pt")
        self.net.load_state_dict(state["student"])
        self.optimiser.load_state_dict(state["optimiser"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.method.load_state_dict(state.get("method", state.get("ema")))  # "ema": checkpoints before methods
        self.rng.bit_generator.state = state["rng"]
        self.noise.set_state(state["noise"])
        self.iteration = int(state["iteration"])

    # ---- one iteration ---------------------------------------------------------------------------
    def _augmentation(self) -> FlipRot:
        c = self.config
        aug = FlipRot.draw(self.rng, c.patch[0] == c.patch[1])  # drawn either way: one random stream
        return aug if c.augment == "flip_rot" else FlipRot()

    def _draw(self, data: TrainingSet) -> Draws:
        """The global batch's random draws, identical on every rank (the one random stream)."""
        c = self.config
        lab = []
        for _ in range(c.batch_labelled):
            ci = int(self.rng.integers(len(data.labelled)))
            start = data.labelled[ci].draw(c.patch, self.rng, c.foreground_prob, c.lesion_share)
            lab.append((ci, start, self._augmentation()))
        unl = []
        if self.method.unlabelled == "patches":
            for _ in range(c.batch_unlabelled):
                ci = int(self.rng.integers(len(data.unlabelled)))
                starts = data.unlabelled[ci].starts
                assert starts is not None
                pos = int(self.rng.integers(len(starts)))
                unl.append((ci, pos, self._augmentation(), int(self.rng.integers(2**31))))
        alphas = self.rng.uniform(0.0, 1.0, size=(len(c.class_ids), max(len(unl), 1)))
        return Draws(lab, unl, alphas, self._draw_pastes(data, len(lab)))

    def _draw_pastes(self, data: TrainingSet, n: int) -> list[tuple[int, int, int] | None]:
        """Per labelled sample, with probability ``lesion_paste``, a lesion of a labelled case (cases with
        lesions equally likely, then its lesions) to paste into it. No draw at all when ``lesion_paste``
        is 0, so such runs keep the random stream they always had."""
        sources = self.paste_sources
        if self.config.lesion_paste == 0 or not sources:
            return []
        pastes: list[tuple[int, int, int] | None] = []
        for _ in range(n):
            if self.rng.random() < self.config.lesion_paste:
                ci = sources[int(self.rng.integers(len(sources)))]
                k = int(self.rng.integers(len(data.labelled[ci].lesion_counts)))
                pastes.append((ci, k, int(self.rng.integers(2**31))))
            else:
                pastes.append(None)
        return pastes

    def _local(self, draws: Draws) -> tuple[list, list, list]:
        """This rank's block of the global batch's labelled, unlabelled and paste draws."""
        lab, unl, pastes = draws.labelled, draws.unlabelled, draws.pastes
        block = self.shard.take(len(lab))
        return lab[block], unl[self.shard.take(len(unl))] if unl else [], pastes[block] if pastes else []

    def step(self, data: TrainingSet, draws: Draws, patches: Patches) -> dict[str, float]:
        """One iteration on this rank's share of ``draws``, whose arrays ``patches`` holds."""
        c, shard = self.config, self.shard
        lab, unl_local, _ = self._local(draws)
        alphas = draws.alphas
        xs = [aug.apply(torch.from_numpy(x)) for x, (_, _, aug) in zip(patches.images, lab)]
        ys = [aug.apply(torch.from_numpy(y)) for y, (_, _, aug) in zip(patches.labels, lab)]
        xu = [aug.apply(torch.from_numpy(x)) for x, (_, _, aug, _) in zip(patches.unlabelled, unl_local)]
        xu = self.method.student_inputs(self, xu)
        self.model.train()
        logits = self.model(torch.stack(xs + xu).to(self.device))
        nl = len(xs)
        sup = self.loss_fn(logits[:nl], torch.stack(ys)[:, None].long().to(self.device))
        lam = consistency_weight(self.iteration, c.iterations, c.lambda_max)
        term, stats = self.method.consistency(self, data, logits[nl:], unl_local, alphas)
        cons = logits.sum() * 0.0 if term is None else term
        loss = sup + lam * cons
        self.optimiser.zero_grad()
        loss.backward()
        self.optimiser.step()
        self.scheduler.step()
        self.method.after_step(self)
        self.iteration += 1
        values = torch.tensor([loss.item(), sup.item(), float(cons.detach())], dtype=torch.float64, device=self.device)
        if shard.world > 1:
            dist.all_reduce(values)
            values /= shard.world
        return {
            "iteration": self.iteration,
            "loss": float(values[0]),
            "supervised": float(values[1]),
            "consistency": float(values[2]),
            "lambda": lam,
            **stats,
            **self.method.log(),
        }

    # ---- the run ---------------------------------------------------------------------------------
    def run(self, resume: bool = False, data: TrainingSet | None = None, stop_after: int | None = None) -> Path:
        """Train to ``config.iterations`` (or stop after ``stop_after`` iterations, leaving a resumable
        checkpoint); returns the student checkpoint's path.

        The next iteration's draws are made before this iteration's step, and their patches read in
        a background thread meanwhile; the random stream is drawn in the same order either way, and
        a checkpoint records it as it was before that look-ahead, so a resumed run draws the same."""
        c = self.config
        if c.threads:
            torch.set_num_threads(c.threads)
        self._check_out(resume)
        for name, n in (("batch_labelled", c.batch_labelled), ("batch_unlabelled", c.batch_unlabelled)):
            if n % self.shard.world:
                raise InputError(f"config field {name!r} = {n} must be divisible by the {self.shard.world} processes")
        m = self.method
        m.prepare(self)  # settings that need no data are checked before anything is read or written
        data = data or load_training_set(c, self.prep, self.progress, m.unlabelled, m.raw_volumes)
        self._setup(data, resume)
        if self.shard.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            write_json(self.out / "config.json", c.to_dict())
        if resume:
            self._restore()
        started = time.perf_counter()
        bar = tqdm(total=c.iterations, initial=self.iteration, desc=c.method, unit="it", disable=not self.progress)
        log: list[dict] = []
        end = c.iterations if stop_after is None else min(stop_after, c.iterations)
        reader = PatchReader(data, c.patch)
        try:
            pending: tuple[Draws, Future[Patches]] | None = None
            while self.iteration < end:
                draws, patches = pending or self._read_ahead(data, reader)
                self._rng_at_next = self.rng.bit_generator.state  # what the next iteration starts from
                pending = self._read_ahead(data, reader) if self.iteration + 1 < end else None
                tick = time.perf_counter()
                rec = self.step(data, draws, patches.result())
                rec["seconds"] = round(time.perf_counter() - tick, 4)  # waiting for its patches included
                log.append(rec)
                bar.update(1)
                bar.set_postfix(loss=f"{rec['loss']:.3f}")
                if self.iteration % c.checkpoint_every == 0 or self.iteration == c.iterations:
                    self._checkpoint(data, log, time.perf_counter() - started)
                    log = []
        finally:
            reader.close()
        bar.close()
        if log:
            self._checkpoint(data, log, time.perf_counter() - started)
        self._check_replicas()
        return self.out / "student.pt"

    def _read_ahead(self, data: TrainingSet, reader: PatchReader) -> tuple[Draws, Future[Patches]]:
        draws = self._draw(data)
        return draws, reader.submit(*self._local(draws))

    def _check_replicas(self) -> None:
        """Under DDP: every rank must hold the same weights at the end (a cheap checksum, gathered)."""
        if self.shard.world == 1:
            return
        mine = torch.tensor(
            [float(sum(p.double().sum() for p in self.net.state_dict().values()))],
            dtype=torch.float64,
            device=self.device,
        )
        sums = self.shard.gather(mine)
        if not torch.all(sums == sums[0]):
            raise RuntimeError(f"replicas diverged: parameter checksums {sums.tolist()}")

    def _checkpoint(self, data: TrainingSet, log: list[dict], seconds: float) -> None:
        if self.shard.rank != 0:
            return
        with open(self.out / "log.jsonl", "a") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in log)
        with atomic_write(self.out / "state.pt") as tmp:
            torch.save(self._state(), tmp)
        provenance = {
            "method": self.config.method,
            "config": self.config.to_dict(),
            "iterations": self.iteration,
            "seed": self.config.seed,
            "data": data.describe(),
            "processes": self.shard.world,
            "device": str(self.device) if self.device.type == "cpu" else torch.cuda.get_device_name(self.device),
            "backend": dist.get_backend() if dist.is_initialized() else None,
            "seconds_this_session": round(seconds, 1),
            "selection": "last iteration (no model selection)",
            **self.method.provenance(),
        }
        save_student(
            self.out / "student.pt", self.net, self.config.student, preprocessing=self.prep, provenance=provenance
        )
