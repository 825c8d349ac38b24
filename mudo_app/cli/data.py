"""``muduo sample-data`` and ``muduo import``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mudo_app.errors import InputError


def register(sub) -> None:
    p = sub.add_parser(
        "sample-data",
        help="generate synthetic whole-body PET/CT phantoms (synthetic PET)",
        description="Generate synthetic PET/CT phantoms: CT (HU), PET (SUV, synthetic), labels 0..13.",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder (must be empty or new)")
    p.add_argument("--cases", type=int, default=10, help="number of cases (default 10)")
    p.add_argument("--seed", type=int, default=0, help="random seed; equal seeds give byte-identical files")
    p.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        default=(4.0, 4.0, 4.0),
        metavar=("X", "Y", "Z"),
        help="voxel size in mm (default 4 4 4; 2 2 3 is autoPET-like)",
    )
    p.add_argument("--layout", default="datastore", choices=("datastore", "autopet", "autopet-organ", "nnunet"))
    p.add_argument(
        "--labelled", type=int, default=None, help="datastore layout: how many cases get a final label (default all)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run_sample_data)

    p = sub.add_parser(
        "import",
        help="import autoPET / AutoPET-Organ / nnU-Net folders or DICOM PET/CT studies into a datastore",
        description="Import PET/CT cases into a MuDuo datastore; bad cases are skipped with a reason. "
        "--from dicom: a tree of DICOM files (any names); each study's PET becomes SUVbw (QIBA) and its CT is "
        "resampled onto the PET grid.",
    )
    p.add_argument("--from", dest="source", required=True, choices=("autopet", "autopet-organ", "nnunet", "dicom"))
    p.add_argument("src", type=Path, help="source folder")
    p.add_argument("--to", dest="dest", required=True, type=Path, help="datastore folder (created if missing)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run_import)


def run_sample_data(args: argparse.Namespace) -> int:
    from mudo_app.synth import PhantomSettings, write_dataset

    if args.cases < 1:
        raise InputError(f"--cases must be at least 1, got {args.cases}")
    if args.labelled is not None and not 0 <= args.labelled <= args.cases:
        raise InputError(f"--labelled must be in 0..{args.cases}, got {args.labelled}")
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        raise InputError(f"--out {args.out} exists and is not an empty folder")
    try:
        settings = PhantomSettings(spacing=tuple(args.spacing))
    except ValueError as exc:
        raise InputError(f"--spacing: {exc}") from exc
    write_dataset(args.out, args.cases, args.seed, settings, args.layout, args.labelled, progress=not args.quiet)
    print(
        f"wrote {args.cases} synthetic case(s) ({args.layout} layout, grid {settings.shape}, "
        f"spacing {settings.spacing} mm, seed {args.seed}) to {args.out}"
    )
    return 0


def run_import(args: argparse.Namespace) -> int:
    if args.source == "dicom":
        from mudo_app.dicom.importer import import_dicom

        report = import_dicom(args.src, args.dest, progress=not args.quiet)
    else:
        from mudo_app.io.importers import import_tree

        report = import_tree(args.source, args.src, args.dest, progress=not args.quiet)
    print(report.summary())
    if report.skipped:
        print(f"muduo import: {len(report.skipped)} case(s) skipped, see above", file=sys.stderr)
        return 2
    return 0
