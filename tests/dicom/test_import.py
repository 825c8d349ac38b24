"""DICOM PET/CT import: SUVbw by the QIBA pseudo-code (hand-computed), pairing, refusals per study."""

import json
import shutil

import numpy as np
import pydicom
import pytest

from mudo_app.cli import main
from mudo_app.dicom.importer import import_dicom
from mudo_app.dicom.suv import suv_factor
from mudo_app.errors import InputError
from mudo_app.io.datastore import PetCtDatastore
from tests.dicom.synthetic import write_study

F18 = 6586.2


def _expected(study, factor):
    """(columns, rows, slices) SUV: each slice's own slope, times the factor."""
    suv = study["stored"].astype(np.float64) * study["slopes"][:, None, None] * factor
    return suv.transpose(2, 1, 0)


def _headers(folder):
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted((folder / "pet").iterdir())]


@pytest.mark.parametrize(
    ("pet", "decay_s"),
    [
        ({}, 3600.0),  # injection 10:00, series and acquisition 11:00
        ({"radiopharmaceutical": {"RadiopharmaceuticalStartDateTime": "20260101093000"}}, 5400.0),
        (  # injected 23:30 the day before, scanned 00:30: only times given
            {
                "header": {"SeriesDate": "20260102", "SeriesTime": "003000", "AcquisitionDate": "20260102",
                           "AcquisitionTime": "003000"},
                "radiopharmaceutical": {"RadiopharmaceuticalStartTime": "233000"},
            },
            3600.0,
        ),
        ({"header": {"SeriesTime": "120000"}}, 3600.0),  # series time reset after the acquisition (11:00)
    ],
    ids=["series time", "start date-time", "midnight", "series after acquisition"],
)  # fmt: skip
def test_bqml_suv_equals_the_hand_computed_value(tmp_path, pet, decay_s):
    study = write_study(tmp_path / "src", **pet)
    factor = 75.0 * 1000 / (370e6 * 2 ** (-decay_s / F18))  # weight [g] / decayed dose [Bq]
    found = suv_factor(_headers(tmp_path / "src"))
    assert found.decay_s == pytest.approx(decay_s) and found.factor == pytest.approx(factor, rel=1e-9)
    report = import_dicom(tmp_path / "src", tmp_path / "store", progress=False)
    assert report.skipped == {} and len(report.imported) == 1
    store = PetCtDatastore(tmp_path / "store")
    case = store.load_case(report.imported[0])
    np.testing.assert_allclose(case.pet.array, _expected(study, factor), rtol=1e-4)
    meta = store.meta(report.imported[0])
    assert meta["source"] == "dicom" and meta["suv"]["factor"] == pytest.approx(factor)
    assert meta["dicom"]["study_uid"] == study["study_uid"] and len(meta["dicom"]["ct_files"]) == 11


def test_ct_is_resampled_onto_the_pet_grid_in_hu(tmp_path):
    write_study(tmp_path / "src")
    report = import_dicom(tmp_path / "src", tmp_path / "store", progress=False)
    assert any("resampled onto the PET grid" in n for n in report.notes[report.imported[0]])
    case = PetCtDatastore(tmp_path / "store").load_case(report.imported[0])
    assert case.ct.shape == case.pet.shape == (12, 10, 6)
    np.testing.assert_allclose(case.ct.affine, case.pet.affine)
    # RAS: x and y negated; PET pixel [0, 0] at LPS (-20, -16, 0) -> RAS (20, 16, 0), 4 mm steps
    np.testing.assert_allclose(case.pet.affine[:3, 3], [20.0, 16.0, 0.0])
    np.testing.assert_allclose(np.diag(case.pet.affine)[:3], [-4.0, -4.0, 4.0])
    assert case.ct.array[6, 5, 3] == 40 and case.ct.array[0, 0, 0] == -1000  # inside the box / outside


def test_a_jpeg_ls_ct_decodes_and_imports(tmp_path):
    write_study(tmp_path / "src", jpeg_ls=True)
    assert str(pydicom.dcmread(next((tmp_path / "src" / "ct").iterdir())).file_meta.TransferSyntaxUID).endswith(".4.80")
    report = import_dicom(tmp_path / "src", tmp_path / "store", progress=False)
    case = PetCtDatastore(tmp_path / "store").load_case(report.imported[0])
    assert case.ct.array[6, 5, 3] == 40 and case.ct.array[0, 0, 0] == -1000


def test_philips_cnts_and_gml(tmp_path):
    write_study(tmp_path / "a", header={"Units": "CNTS"}, philips_suv_scale="0.000123")
    assert suv_factor(_headers(tmp_path / "a")).factor == pytest.approx(0.000123)
    write_study(tmp_path / "b", header={"Units": "GML"})
    assert suv_factor(_headers(tmp_path / "b")).factor == 1.0


@pytest.mark.parametrize(
    ("pet", "message"),
    [
        ({"header": {"PatientWeight": None}}, "PatientWeight"),
        ({"header": {"DecayCorrection": "ADMIN"}}, "DecayCorrection is 'ADMIN'"),
        ({"header": {"DecayCorrection": "NONE"}}, "DecayCorrection is 'NONE'"),
        ({"header": {"Units": "PROPCPS"}}, "Units 'PROPCPS'"),
        ({"header": {"Units": "CNTS"}}, "Philips SUV scale factor"),
        ({"header": {"CorrectedImage": ["DECY"]}}, "lacks ATTN or DECY"),
        ({"radiopharmaceutical": {"RadionuclideTotalDose": None}}, "RadionuclideTotalDose"),
        ({"radiopharmaceutical": {"RadiopharmaceuticalStartTime": None}}, "injection time is unknown"),
    ],
)
def test_what_the_profile_cannot_compute_is_refused_naming_the_attribute(tmp_path, pet, message):
    write_study(tmp_path / "src", **pet)
    with pytest.raises(InputError, match=message):
        suv_factor(_headers(tmp_path / "src"))


def test_bad_studies_are_skipped_and_good_ones_imported(tmp_path, capsys):
    src = tmp_path / "src"
    write_study(src / "good", patient_id="GOOD")
    write_study(src / "noweight", patient_id="NOWEIGHT", header={"PatientWeight": None})
    write_study(src / "mixed", patient_id="MIXED", pet_frame="1.2.3.4.5")  # PET in another frame of reference
    write_study(src / "ctonly", patient_id="CTONLY")
    shutil.rmtree(src / "ctonly" / "pet")
    (src / "good" / "garbage.dcm").write_bytes(b"not a DICOM file at all")
    code = main(["import", "--from", "dicom", str(src), "--to", str(tmp_path / "store"), "--quiet"])
    out = capsys.readouterr()
    assert code == 2  # some studies were skipped
    store = PetCtDatastore(tmp_path / "store")
    assert [c.split("_")[0] for c in store.case_ids()] == ["GOOD"]
    assert "PatientWeight" in out.out and "FrameOfReferenceUID" in out.out and "no PET series" in out.out
    assert "not readable DICOM" in out.out
    assert json.loads(store.meta_path(store.case_ids()[0]).read_text())["suv"]["units"] == "BQML"
    (tmp_path / "empty").mkdir()
    assert main(["import", "--from", "dicom", str(tmp_path / "empty"), "--to", str(tmp_path / "s2")]) == 2
    assert "no DICOM image found" in capsys.readouterr().err


def test_jpeg2000_ct_decodes_to_hu(realdata):
    from mudo_app.dicom.importer import series_volume
    from mudo_app.dicom.series import read_headers, slice_geometry

    items, _ = read_headers(realdata / "totalseg_example_ct_dicom_uids")
    assert {str(ds.file_meta.TransferSyntaxUID) for _, ds in items} == {"1.2.840.10008.1.2.4.90"}  # JPEG 2000
    ct = series_volume(slice_geometry(items, "real CT"), "real CT")
    assert ct.shape == (512, 512, 20)
    assert -1100 <= ct.array.min() < -900 and 200 < ct.array.max() < 3100  # air to bone, in HU
    np.testing.assert_allclose(ct.spacing, [0.9765625, 0.9765625, 2.0])


def test_gantry_tilt_and_uneven_pet_slices_are_refused(tmp_path):
    from mudo_app.dicom.importer import series_volume
    from mudo_app.dicom.series import read_headers, slice_geometry
    from tests.dicom.synthetic import write_ct_series

    write_ct_series(tmp_path / "tilt", 8, 8, [[0, 0.5 * k, 2.0 * k] for k in range(4)])  # y shifts with z
    with pytest.raises(InputError, match="gantry tilt"):
        slice_geometry(read_headers(tmp_path / "tilt")[0], "tilted")
    write_ct_series(tmp_path / "uneven", 8, 8, [[0, 0, z] for z in (0, 2, 4, 7)])
    with pytest.raises(InputError, match="uneven slice steps"):
        series_volume(slice_geometry(read_headers(tmp_path / "uneven")[0], "uneven"), "uneven")


def test_export_of_an_imported_case_checks_a_given_reference_ct(tmp_path, capsys):
    from mudo_app.io.volume import Volume

    write_study(tmp_path / "src", patient_id="P1")
    write_study(tmp_path / "other", patient_id="P2")  # another patient (and frame of reference)
    (case,) = import_dicom(tmp_path / "src", tmp_path / "store", progress=False).imported
    store = PetCtDatastore(tmp_path / "store")
    pet = store.load_case(case).pet
    label = np.zeros(pet.shape, np.uint8)
    label[3:9, 2:8, 1:5] = 1
    store.save_label(case, Volume(label, pet.affine))
    base = ["export", "--datastore", str(tmp_path / "store"), "--case", case, "--format"]
    assert main([*base, "rtstruct", "--out", str(tmp_path / "rt.dcm")]) == 0
    assert "liver" in capsys.readouterr().out
    assert pydicom.dcmread(tmp_path / "rt.dcm").StudyInstanceUID == store.meta(case)["dicom"]["study_uid"]
    # the same CT series given explicitly is accepted; another patient's is refused, nothing written
    assert main([*base, "seg", "--out", str(tmp_path / "a.dcm"), "--reference-ct", str(tmp_path / "src" / "ct")]) == 0
    out = tmp_path / "b.dcm"
    assert main([*base, "seg", "--out", str(out), "--reference-ct", str(tmp_path / "other" / "ct")]) == 2
    assert "another patient" in capsys.readouterr().err and not out.exists()
    meta = json.loads(store.meta_path(case).read_text())
    meta["dicom"]["patient_id"] = "P2"  # the same patient, now: the frame of reference still differs
    store.meta_path(case).write_text(json.dumps(meta))
    assert main([*base, "seg", "--out", str(out), "--reference-ct", str(tmp_path / "other" / "ct")]) == 2
    assert "another frame of reference" in capsys.readouterr().err and not out.exists()
    assert main(["export", "--datastore", str(tmp_path / "store"), "--format", "seg", "--out", str(out)]) == 2
    assert "give either" in capsys.readouterr().err
