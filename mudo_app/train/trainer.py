"""One trainer for MuDuo and its baselines (supervised, Mean Teacher, fully supervised).

Files in ``config.out`` (written by rank 0 only, each atomically)::

    config.json       the parsed config
    state.pt          resumable state: student, optimiser, scheduler, EMA, random streams, iteration
    student.pt        student checkpoint (mudo_app.models.checkpoint): at checkpoints and at the end
    prompt_net.pt     MuDuo's frozen PET-only prompt network
    log.jsonl         one line per iteration: losses, lambda, filter statistics, teacher calls,
                      embedding-cache hits, misses, evictions and bytes

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
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from monai.losses import DiceCELoss
from tqdm.auto import tqdm

from mudo_app.distill.consensus import consistency_weight
from mudo_app.distill.embedding_cache import EmbeddingCache
from mudo_app.distill.step import UnlabelledPatch, muduo_consistency
from mudo_app.distill.teacher_bank import TeacherBank
from mudo_app.errors import InputError
from mudo_app.io.atomic import atomic_write
from mudo_app.models.checkpoint import load_student, save_student
from mudo_app.models.loading import read_checkpoint
from mudo_app.models.student import build_student
from mudo_app.models.teachers import load_teacher
from mudo_app.runtime.devices import resolve_device
from mudo_app.runtime.distributed import Shard
from mudo_app.train.config import TrainConfig, config_from_dict
from mudo_app.train.data import TrainingSet, load_training_set
from mudo_app.train.prompt_net import load_or_train_prompt_net
from mudo_app.transforms.augment import FlipRot
from mudo_app.transforms.intensity import StudentInput
from mudo_app.transforms.patches import random_patch


def _write_json(path: Path, data: object) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2))


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
        self.ema: torch.nn.Module | None = None
        self.banks: dict[str, TeacherBank | None] = {"ct": None, "pet": None}
        self.prompt_net: torch.nn.Module | None = None
        self.cache: EmbeddingCache | None = None  # the teachers' embeddings (MuDuo), shared by both banks
        self.iteration = 0

    # ---- set-up ----------------------------------------------------------------------------------
    def _check_out(self, resume: bool) -> None:
        saved = self.out / "config.json"
        if resume:
            if not (self.out / "state.pt").is_file():
                raise InputError(f"nothing to resume in {self.out} (no state.pt)")
            old = config_from_dict(json.loads(saved.read_text()))
            free = {k: getattr(self.config, k) for k in ("iterations", "threads", "device", "embedding_cache_mb")}
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
        if c.method == "mean_teacher":
            self.ema = build_student(c.student).to(self.device)
            self.ema.load_state_dict(self.net.state_dict())
            for p in self.ema.parameters():
                p.requires_grad_(False)
        if c.method == "muduo":
            budget = int(c.embedding_cache_mb * 2**20)
            self.cache = EmbeddingCache(budget, c.embedding_storage, "config field 'embedding_cache_mb'")
            if c.teachers in ("both", "ct"):
                self.banks["ct"] = TeacherBank(load_teacher("CT", c.ct_teacher, self.device), c.patch, self.cache)
            if c.teachers in ("both", "pet"):
                self.banks["pet"] = TeacherBank(load_teacher("PET", c.pet_teacher, self.device), c.patch, self.cache)
                self.prompt_net = load_or_train_prompt_net(
                    data.labelled, c, self.out, self.shard, self.progress, reuse=resume, device=self.device
                )
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
        self.loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=0.5, lambda_ce=0.5)
        self.rng = np.random.default_rng(c.seed)
        self.noise = torch.Generator().manual_seed(c.seed)
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
            "ema": None if self.ema is None else self.ema.state_dict(),
            "rng": self.rng.bit_generator.state,
            "noise": self.noise.get_state(),
        }

    def _restore(self) -> None:
        state = read_checkpoint(self.out / "state.pt")
        self.net.load_state_dict(state["student"])
        self.optimiser.load_state_dict(state["optimiser"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.rng.bit_generator.state = state["rng"]
        self.noise.set_state(state["noise"])
        self.iteration = int(state["iteration"])

    # ---- one iteration ---------------------------------------------------------------------------
    def _augmentation(self) -> FlipRot:
        c = self.config
        aug = FlipRot.draw(self.rng, c.patch[0] == c.patch[1])  # drawn either way: one random stream
        return aug if c.augment == "flip_rot" else FlipRot()

    def _draw(self, data: TrainingSet):
        """The global batch's random draws, identical on every rank."""
        c = self.config
        lab = []
        for _ in range(c.batch_labelled):
            case = data.labelled[int(self.rng.integers(len(data.labelled)))]
            x, y = random_patch(case.image, case.label, c.patch, self.rng, c.foreground_prob, case.voxels)
            lab.append((x, y, self._augmentation()))
        unl = []
        if c.method in ("muduo", "mean_teacher"):
            for _ in range(c.batch_unlabelled):
                ci = int(self.rng.integers(len(data.unlabelled)))
                pos = int(self.rng.integers(len(data.unlabelled[ci].starts)))
                unl.append((ci, pos, self._augmentation(), int(self.rng.integers(2**31))))
        alphas = self.rng.uniform(0.0, 1.0, size=(len(c.class_ids), max(len(unl), 1)))
        return lab, unl, alphas

    def _region(self, case, pos: int) -> np.ndarray:
        if pos not in case.regions:
            x = torch.from_numpy(np.ascontiguousarray(case.patch(pos, self.config.patch)[1:]))[None].to(self.device)
            assert self.prompt_net is not None, "MuDuo's PET teacher needs the prompt network"
            with torch.no_grad():
                case.regions[pos] = self.prompt_net(x).argmax(1)[0].cpu().numpy().astype(np.uint8)
        return case.regions[pos]

    def step(self, data: TrainingSet) -> dict[str, float]:
        c, shard = self.config, self.shard
        lab, unl, alphas = self._draw(data)
        lab, unl_local = lab[shard.take(len(lab))], unl[shard.take(len(unl))] if unl else []
        xs = [aug.apply(torch.from_numpy(np.ascontiguousarray(x))) for x, _, aug in lab]
        ys = [aug.apply(torch.from_numpy(np.ascontiguousarray(y))) for _, y, aug in lab]
        xu = [
            aug.apply(torch.from_numpy(np.ascontiguousarray(data.unlabelled[ci].patch(pos, c.patch))))
            for ci, pos, aug, _ in unl_local
        ]
        if c.method == "mean_teacher" and xu:
            clean = torch.stack(xu)
            noisy = clean + 0.1 * torch.randn(clean.shape, generator=self.noise)  # CPU stream: same on any device
            xu = list(noisy)
            clean = clean.to(self.device)
        self.model.train()
        logits = self.model(torch.stack(xs + xu).to(self.device))
        nl = len(xs)
        sup = self.loss_fn(logits[:nl], torch.stack(ys)[:, None].long().to(self.device))
        lam = consistency_weight(self.iteration, c.iterations, c.lambda_max)
        cons, stats = logits.sum() * 0.0, dict[str, float]()
        if c.method == "muduo":
            prob = torch.softmax(logits[nl:], 1)
            prob = torch.stack([aug.invert(p) for p, (_, _, aug, _) in zip(prob, unl_local)])
            samples = [
                UnlabelledPatch(
                    (ci, pos),
                    data.unlabelled[ci].ct,
                    data.unlabelled[ci].pet,
                    data.unlabelled[ci].centre_world(pos, c.patch),
                    None if self.prompt_net is None else self._region(data.unlabelled[ci], pos),
                    (c.seed, self.iteration, seed),
                )
                for ci, pos, _, seed in unl_local
            ]
            cons, stats = muduo_consistency(
                prob,
                samples,
                c.class_ids,
                self.banks["ct"],
                self.banks["pet"],
                c.consensus(),
                c.k_points,
                alphas,
                shard,
            )
        elif c.method == "mean_teacher":
            assert self.ema is not None
            with torch.no_grad():
                target = torch.softmax(self.ema(clean), 1)
            cons = ((torch.softmax(logits[nl:], 1) - target) ** 2).mean()
        loss = sup + lam * cons
        self.optimiser.zero_grad()
        loss.backward()
        self.optimiser.step()
        self.scheduler.step()
        if self.ema is not None:
            with torch.no_grad():
                for e, p in zip(self.ema.parameters(), self.net.parameters()):
                    e.mul_(c.ema_decay).add_(p.detach(), alpha=1 - c.ema_decay)
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
            **self.teacher_calls(),
        }

    def teacher_calls(self) -> dict[str, int]:
        """Teacher calls and embedding-cache counters so far (``cache_hits``, ``cache_misses``,
        ``cache_evictions``, ``cache_bytes``, ``cache_entries``), for ``log.jsonl``."""
        out = {}
        for name, bank in self.banks.items():
            if bank is not None:
                out[f"{name}_encoder_calls"] = bank.encoder_calls
                out[f"{name}_decoder_calls"] = bank.decoder_calls
        if self.cache is not None:
            out.update({f"cache_{k}": v for k, v in self.cache.stats().items()})
        return out

    # ---- the run ---------------------------------------------------------------------------------
    def run(self, resume: bool = False, data: TrainingSet | None = None, stop_after: int | None = None) -> Path:
        """Train to ``config.iterations`` (or stop after ``stop_after`` iterations, leaving a resumable
        checkpoint); returns the student checkpoint's path."""
        c = self.config
        if c.threads:
            torch.set_num_threads(c.threads)
        self._check_out(resume)
        data = data or load_training_set(c, self.prep)
        for name, n in (("batch_labelled", c.batch_labelled), ("batch_unlabelled", c.batch_unlabelled)):
            if n % self.shard.world:
                raise InputError(f"config field {name!r} = {n} must be divisible by the {self.shard.world} processes")
        if self.shard.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            _write_json(self.out / "config.json", c.to_dict())
        self._setup(data, resume)
        if resume:
            self._restore()
        started = time.perf_counter()
        bar = tqdm(total=c.iterations, initial=self.iteration, desc=c.method, unit="it", disable=not self.progress)
        log: list[dict] = []
        end = c.iterations if stop_after is None else min(stop_after, c.iterations)
        while self.iteration < end:
            rec = self.step(data)
            log.append(rec)
            bar.update(1)
            bar.set_postfix(loss=f"{rec['loss']:.3f}")
            if self.iteration % c.checkpoint_every == 0 or self.iteration == c.iterations:
                self._checkpoint(data, log, time.perf_counter() - started)
                log = []
        bar.close()
        if log:
            self._checkpoint(data, log, time.perf_counter() - started)
        self._check_replicas()
        return self.out / "student.pt"

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
            "teachers": [b.teacher.describe() for b in self.banks.values() if b is not None],
        }
        save_student(
            self.out / "student.pt", self.net, self.config.student, preprocessing=self.prep, provenance=provenance
        )
