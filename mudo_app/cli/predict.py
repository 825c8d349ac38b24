"""``muduo predict``: prompt-free segmentation of one PET/CT case by a student checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from mudo_app.errors import InputError
from mudo_app.resources import demo_student, where_demo_is_looked_for
from mudo_app.runtime.choices import DEVICES, PRECISIONS


def register(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="segment a PET/CT case with a student (prompt-free, sliding window)",
        description="Write a label map (0..13) on exactly the PET grid and affine.",
    )
    p.add_argument("--ct", required=True, type=Path, help="CT in HU (resampled onto the PET grid if needed)")
    p.add_argument("--pet", required=True, type=Path, help="PET in SUV: defines the output grid")
    p.add_argument("--out", required=True, type=Path, help="output label file (.nii.gz)")
    p.add_argument(
        "--model", type=Path, default=None, help="student checkpoint (default: the demo student made by `make demo`)"
    )
    p.add_argument(
        "--roi",
        type=int,
        nargs=3,
        default=None,
        help="sliding-window size in voxels (default: the patch size the student was trained on)",
    )
    p.add_argument("--overlap", type=float, default=0.25, help="sliding-window overlap fraction")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="auto: bf16 on GPUs and CPUs with native bf16 (AVX512-BF16/AMX), else fp32",
    )
    p.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="where the network runs (auto: a GPU when PyTorch sees one)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from mudo_app.io.volume import load_volume, save_volume
    from mudo_app.models.checkpoint import load_student, training_patch
    from mudo_app.predict import predict_volume
    from mudo_app.runtime.devices import resolve_device

    if not str(args.out).endswith((".nii.gz", ".nii")):
        raise InputError(f"--out must end in .nii.gz or .nii, got {args.out}")
    if args.roi is not None and (min(args.roi) < 16 or any(r % 16 for r in args.roi)):
        raise InputError(f"--roi sides must be multiples of 16, got {args.roi}")
    if not 0 <= args.overlap < 1:
        raise InputError(f"--overlap must be in [0, 1), got {args.overlap}")
    model_path = args.model or demo_student()
    if model_path is None or not model_path.is_file():
        if args.model is None:
            raise InputError(f"no student checkpoint given (--model) and no demo student: {where_demo_is_looked_for()}")
        raise InputError(f"student checkpoint not found: {model_path}")
    model, prep, meta = load_student(model_path, resolve_device(args.device, "--device"))
    roi = tuple(args.roi) if args.roi else training_patch(meta)
    ct = load_volume(args.ct, "CT", dtype=np.float32)
    pet = load_volume(args.pet, "PET", dtype=np.float32)
    label = predict_volume(model, prep, ct, pet, roi=roi, overlap=args.overlap, precision=args.precision)
    save_volume(label, args.out, dtype=np.uint8)
    print(f"wrote {args.out} {label.shape}")
    return 0
