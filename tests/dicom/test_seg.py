"""DICOM-SEG export: codes per segment, highdicom's reader gives the label map back."""

import shutil
import subprocess

import highdicom as hd
import numpy as np
import pytest

from mudo_app.dicom.seg import SEGMENT_CODES, write_seg
from mudo_app.dicom.series import read_ct_series
from mudo_app.errors import InputError
from mudo_app.io.volume import Volume
from mudo_app.labels import LABELS, NAME_TO_ID
from tests.dicom.synthetic import label_on_first_slice_grid, write_ct_series

DCIODVFY = shutil.which("dciodvfy")


def _read_back(path, series) -> np.ndarray:
    seg = hd.seg.segread(path)
    uids = [s.sop_instance_uid for s in series.slices]
    numbers = [d.SegmentNumber for d in seg.SegmentSequence]
    pixels = seg.get_pixels_by_source_instance(uids, segment_numbers=numbers, combine_segments=True, relabel=False)
    to_label = {d.SegmentNumber: NAME_TO_ID[d.SegmentLabel] for d in seg.SegmentSequence}
    out = np.zeros(pixels.shape, np.uint8)
    for number, idx in to_label.items():
        out[pixels == number] = idx
    return out


def test_every_label_round_trips_with_its_own_codes(tmp_path):
    write_ct_series(tmp_path / "ct", rows=40, columns=52, positions=[[0, 0, z] for z in (0, 2, 4, 6)],
                    pixel_spacing=(1.2, 0.9))  # fmt: skip
    series = read_ct_series(tmp_path / "ct")
    grid = np.zeros((52, 40, 4), np.uint8)  # [column, row, slice]
    for n, lbl in enumerate(LABELS):
        grid[2 + 3 * n : 4 + 3 * n, 5:30, n % 4] = lbl.idx  # every label, somewhere
    export = write_seg(
        tmp_path / "seg.dcm", Volume(grid, label_on_first_slice_grid(series)), series, "unet_lite", "abc123"
    )
    assert len(export.rois) == 13
    np.testing.assert_array_equal(_read_back(tmp_path / "seg.dcm", series), grid.transpose(2, 1, 0))
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    types = {d.SegmentLabel: d.SegmentedPropertyTypeCodeSequence[0].CodeValue for d in seg.SegmentSequence}
    assert types["liver"] == "10200004" and types["spleen"] == "78961009" and types["lesion"] == "108369006"
    assert (
        len(set(types.values())) == 10
    )  # 13 labels: kidneys and two lobe pairs share a type, told apart by laterality
    for d in seg.SegmentSequence:
        category, kind, side = SEGMENT_CODES[NAME_TO_ID[d.SegmentLabel]]
        assert d.SegmentedPropertyCategoryCodeSequence[0].CodeValue == category.value
        modifier = d.SegmentedPropertyTypeCodeSequence[0].get("SegmentedPropertyTypeModifierCodeSequence")
        assert (modifier[0].CodeValue if modifier else None) == (side.value if side else None)
        algo = d.SegmentationAlgorithmIdentificationSequence[0]
        assert (algo.AlgorithmName, algo.AlgorithmVersion) == ("unet_lite", "abc123")
        assert d.SegmentAlgorithmType == "AUTOMATIC"
    if DCIODVFY:
        out = subprocess.run([DCIODVFY, str(tmp_path / "seg.dcm")], capture_output=True, text=True)
        errors = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]
        assert errors == [], errors


def test_real_series_seg_round_trip(realdata, tmp_path):
    series = read_ct_series(realdata / "totalseg_example_ct_dicom_uids")
    grid = np.zeros((series.columns, series.rows, 20), np.uint8)
    grid[200:260, 150:230, 3:15] = 5
    grid[300:330, 300:320, 2:12] = 13
    write_seg(tmp_path / "seg.dcm", Volume(grid, label_on_first_slice_grid(series)), series)
    np.testing.assert_array_equal(_read_back(tmp_path / "seg.dcm", series), grid.transpose(2, 1, 0))


def test_empty_label_is_refused_and_nothing_is_written(tmp_path):
    write_ct_series(tmp_path / "ct", rows=8, columns=8, positions=[[0, 0, 0], [0, 0, 2]])
    series = read_ct_series(tmp_path / "ct")
    with pytest.raises(InputError, match="nothing to export"):
        write_seg(
            tmp_path / "seg.dcm", Volume(np.zeros((8, 8, 2), np.uint8), label_on_first_slice_grid(series)), series
        )
    assert not (tmp_path / "seg.dcm").exists()
