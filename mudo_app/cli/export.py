"""``muduo export``: a label map as DICOM RTSTRUCT or DICOM-SEG against its reference CT series."""

from __future__ import annotations

import argparse
from pathlib import Path

from mudo_app.dicom.case_export import FORMATS
from mudo_app.errors import InputError


def register(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export a label map as DICOM RTSTRUCT or DICOM-SEG referencing a CT series",
        description="Write a label map (NIfTI/NRRD, values 0..13) as an RTSTRUCT (one ROI per label, contours on "
        "pixel edges, each CT slice's own geometry) or a DICOM-SEG (one segment per label, SNOMED CT codes), "
        "referencing the CT series in --reference-ct (a folder of its DICOM files). A label on another grid is "
        "resampled (nearest) onto the CT's, with a note.",
    )
    p.add_argument("--label", type=Path, default=None, help="the label map (.nii.gz, .nii or .nrrd)")
    p.add_argument("--reference-ct", type=Path, default=None, help="folder of the CT series' DICOM files")
    p.add_argument(
        "--datastore", type=Path, default=None, help="instead of --label: a datastore holding --case (DICOM-imported)"
    )
    p.add_argument("--case", default=None, help="the case whose label (--tag) is exported against its own CT series")
    p.add_argument("--tag", default="final", help="with --case: the label tag (default final)")
    p.add_argument("--format", choices=FORMATS, required=True)
    p.add_argument("--out", type=Path, required=True, help="the DICOM file to write")
    p.add_argument(
        "--holes",
        choices=("nested", "keyhole"),
        default="nested",
        help="RTSTRUCT holes: contours of their own inside the region's (default) or joined to it by a zero-width cut",
    )
    p.add_argument("--algorithm", default="MuDuo student", help="the model that made the label (recorded)")
    p.add_argument("--algorithm-version", default="", help="its checkpoint or version (recorded)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mudo_app.dicom.rtstruct import write_rtstruct
    from mudo_app.dicom.seg import write_seg
    from mudo_app.dicom.series import read_ct_series
    from mudo_app.io.volume import load_volume

    if args.out.is_dir():
        raise InputError(f"--out is a folder: {args.out}; give the file to write")
    if (args.case is None) == (args.label is None) or (args.case is None) != (args.datastore is None):
        raise InputError("give either --label LABEL --reference-ct DIR, or --datastore DIR --case ID")
    if args.case is not None:
        return _export_case(args)
    if args.reference_ct is None:
        raise InputError("--label needs --reference-ct DIR (the CT series the contours reference)")
    if not args.label.is_file():
        raise InputError(f"label not found: {args.label}")
    label = load_volume(args.label, "label")
    series = read_ct_series(args.reference_ct)
    if args.format == "rtstruct":
        version = f" {args.algorithm_version}" if args.algorithm_version else ""
        export = write_rtstruct(args.out, label, series, holes=args.holes, algorithm=args.algorithm + version)
    else:
        export = write_seg(args.out, label, series, algorithm=args.algorithm, version=args.algorithm_version)
    _report(args, export, len(series.slices))
    return 0


def _export_case(args: argparse.Namespace) -> int:
    from mudo_app.dicom.case_export import export_case
    from mudo_app.dicom.series import read_ct_series
    from mudo_app.io.datastore import PetCtDatastore

    store = PetCtDatastore(args.datastore)
    if not store.has_case(args.case):
        raise InputError(f"case {args.case!r} is not in the datastore {args.datastore}")
    reference = read_ct_series(args.reference_ct) if args.reference_ct else None
    export = export_case(
        store, args.case, args.format, args.out, tag=args.tag, holes=args.holes, algorithm=args.algorithm,
        version=args.algorithm_version, reference=reference,
    )  # fmt: skip
    _report(args, export, None)
    return 0


def _report(args: argparse.Namespace, export, slices: int | None) -> None:
    for note in export.notes:
        print(f"note: {note}")
    rois = ", ".join(f"{name} ({n} contours)" if args.format == "rtstruct" else name for name, n in export.rois.items())
    what = f"{args.format.upper()} of {len(export.rois)} label(s)" + (f" on {slices} CT slices" if slices else "")
    print(f"wrote {export.path}: {what}: {rois}")
