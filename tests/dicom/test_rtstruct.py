"""RTSTRUCT export: contours on pixel edges, each slice's own geometry, an independent reader's round trip."""

import shutil
import subprocess

import numpy as np
import pydicom
import pytest

from mudo_app.dicom.contours import keyhole, signed_area, trace_contours
from mudo_app.dicom.rtstruct import _ds, build_rtstruct, label_on_series, write_rtstruct
from mudo_app.dicom.series import read_ct_series
from mudo_app.errors import InputError
from mudo_app.io.volume import Volume
from tests.dicom.synthetic import label_on_first_slice_grid, rasterise, write_ct_series

DCIODVFY = shutil.which("dciodvfy")


def _dice(a, b):
    return 2 * float((a & b).sum()) / max(1.0, float(a.sum() + b.sum()))


def test_contours_trace_pixel_edges_by_hand():
    m = np.zeros((8, 8), bool)
    m[1:6, 1:6] = True  # 5 x 5 pixels ...
    m[3, 3] = False  # ... with a one-pixel hole
    m[6, 6] = True  # and a pixel touching it only at a corner: a region of its own
    loops = trace_contours(m)
    assert sorted(signed_area(lp) for lp in loops) == [-1.0, 1.0, 25.0]
    outer = next(lp for lp in loops if signed_area(lp) == 25.0)
    assert sorted(map(tuple, outer.tolist())) == [(1, 1), (1, 6), (6, 1), (6, 6)]  # the corners only
    joined = keyhole(loops)
    assert sorted(signed_area(lp) for lp in joined) == [1.0, 24.0]  # the hole cut into its region


def test_decimal_strings_fit_16_characters():
    assert _ds(-249.51171875) == "-249.5117" and _ds(0.0) == "0" and _ds(-0.00001) == "0"
    assert all(len(_ds(v)) <= 16 for v in (123456789.123456, -98765432.5, 1e-9, -1234567.891))


def _blobs(shape, spacing):
    """A label on a 1 mm-ish RAS grid: a shell (a hole on its middle slices), a box and a small lesion."""
    idx = np.indices(shape).transpose(1, 2, 3, 0) * spacing
    centre = np.array(shape) * spacing / 2
    r = np.linalg.norm(idx - centre, axis=-1)
    label = np.zeros(shape, np.uint8)
    label[(r < 18) & (r > 8)] = 1  # liver: a hollow ball, holes on the slices through its middle
    label[(np.abs(idx - centre - [0, 25, 0]) < [12, 6, 8]).all(-1)] = 4  # heart: a box
    label[np.linalg.norm(idx - centre - [22, -20, 0], axis=-1) < 7] = 13  # a lesion of about 1.4 ml
    return label


@pytest.mark.parametrize(
    "orientation",
    [(1, 0, 0, 0, 1, 0), (-1, 0, 0, 0, -1, 0), (np.cos(0.5), np.sin(0.5), 0, -np.sin(0.5), np.cos(0.5), 0)],
    ids=["axial", "negative cosines", "rotated in-plane"],
)
@pytest.mark.parametrize("holes", ["nested", "keyhole"])
def test_round_trip_through_an_independent_reader(tmp_path, orientation, holes):
    """Anisotropic pixels, uneven slice steps; the label on its own 1 mm grid (resampled onto the CT)."""
    iop = np.asarray(orientation, float)
    normal = np.cross(iop[:3], iop[3:])
    steps = [0, 2, 4.5, 6, 9, 10.5, 12, 15, 17, 19.5, 21, 24, 26, 28.5, 30, 33, 35]
    origin = np.array([-30.0, -40.0, -17.0])
    positions = [list(origin + (s - 17) * normal - 30 * iop[:3] - 30 * iop[3:]) for s in steps]
    write_ct_series(
        tmp_path / "ct", rows=70, columns=90, positions=positions, orientation=iop, pixel_spacing=(1.3, 0.8)
    )
    series = read_ct_series(tmp_path / "ct")
    dr, dc = series.pixel_spacing
    centre_lps = np.mean([s.position for s in series.slices], axis=0)
    centre_lps += (
        0.5 * (series.columns - 1) * dc * series.row_direction + 0.5 * (series.rows - 1) * dr * series.column_direction
    )
    affine = np.eye(4)
    affine[:3, 3] = centre_lps * [-1, -1, 1] - np.array([80, 110, 50]) / 2  # the label's centre on the CT's
    label = Volume(_blobs((80, 110, 50), 1.0), affine)
    export = write_rtstruct(tmp_path / "rt.dcm", label, series, holes=holes)
    assert any("resampled" in n for n in export.notes)
    ds = pydicom.dcmread(tmp_path / "rt.dcm")
    on_ct, _ = label_on_series(label, series)
    filled = rasterise(ds, series)
    voxel_ml = 1.3 * 0.8 * 2.0 / 1000
    assert set(filled) == {"liver", "heart", "lesion"}
    for name, idx in (("liver", 1), ("heart", 4), ("lesion", 13)):
        truth = on_ct == idx
        assert truth.sum() * voxel_ml >= 1.0
        assert _dice(filled[name], truth) >= 0.97, name
        np.testing.assert_array_equal(filled[name], truth)  # edges traced exactly: equal, not just close
    if holes == "nested":
        assert any(len(c.ContourData) for c in ds.ROIContourSequence[0].ContourSequence)
        per_slice = {}
        for c in ds.ROIContourSequence[0].ContourSequence:
            uid = c.ContourImageSequence[0].ReferencedSOPInstanceUID
            per_slice[uid] = per_slice.get(uid, 0) + 1
        assert max(per_slice.values()) >= 2  # the shell's middle slices: an outer contour and a hole


def test_a_20_mm_square_comes_out_20_mm(tmp_path):
    write_ct_series(tmp_path / "ct", rows=40, columns=40, positions=[[0, 0, z] for z in (0, 2, 4)])
    series = read_ct_series(tmp_path / "ct")
    grid = np.zeros((40, 40, 3), np.uint8)
    grid[10:30, 10:30, 1] = 1  # 20 x 20 pixels of 1 mm
    ds, counts, notes = build_rtstruct(Volume(grid, label_on_first_slice_grid(series)), series)
    assert counts == {"liver": 1} and notes == []
    pts = np.asarray([float(v) for v in ds.ROIContourSequence[0].ContourSequence[0].ContourData]).reshape(-1, 3)
    x, y = pts[:, 0], pts[:, 1]
    assert abs(0.5 * np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y)) == pytest.approx(400.0)
    assert (x.min(), x.max()) == (9.5, 29.5)  # pixel edges, not centres


def test_real_series_references_and_attributes(realdata, tmp_path):
    series = read_ct_series(realdata / "totalseg_example_ct_dicom_uids")
    assert len(series.slices) == 20
    steps = {
        round(float((b.position - a.position) @ series.normal), 3) for a, b in zip(series.slices, series.slices[1:])
    }
    assert steps == {2.0}  # 2 mm steps (the files say SliceThickness 3 mm)
    grid = np.zeros((series.columns, series.rows, 20), np.uint8)
    grid[200:260, 150:230, 3:15] = 1
    grid[300:330, 300:320, 2:12] = 13
    label = Volume(grid, label_on_first_slice_grid(series))
    export = write_rtstruct(tmp_path / "rt.dcm", label, series)
    assert export.notes == [] and export.rois == {"liver": 12, "lesion": 10}
    ds = pydicom.dcmread(tmp_path / "rt.dcm")
    assert ds.Modality == "RTSTRUCT" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.3"
    assert ds.StudyInstanceUID == series.study_uid and ds.FrameOfReferenceUID == series.frame_uid
    ref = ds.ReferencedFrameOfReferenceSequence[0]
    assert ref.FrameOfReferenceUID == series.frame_uid
    study = ref.RTReferencedStudySequence[0]
    assert study.ReferencedSOPInstanceUID == series.study_uid
    assert study.RTReferencedSeriesSequence[0].SeriesInstanceUID == series.series_uid
    slice_uids = {s.sop_instance_uid for s in series.slices}
    assert {c.ReferencedSOPInstanceUID for c in study.RTReferencedSeriesSequence[0].ContourImageSequence} == slice_uids
    rois = {r.ROINumber: r for r in ds.StructureSetROISequence}
    assert [r.ROIName for r in rois.values()] == ["liver", "lesion"]
    assert {r.ROIGenerationAlgorithm for r in rois.values()} == {"AUTOMATIC"}
    kinds = {rois[o.ReferencedROINumber].ROIName: o.RTROIInterpretedType for o in ds.RTROIObservationsSequence}
    assert kinds == {"liver": "ORGAN", "lesion": "GTV"}
    assert [list(c.ROIDisplayColor) for c in ds.ROIContourSequence] == [[221, 130, 101], [255, 230, 0]]
    for roi in ds.ROIContourSequence:
        for c in roi.ContourSequence:
            assert c.ContourGeometricType == "CLOSED_PLANAR" and c.NumberOfContourPoints >= 3
            assert c.ContourImageSequence[0].ReferencedSOPInstanceUID in slice_uids
    filled = rasterise(ds, series)
    assert _dice(filled["liver"], (grid == 1).transpose(2, 1, 0)) == 1.0
    if DCIODVFY:
        out = subprocess.run([DCIODVFY, str(tmp_path / "rt.dcm")], capture_output=True, text=True)
        errors = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]
        assert errors == [], errors


def test_contour_data_values_are_at_most_16_characters(tmp_path):
    write_ct_series(tmp_path / "ct", rows=20, columns=20, positions=[[-1234.56789, 987.654321, z] for z in (0.1, 2.3)])
    series = read_ct_series(tmp_path / "ct")
    grid = np.zeros((20, 20, 2), np.uint8)
    grid[3:9, 4:7, :] = 2
    write_rtstruct(tmp_path / "rt.dcm", Volume(grid, label_on_first_slice_grid(series)), series)
    raw = pydicom.dcmread(tmp_path / "rt.dcm")
    for roi in raw.ROIContourSequence:
        for c in roi.ContourSequence:
            values = c.ContourData
            assert len(values) == 3 * c.NumberOfContourPoints
            assert all(len(v.original_string or str(v)) <= 16 for v in values), values


@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (Debian dicom3tools) is not installed")
def test_dciodvfy_finds_no_error_on_a_synthetic_export(tmp_path):
    write_ct_series(tmp_path / "ct", rows=30, columns=30, positions=[[0, 0, z] for z in (0, 2, 5)])
    series = read_ct_series(tmp_path / "ct")
    grid = np.zeros((30, 30, 3), np.uint8)
    grid[5:20, 5:25, :] = 1
    grid[22:26, 22:26, 1] = 13
    write_rtstruct(tmp_path / "rt.dcm", Volume(grid, label_on_first_slice_grid(series)), series)
    out = subprocess.run([DCIODVFY, str(tmp_path / "rt.dcm")], capture_output=True, text=True)
    lines = (out.stdout + out.stderr).splitlines()
    assert [line for line in lines if line.startswith("Error")] == [], lines


def test_bad_references_and_labels_are_refused_and_nothing_is_written(realdata, tmp_path):
    with pytest.raises(InputError, match="empty SeriesInstanceUID"):
        read_ct_series(realdata / "totalseg_example_ct_dicom")
    write_ct_series(tmp_path / "ct", rows=10, columns=10, positions=[[0, 0, z] for z in (0, 2)])
    series = read_ct_series(tmp_path / "ct")
    aff = label_on_first_slice_grid(series)
    out = tmp_path / "rt.dcm"
    with pytest.raises(InputError, match="not in the label map"):
        write_rtstruct(out, Volume(np.full((10, 10, 2), 20, np.uint8), aff), series)
    with pytest.raises(InputError, match="nothing to export"):
        write_rtstruct(out, Volume(np.zeros((10, 10, 2), np.uint8), aff), series)
    far = aff.copy()
    far[:3, 3] += 500.0
    with pytest.raises(InputError, match="inside the reference CT"):
        write_rtstruct(out, Volume(np.ones((10, 10, 2), np.uint8), far), series)
    with pytest.raises(InputError, match="holes must be one of"):
        write_rtstruct(out, Volume(np.ones((10, 10, 2), np.uint8), aff), series, holes="fill")
    assert not out.exists()
    (tmp_path / "ct" / "notes.txt").write_text("not DICOM")  # skipped
    assert len(read_ct_series(tmp_path / "ct").slices) == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no DICOM image"):
        read_ct_series(tmp_path / "empty")


def test_export_command_writes_both_formats_and_refuses_bad_input(realdata, tmp_path, capsys):
    from mudo_app.cli import main
    from mudo_app.io.volume import save_volume

    ct = realdata / "totalseg_example_ct_dicom_uids"
    series = read_ct_series(ct)
    grid = np.zeros((series.columns, series.rows, 20), np.uint8)
    grid[200:260, 150:230, 3:15] = 1
    save_volume(Volume(grid, label_on_first_slice_grid(series)), tmp_path / "label.nii.gz")
    base = ["export", "--label", str(tmp_path / "label.nii.gz"), "--reference-ct", str(ct)]
    assert main([*base, "--format", "rtstruct", "--out", str(tmp_path / "rt.dcm")]) == 0
    assert "liver (12 contours)" in capsys.readouterr().out
    assert pydicom.dcmread(tmp_path / "rt.dcm").Modality == "RTSTRUCT"
    assert main([*base, "--format", "seg", "--out", str(tmp_path / "seg.dcm"), "--algorithm-version", "v1"]) == 0
    assert pydicom.dcmread(tmp_path / "seg.dcm").Modality == "SEG"
    capsys.readouterr()
    bad = [
        "export",
        "--label",
        str(tmp_path / "label.nii.gz"),
        "--format",
        "rtstruct",
        "--out",
        str(tmp_path / "x.dcm"),
    ]
    assert main([*bad, "--reference-ct", str(realdata / "totalseg_example_ct_dicom")]) == 2
    assert "empty SeriesInstanceUID" in capsys.readouterr().err
    assert main([*bad, "--reference-ct", str(tmp_path / "nowhere")]) == 2
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "x.dcm").exists()
