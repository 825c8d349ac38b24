"""What a teacher's decoder offers for one click: every output mask, its size and its IoU estimate.

Per organ of the held-out foundation corpus cases (the cases ``muduo evaluate-teachers`` scores; each
lesion component as its own object too): one click at the object's deepest voxel, a crop centred on
it (the teacher's contract: 128^3 at 2 mm), and the decoder's four outputs (index 0 the single output,
1-3 the multimask candidates; :meth:`Sam3D.decode_all`), each scored on the crop grid: Dice, voxels
predicted, the decoder's IoU estimate. Per class the mean Dice of each output, of the candidate with
the highest IoU estimate (what ``Sam3DPredictor(one_click_multimask=True)`` returns) and of the best
candidate by the truth (an oracle, for diagnosis only), and the mean predicted / true sizes.
``--blank``: the same clicks on an image without content (the normalised crop all zeros): what the
decoder answers from the click alone. ``--dense-state``: the training state of a teacher trained with
``pretrain-teachers --dense-weight`` (``WORK/standin_<modality>.state.pt``): its training-only dense head
(:class:`mudo_app.train.teacher_losses.DenseHead`) also segments each crop from the teacher's embedding, no
prompt at all, and the Dice of its arg-max for the object's class is reported beside the decoder's
(for a lesion, every lesion voxel the head marks in the crop counts). The head reads the embedding of
the loaded teacher (``--checkpoint``, weights stored in fp16), not the state's fp32 encoder. The
teachers' own evaluation (Dice on the whole case grid) is ``muduo evaluate-teachers``.

    .venv/bin/python sample-datasets/scripts/teacher_candidates.py --modality CT [--checkpoint CKPT] \
        [--eval-cases 6] [--blank] --json sample-datasets/benchmarks/teacher_candidates/ct_shipped.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mudo_app.bench.machine import describe
from mudo_app.evaluation.metrics import binary_dice
from mudo_app.io.atomic import write_json
from mudo_app.labels import ID_TO_NAME
from mudo_app.models.teachers import load_teacher
from mudo_app.synth.foundation import FOUNDATION_HELD_OUT_SEED, foundation_cases
from mudo_app.train.teacher_eval import click_objects, object_crop
from mudo_app.train.teacher_losses import DenseHead


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modality", required=True, choices=("CT", "PET"))
    parser.add_argument("--checkpoint", type=Path, default=None, help="teacher file (default: the shipped stand-in)")
    parser.add_argument("--eval-cases", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--blank", action="store_true", help="an image without content instead of the case's crop")
    parser.add_argument("--dense-state", type=Path, default=None, help="training state with a dense head")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    if args.eval_cases < 1 or args.threads < 1:
        parser.error("--eval-cases and --threads must be at least 1")
    torch.set_num_threads(args.threads)
    teacher = load_teacher(args.modality, args.checkpoint)
    c = teacher.contract
    head = None
    if args.dense_state is not None:
        state = torch.load(args.dense_state, map_location="cpu", weights_only=False)
        if "dense_head" not in state:
            parser.error(f"{args.dense_state} holds no dense head (trained without --dense-weight)")
        head = DenseHead(teacher.model.config.out_chans).eval()
        head.load_state_dict(state["dense_head"])
    rows: dict[str, list[dict]] = {}
    for case in foundation_cases(0, args.eval_cases, held_out=True):
        for cls, target in click_objects(case.require_label().array):
            crop, image, truth = object_crop(case, args.modality, c, target)  # a lesion: its component
            if args.blank:
                image = torch.zeros_like(image)
            point = torch.from_numpy(crop.world_to_crop(crop.centre_world[None])).float()[None]
            with torch.no_grad():
                emb = teacher.model.image_encoder(image)
                logits, iou = teacher.model.decode_all(emb, points=(point, torch.ones(1, 1, dtype=torch.int64)))
            up = (F.interpolate(logits, size=truth.shape, mode="trilinear", align_corners=False)[0] > 0).numpy()
            inter = (up & truth).reshape(4, -1).sum(1)
            size = up.reshape(4, -1).sum(1)
            dice = np.array([binary_dice(u, truth) for u in up])  # the object is in its crop: never NaN
            chosen = 1 + int(iou[0, 1:].argmax())
            dense: dict[str, float] = {}
            if head is not None:
                with torch.no_grad():
                    classes = F.interpolate(head(emb), size=truth.shape, mode="trilinear", align_corners=False)
                dense["dense_head_dice"] = binary_dice((classes[0].argmax(0) == cls).numpy(), truth)
            rows.setdefault(ID_TO_NAME[cls], []).append(
                {
                    **dense,
                    "dice": dice.tolist(),
                    "voxels": size.tolist(),
                    "iou_estimate": iou[0].tolist(),
                    "true_iou": (inter / np.maximum(1, size + truth.sum() - inter)).tolist(),
                    "target_voxels": int(truth.sum()),
                    "chosen": chosen,
                }
            )
    summary = {}
    for name, objs in rows.items():
        d = np.array([o["dice"] for o in objs])
        summary[name] = {
            "objects": len(objs),
            "dice_per_output": d.mean(0).round(4).tolist(),
            "dice_chosen_by_iou_estimate": round(float(np.mean([o["dice"][o["chosen"]] for o in objs])), 4),
            "dice_best_candidate_oracle": round(float(d[:, 1:].max(1).mean()), 4),
            "voxels_per_output": np.mean([o["voxels"] for o in objs], 0).round(0).tolist(),
            "target_voxels": round(float(np.mean([o["target_voxels"] for o in objs])), 0),
            "iou_estimate_per_output": np.mean([o["iou_estimate"] for o in objs], 0).round(3).tolist(),
            "true_iou_per_output": np.mean([o["true_iou"] for o in objs], 0).round(3).tolist(),
        }
        if head is not None:
            summary[name]["dense_head_dice"] = round(float(np.mean([o["dense_head_dice"] for o in objs])), 4)
    means = {
        "dice_single_output": np.mean([s["dice_per_output"][0] for s in summary.values()]),
        "dice_chosen_by_iou_estimate": np.mean([s["dice_chosen_by_iou_estimate"] for s in summary.values()]),
        "dice_best_candidate_oracle": np.mean([s["dice_best_candidate_oracle"] for s in summary.values()]),
    }
    if head is not None:
        means["dense_head_dice"] = np.mean([s["dense_head_dice"] for s in summary.values()])
    means = {k: round(float(v), 4) for k, v in means.items()}
    report = {
        "machine": describe(),
        "teacher": teacher.describe(),
        "held_out": f"synthetic foundation corpus, held-out seed {FOUNDATION_HELD_OUT_SEED}, "
        f"cases 0..{args.eval_cases - 1}",
        "protocol": "one click at the object's deepest voxel; Dice on the 128^3 crop grid centred on it"
        + ("; the image replaced by zeros (no content)" if args.blank else "")
        + (f"; dense head of {args.dense_state}, no prompt" if head is not None else ""),
        "class_mean": means,
        "per_class": summary,
    }
    write_json(args.json, report)
    for name, s in summary.items():
        print(
            f"{name:24s} dice per output {[round(100 * v, 1) for v in s['dice_per_output']]}  "
            f"voxels {s['voxels_per_output']} of {s['target_voxels']:.0f}  iou est {s['iou_estimate_per_output']}"
            + (f"  dense head {100 * s['dense_head_dice']:.1f}" if head is not None else "")
        )
    print("class means:", means)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
