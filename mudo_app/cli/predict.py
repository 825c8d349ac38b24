"""``muduo predict``: prompt-free segmentation by a student checkpoint, of one case or a folder.

One case: ``--ct CT --pet PET --out LABEL``. A folder (nnU-Net ``<id>_0000`` / ``<id>_0001`` files or
a datastore): ``--input DIR --output DIR``, the model loaded once, the next case read and the last
label written while this one is predicted; a bad case is reported and skipped (exit code 2 at the
end). Under ``torchrun`` the folder's cases are dealt out over the processes (each case predicted by
exactly one).

Only what the command needs is imported, and the input files start reading (in background threads)
before the network's libraries are imported.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mudo_app.errors import InputError
from mudo_app.resources import shipped_student
from mudo_app.runtime.choices import DEVICES, PRECISIONS

SUFFIXES = (".nii.gz", ".nii")


def register(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="segment PET/CT cases with a student (prompt-free, sliding window)",
        description="Write label maps (0..13) on exactly the PET grid and affine: one case (--ct, --pet, "
        "--out) or every case of a folder (--input, --output).",
    )
    one = p.add_argument_group("one case")
    one.add_argument("--ct", type=Path, help="CT in HU (resampled onto the PET grid if needed)")
    one.add_argument("--pet", type=Path, help="PET in SUV: defines the output grid")
    one.add_argument("--out", type=Path, help="output label file (.nii.gz, or .nii: uncompressed, faster)")
    many = p.add_argument_group("a folder of cases")
    many.add_argument(
        "--input",
        type=Path,
        help="folder of <id>_0000.nii.gz (CT) and <id>_0001.nii.gz (PET) files, or a datastore folder",
    )
    many.add_argument("--output", type=Path, help="folder for <id><suffix> label files (not inside --input)")
    many.add_argument("--suffix", choices=SUFFIXES, default=".nii.gz", help="output file suffix (.nii: uncompressed)")
    p.add_argument(
        "--model",
        type=Path,
        default=None,
        help="student checkpoint (default: the shipped student, mudo_app/assets/student)",
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
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    # MONAI imports these optionally; prediction never uses them (mudo_app.runtime.imports): 1.6 s saved.
    # Every label file is written atomically and synced before run() returns: the process may end at once.
    # The windows' activations are allocated anew per batch: keeping freed memory saves their page
    # faults (mudo_app.runtime.heap; a whole-body case: about 0.5 s in bf16, 1.5-2 s in fp32).
    p.set_defaults(
        run=run,
        unused_imports=("ignite", "matplotlib", "scipy.signal"),
        exit_without_teardown=True,
        keep_freed_memory=True,
    )


def _jobs(args: argparse.Namespace):
    """``(cases, output path of a case)`` for either form of the command; bad arguments -> InputError."""
    from mudo_app.io.cases import CaseFiles, check_output_folder, find_cases
    from mudo_app.io.volume import case_name

    single = [a for a in ("ct", "pet", "out") if getattr(args, a) is not None]
    folder = [a for a in ("input", "output") if getattr(args, a) is not None]
    if single and folder:
        raise InputError("give either --ct/--pet/--out (one case) or --input/--output (a folder), not both")
    if folder:
        if len(folder) < 2:
            raise InputError("a folder needs both --input and --output")
        out = check_output_folder(args.input, args.output)
        cases = find_cases(args.input)
        return cases, lambda files: out / f"{files.case_id}{args.suffix}"
    if len(single) < 3:
        raise InputError("one case needs --ct, --pet and --out (or give --input and --output for a folder)")
    if not str(args.out).endswith(SUFFIXES):
        raise InputError(f"--out must end in .nii.gz or .nii, got {args.out}")
    for what, path in (("CT", args.ct), ("PET", args.pet)):
        if not path.is_file():
            raise InputError(f"{what}: file not found: {path}")
    return [CaseFiles(case_name(args.pet), args.ct, args.pet)], lambda files: args.out


def run(args: argparse.Namespace) -> int:
    if args.roi is not None and (min(args.roi) < 16 or any(r % 16 for r in args.roi)):
        raise InputError(f"--roi sides must be multiples of 16, got {args.roi}")
    if not 0 <= args.overlap < 1:
        raise InputError(f"--overlap must be in [0, 1), got {args.overlap}")
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be at least 1, got {args.threads}")
    model_path = args.model or shipped_student()
    if not model_path.is_file():
        if args.model is None:
            raise InputError(f"the shipped student {model_path} is missing (reinstall mudo_app, or pass --model)")
        raise InputError(f"student checkpoint not found: {model_path}")
    cases, output_for = _jobs(args)
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    mine = cases[rank::world]  # under torchrun: every case goes to exactly one process

    from mudo_app.io.cases import CaseReader

    reader = CaseReader(mine)  # starts reading now, while the network's libraries are imported
    try:
        import torch

        from mudo_app.models.checkpoint import load_student, training_patch
        from mudo_app.predict import predict_cases
        from mudo_app.runtime.devices import resolve_device

        if args.threads:
            torch.set_num_threads(args.threads)
        model, prep, meta = load_student(model_path, resolve_device(args.device, "--device"))
        roi = tuple(args.roi) if args.roi else training_patch(meta)
        progress = not args.no_progress and rank == 0
        skipped = predict_cases(model, prep, reader, output_for, roi, args.overlap, args.precision, progress)
    finally:
        reader.close()
    done = len(mine) - len(skipped)
    if args.input is None and not skipped:
        print(f"wrote {args.out}")
    else:
        where = f" (process {rank} of {world})" if world > 1 else ""
        print(f"wrote {done} of {len(mine)} label files to {args.output}{where}")
    if skipped:
        for case_id, why in skipped:
            print(f"muduo predict: skipped {case_id}: {why}", file=sys.stderr)
        if args.input is None:
            raise InputError(skipped[0][1])
        print(f"muduo predict: error: {len(skipped)} of {len(mine)} cases skipped", file=sys.stderr)
        return 2
    return 0
