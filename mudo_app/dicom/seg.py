"""DICOM-SEG export of a label map against its reference CT series (highdicom).

One segment per label present, each with its SNOMED CT property category and type: organs are
"Anatomical Structure" (123037004) with their own type (liver 10200004, kidney 64033007, heart
80891009, spleen 78961009, aorta 15825003, prostate 41216001, upper / lower lobe of lung 45653009 /
90572001, middle lobe of right lung 72481006), left or right given as a laterality modifier (Left
7771000, Right 24028007), as DICOM codes paired organs; the lesion is a "Morphologically Abnormal
Structure" (49755003) of type "Neoplasm" (108369006). The algorithm identification names the model
and its checkpoint. Frames are the CT slices, in the series' order (the label sampled at each pixel
centre, as for the RTSTRUCT: :func:`mudo_app.dicom.rtstruct.label_on_series`).
"""

from __future__ import annotations

import os

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.coding import Code

from mudo_app.dicom.rtstruct import Export, labels_on_ct, write_dataset
from mudo_app.dicom.series import CtSeries
from mudo_app.io.volume import Volume
from mudo_app.labels import LABELS, LESION

ANATOMICAL_STRUCTURE = Code("123037004", "SCT", "Anatomical Structure")
ABNORMAL_STRUCTURE = Code("49755003", "SCT", "Morphologically Abnormal Structure")
LEFT, RIGHT = Code("7771000", "SCT", "Left"), Code("24028007", "SCT", "Right")
UPPER_LOBE, LOWER_LOBE = Code("45653009", "SCT", "Upper lobe of lung"), Code("90572001", "SCT", "Lower lobe of lung")
KIDNEY = Code("64033007", "SCT", "Kidney")
ARTIFICIAL_INTELLIGENCE = Code("123110", "DCM", "Artificial Intelligence")  # the algorithm family (CID 7162)

# label id -> (category, type, laterality modifier or None)
SEGMENT_CODES: dict[int, tuple[Code, Code, Code | None]] = {
    1: (ANATOMICAL_STRUCTURE, Code("10200004", "SCT", "Liver"), None),
    2: (ANATOMICAL_STRUCTURE, KIDNEY, LEFT),
    3: (ANATOMICAL_STRUCTURE, KIDNEY, RIGHT),
    4: (ANATOMICAL_STRUCTURE, Code("80891009", "SCT", "Heart"), None),
    5: (ANATOMICAL_STRUCTURE, Code("78961009", "SCT", "Spleen"), None),
    6: (ANATOMICAL_STRUCTURE, Code("15825003", "SCT", "Aorta"), None),
    7: (ANATOMICAL_STRUCTURE, Code("41216001", "SCT", "Prostate"), None),
    8: (ANATOMICAL_STRUCTURE, LOWER_LOBE, LEFT),
    9: (ANATOMICAL_STRUCTURE, LOWER_LOBE, RIGHT),
    10: (ANATOMICAL_STRUCTURE, UPPER_LOBE, LEFT),
    11: (ANATOMICAL_STRUCTURE, UPPER_LOBE, RIGHT),
    12: (ANATOMICAL_STRUCTURE, Code("72481006", "SCT", "Middle lobe of right lung"), None),
    LESION: (ABNORMAL_STRUCTURE, Code("108369006", "SCT", "Neoplasm"), None),
}
assert set(SEGMENT_CODES) == {lbl.idx for lbl in LABELS}, "every label has its codes"


def build_seg(label: Volume, series: CtSeries, algorithm: str, version: str) -> tuple[hd.seg.Segmentation, list[str]]:
    """The DICOM-SEG (binary, one segment per present label) of ``label`` on the CT ``series``.

    Args:
        label: the label map (values 0..13, RAS affine).
        series: the reference CT (:func:`mudo_app.dicom.series.read_ct_series`).
        algorithm: the algorithm's name (the model), ``version``: its checkpoint.
    """
    on_ct, present, notes = labels_on_ct(label, series)
    identification = hd.AlgorithmIdentificationSequence(
        name=algorithm[:64], version=version[:64], family=ARTIFICIAL_INTELLIGENCE
    )
    descriptions = []
    for number, lbl in enumerate(present, start=1):
        category, kind, side = SEGMENT_CODES[lbl.idx]
        desc = hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=lbl.name,
            segmented_property_category=category,
            segmented_property_type=kind,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=identification,
        )
        if side is not None:
            modifier = hd.sr.CodedConcept(side.value, side.scheme_designator, side.meaning)
            desc.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [modifier]
        desc.RecommendedDisplayCIELabValue = _cielab(lbl.color)
        descriptions.append(desc)
    pixels = np.stack([on_ct == lbl.idx for lbl in present], axis=-1)  # (frames, rows, columns, segments)
    sources = [pydicom.dcmread(s.path, stop_before_pixels=True) for s in series.slices]
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=902,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="MuDuo Label",
        manufacturer_model_name="MuDuo Label",
        software_versions="mudo_app",
        device_serial_number="0",
        series_description="MuDuo segmentation",
    )
    return seg, notes


def _cielab(rgb: tuple[int, int, int]) -> list[int]:
    """DICOM's scaled CIELab (0..65535) of an sRGB colour."""
    c = np.asarray(rgb, np.float64) / 255
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ c
    xyz /= [0.95047, 1.0, 1.08883]
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    lab = [116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])]
    return [
        int(round(lab[0] * 65535 / 100)),
        int(round((lab[1] + 128) * 65535 / 255)),
        int(round((lab[2] + 128) * 65535 / 255)),
    ]


def write_seg(
    path: str | os.PathLike[str], label: Volume, series: CtSeries, algorithm: str = "MuDuo student", version: str = ""
) -> Export:
    """:func:`build_seg`, written to ``path`` atomically (nothing is written on an error)."""
    seg, notes = build_seg(label, series, algorithm, version or "unknown")
    return Export(write_dataset(path, seg), {d.SegmentLabel: 1 for d in seg.SegmentSequence}, notes)
