"""How a teacher answers a *mask-only* prompt (MuDuo's CT branch): the true mask of a structure, on a
64^3 patch of a demo case, as the only prompt; Dice of the teacher's answer against that same truth.

    .venv/bin/python sample-datasets/scripts/mask_prompt_check.py [--modality CT|PET] [--checkpoint CKPT]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from mudo_app.distill.teacher_bank import TeacherBank, patch_centre_world
from mudo_app.evaluation.metrics import binary_dice
from mudo_app.io.datastore import PetCtDatastore
from mudo_app.io.volume import load_volume
from mudo_app.labels import ID_TO_NAME
from mudo_app.models.teachers import load_teacher

DEMO = Path(__file__).resolve().parents[1] / "demo" / "datastore"
PATCH = (64, 64, 64)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modality", default="CT", choices=("CT", "PET"))
    parser.add_argument("--checkpoint", default=None, help="official checkpoint (default: the stand-in)")
    parser.add_argument("--case", default="syn005")
    args = parser.parse_args()
    torch.set_num_threads(2)
    store = PetCtDatastore(DEMO)
    case = store.load_case(args.case)
    volume = case.ct if args.modality == "CT" else case.pet
    truth_all = load_volume(store.ground_truth_path(args.case)).array
    bank = TeacherBank(load_teacher(args.modality, args.checkpoint), PATCH)
    for cls in (1, 4, 5, 9):
        idx = np.argwhere(truth_all == cls)
        start = np.clip(idx.mean(0).round().astype(int) - PATCH[0] // 2, 0, np.array(truth_all.shape) - PATCH[0])
        box = tuple(slice(int(a), int(a) + p) for a, p in zip(start, PATCH))
        truth = torch.from_numpy((truth_all[box] == cls).astype(np.float32))
        emb = bank.embedding((args.modality, cls), volume, patch_centre_world(volume.affine, start, PATCH))
        answer = bank.from_masks(emb, bank.frame(volume.spacing), truth[None])[0] > 0.5
        dice = binary_dice(answer.numpy(), truth.numpy())
        print(f"{ID_TO_NAME[cls]:24s} Dice {dice:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
