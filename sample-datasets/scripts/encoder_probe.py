"""What a teacher's image encoder knows of where each class lies: a linear probe of its embedding.

Each 3D SAM embedding vector covers one patch of the crop (16^3 voxels at 2 mm for the stand-ins:
32 mm). A linear classifier (one ``nn.Linear`` over the embedding's channels, softmax over the 14
classes) is fitted, the encoder frozen, to each patch's class fractions (:func:`class_fractions` of
the crop's label map) on training crops of the foundation corpus (``--train-cases``, crops drawn as
``pretrain-teachers`` draws them, :func:`sample_crop`), then scored on crops of the held-out corpus
cases: per class, the Dice of the arg-max patch labels against the patches' majority class. No
prompt is involved: this measures the encoder alone, which every click answer is decoded from.

    .venv/bin/python sample-datasets/scripts/encoder_probe.py --modality CT [--checkpoint CKPT | --state STATE] \\
        --json sample-datasets/benchmarks/encoder_probe/ct_shipped.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mudo_app.bench.machine import describe
from mudo_app.io.atomic import write_json
from mudo_app.labels import ID_TO_NAME, NUM_CLASSES
from mudo_app.models.teachers import load_teacher
from mudo_app.synth.foundation import FOUNDATION_HELD_OUT_SEED, FOUNDATION_SEED, foundation_cases
from mudo_app.train.teacher_losses import class_fractions
from mudo_app.train.teachers import TrainingObjects, sample_crop


def patch_features(teacher, cases, crops: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C) embedding vectors and (N, classes) class fractions of every patch of ``crops`` crops
    drawn from ``cases`` in turn (a crop near a random object, as in training)."""
    rng = np.random.default_rng(seed)
    objects = [TrainingObjects(c) for c in cases]
    grid = teacher.contract.crop // teacher.model.config.patch_size
    xs, ys = [], []
    for k in range(crops):
        i = k % len(cases)
        image, _, _, label_map = sample_crop(cases[i], teacher.modality, teacher.contract, rng, objects=objects[i])
        with torch.no_grad():
            emb = teacher.model.image_encoder(torch.from_numpy(image)[None, None])
        xs.append(emb[0].flatten(1).T)
        ys.append(class_fractions(torch.from_numpy(label_map)[None], grid, NUM_CLASSES)[0].flatten(1).T)
    return torch.cat(xs), torch.cat(ys)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modality", required=True, choices=("CT", "PET"))
    parser.add_argument("--checkpoint", type=Path, default=None, help="teacher file (default: the shipped stand-in)")
    parser.add_argument(
        "--state",
        type=Path,
        default=None,
        help="probe the encoder of a pretrain-teachers training state instead (e.g. the one after the dense "
        "stage, WORK/standin_ct.state.dense-stage.pt; its fp32 weights replace the loaded teacher's)",
    )
    parser.add_argument("--train-cases", type=int, default=20, help="foundation corpus cases the probe is fitted on")
    parser.add_argument("--train-crops", type=int, default=60)
    parser.add_argument("--eval-cases", type=int, default=6, help="held-out corpus cases it is scored on")
    parser.add_argument("--eval-crops", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    if min(args.train_cases, args.train_crops, args.eval_cases, args.eval_crops, args.threads) < 1:
        parser.error("case, crop and thread counts must be at least 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    teacher = load_teacher(args.modality, args.checkpoint)
    if args.state is not None:
        state = torch.load(args.state, map_location="cpu", weights_only=False)
        if state["settings"]["modality"] != args.modality:
            parser.error(f"{args.state} is the state of a {state['settings']['modality']} teacher, not {args.modality}")
        teacher.model.load_state_dict(state["model"])
    x_train, y_train = patch_features(teacher, foundation_cases(0, args.train_cases), args.train_crops, seed=0)
    x_eval, y_eval = patch_features(
        teacher, foundation_cases(0, args.eval_cases, held_out=True), args.eval_crops, seed=1
    )
    probe = torch.nn.Linear(x_train.shape[1], NUM_CLASSES)
    opt = torch.optim.Adam(probe.parameters(), lr=1e-2)
    for _ in range(500):  # full batch
        loss = F.cross_entropy(probe(x_train), y_train)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred, truth = probe(x_eval).argmax(1), y_eval.argmax(1)
        eval_loss = float(F.cross_entropy(probe(x_eval), y_eval))
    dice = {}
    for c in range(1, NUM_CLASSES):
        t, p = truth == c, pred == c
        if t.any():
            dice[ID_TO_NAME[c]] = round(2 * float((t & p).sum()) / float(t.sum() + p.sum()), 4)
    report = {
        "machine": describe(),
        "teacher": teacher.describe()
        if args.state is None
        else f"the encoder of training state {args.state} ({state['stage']} stage, iteration {state['iteration']})",
        "data": f"fitted on {args.train_crops} crops of foundation corpus cases 0..{args.train_cases - 1} "
        f"(seed {FOUNDATION_SEED}); scored on {args.eval_crops} crops of held-out cases 0..{args.eval_cases - 1} "
        f"(seed {FOUNDATION_HELD_OUT_SEED})",
        "protocol": "linear probe (softmax over 14 classes) of the frozen embedding, one vector per 32 mm patch, "
        "fitted to the patch's class fractions; Dice of arg-max patch labels against the patches' majority class",
        "train_cross_entropy": round(float(loss), 4),
        "eval_cross_entropy": round(eval_loss, 4),
        "eval_patches": int(len(truth)),
        "patch_dice": dice,
        "patch_dice_mean": round(float(np.mean(list(dice.values()))), 4),
    }
    write_json(args.json, report)
    print(", ".join(f"{k} {100 * v:.1f}" for k, v in dice.items()))
    print(f"mean patch Dice {100 * report['patch_dice_mean']:.1f} %, held-out cross-entropy {eval_loss:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
