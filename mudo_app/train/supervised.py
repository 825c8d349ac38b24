"""Plain supervised training of the student on labelled cases (prediction: :mod:`mudo_app.predict`).

This is the "supervised only" baseline and the loop that measures the synthetic data's headroom.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.losses import DiceCELoss
from tqdm.auto import tqdm

from mudo_app.io.datastore import Case
from mudo_app.models import build_student
from mudo_app.transforms.intensity import StudentInput
from mudo_app.transforms.patches import ArrayCase, PatchSource


@dataclass(frozen=True)
class SupervisedSettings:
    student: str = "unet_small"
    iterations: int = 600
    batch_size: int = 2
    patch: Sequence[int] = (64, 64, 64)
    lr: float = 2e-3
    seed: int = 0
    foreground_prob: float = 0.5
    lesion_share: float = 0.0  # of the foreground patches, the share centred on a lesion (TrainConfig)
    batch_dice: bool = False  # Dice over the batch (TrainConfig ``dice="batch"``) instead of per patch


def train_supervised(
    cases: list[Case], settings: SupervisedSettings = SupervisedSettings(), progress: bool = True
) -> torch.nn.Module:
    """Train a student from scratch on ``cases`` (each with a label); returns it in eval mode."""
    if not cases or any(c.label is None for c in cases):
        raise ValueError("train_supervised needs at least one case, every case labelled")
    prep = StudentInput()
    data = [ArrayCase(prep(c.ct.array, c.pet.array), c.require_label().array.astype(np.int64)) for c in cases]
    return fit_supervised(build_student(settings.student), data, settings, progress)


def fit_supervised(
    net: torch.nn.Module,
    data: Sequence[PatchSource],
    settings: SupervisedSettings,
    progress: bool = True,
    desc: str = "supervised",
    channels: slice = slice(None),
) -> torch.nn.Module:
    """Fit ``net`` on random patches of ``data`` (labelled cases in memory or on disk), input channels
    ``channels`` of their images, on the device its parameters are on (patches are cut on the CPU);
    returns it in eval mode."""
    device = next(net.parameters()).device
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    opt = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=settings.iterations, power=0.9)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=0.5, lambda_ce=0.5, batch=settings.batch_dice)
    net.train()
    bar = tqdm(range(settings.iterations), desc=desc, unit="it", disable=not progress)
    for _ in bar:
        batch = []
        for _ in range(settings.batch_size):  # pick, then cut: the random stream of the measured runs
            i = int(rng.integers(len(data)))
            image, label = data[i].random_patch(settings.patch, rng, settings.foreground_prob, settings.lesion_share)
            batch.append((image[channels], label.astype(np.int64)))
        xs, ys = zip(*batch)
        x = torch.from_numpy(np.stack(xs)).to(device)
        y = torch.from_numpy(np.stack(ys)[:, None]).to(device)
        loss = loss_fn(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return net.eval()
