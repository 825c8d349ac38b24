"""`muduo predict --input DIR --output DIR`: every case once, bad cases skipped and reported, exit 2."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from mudo_app.cli import main
from mudo_app.errors import InputError
from mudo_app.io.cases import CaseFiles, CaseReader, check_output_folder, find_cases
from mudo_app.io.volume import Volume, load_volume, save_volume
from mudo_app.models.checkpoint import load_student
from mudo_app.predict import predict_cases

AFFINE = np.diag([4.0, 4.0, 4.0, 1.0])
SHAPE = (36, 30, 34)


def _volumes(seed):
    rng = np.random.default_rng(seed)
    ct = Volume(rng.normal(0, 300, SHAPE).astype(np.float32), AFFINE)
    pet = Volume(rng.gamma(1, 1, SHAPE).astype(np.float32), AFFINE)
    return ct, pet


def _nnunet_folder(folder, ids=("a", "b", "c")):
    folder.mkdir(parents=True, exist_ok=True)
    for n, cid in enumerate(ids):
        ct, pet = _volumes(n)
        save_volume(ct, folder / f"{cid}_0000.nii.gz")
        save_volume(pet, folder / f"{cid}_0001.nii.gz")
    return folder


def _folder(src, out, model, *extra) -> int:
    args = ["predict", "--input", str(src), "--output", str(out), "--model", str(model)]
    return main([*args, "--roi", "32", "32", "32", "--no-progress", *extra])


def _one(ct, pet, out, model) -> int:
    args = ["predict", "--ct", str(ct), "--pet", str(pet), "--out", str(out), "--model", str(model)]
    return main([*args, "--roi", "32", "32", "32", "--no-progress"])


def test_folder_mode_equals_one_case_at_a_time(tmp_path, student_path):
    src = _nnunet_folder(tmp_path / "imagesTs")
    assert _folder(src, tmp_path / "out", student_path) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.nii.gz", "b.nii.gz", "c.nii.gz"]
    for cid in "abc":
        single = tmp_path / f"single_{cid}.nii.gz"
        assert _one(src / f"{cid}_0000.nii.gz", src / f"{cid}_0001.nii.gz", single, student_path) == 0
        got = load_volume(tmp_path / "out" / f"{cid}.nii.gz")
        assert got.shape == SHAPE and np.allclose(got.affine, AFFINE)
        assert (tmp_path / "out" / f"{cid}.nii.gz").read_bytes() == single.read_bytes()


def test_a_datastore_folder_is_read_too(tmp_path, student_path):
    store = tmp_path / "store"
    (store / "pet").mkdir(parents=True)
    for n, cid in enumerate(("case_1", "case_2")):
        ct, pet = _volumes(n)
        save_volume(ct, store / f"{cid}.nii.gz")
        save_volume(pet, store / "pet" / f"{cid}.nii.gz")
    assert [c.case_id for c in find_cases(store)] == ["case_1", "case_2"]
    assert _folder(store, tmp_path / "out", student_path, "--suffix", ".nii") == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["case_1.nii", "case_2.nii"]


def test_bad_cases_are_reported_and_skipped_the_others_written(tmp_path, student_path, capsys):
    src = _nnunet_folder(tmp_path / "in", ids=("good_1", "broken", "good_2", "lonely"))
    (src / "broken_0000.nii.gz").write_bytes(b"not a gzip file at all")
    (src / "lonely_0001.nii.gz").unlink()
    assert _folder(src, tmp_path / "out", student_path) == 2
    err = capsys.readouterr().err
    assert "skipped broken: case broken CT: cannot read" in err
    assert "skipped lonely: case lonely: missing lonely_0001 (PET)" in err
    assert "2 of 4 cases skipped" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good_1.nii.gz", "good_2.nii.gz"]


def test_a_failed_write_in_the_background_is_raised_after_the_earlier_labels(tmp_path, student_path):
    """Labels are written in a background thread while the next case is predicted: a write that fails
    (here: its folder is a file) still stops the run, and the labels before it are whole files."""
    src = _nnunet_folder(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    (out / "blocker").write_text("a file where b's folder would be")
    targets = {"a": out / "a.nii.gz", "b": out / "blocker" / "b.nii.gz", "c": out / "c.nii.gz"}
    model, prep, _ = load_student(student_path, torch.device("cpu"))
    with pytest.raises(OSError):
        predict_cases(model, prep, CaseReader(find_cases(src)), lambda f: targets[f.case_id], (32, 32, 32))
    assert sorted(p.name for p in out.iterdir()) == ["a.nii.gz", "blocker"]  # no partial or temporary file
    assert load_volume(out / "a.nii.gz").shape == SHAPE


@pytest.mark.parametrize(
    "layout, match",
    [
        ("empty", "no cases in"),
        ("inside", "inside the input folder"),
        ("same", "inside the input folder"),
        ("missing", "input folder not found"),
    ],
)
def test_bad_folders_exit_2_and_write_nothing(tmp_path, student_path, capsys, layout, match):
    src = tmp_path / "in"
    src.mkdir()
    if layout != "empty":
        _nnunet_folder(src, ids=("a",))
    out = {"empty": tmp_path / "out", "inside": src / "labels", "same": src, "missing": tmp_path / "out"}[layout]
    if layout == "missing":
        src = tmp_path / "nowhere"
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert _folder(src, out, student_path) == 2
    assert match in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_one_case_and_a_folder_cannot_be_mixed(tmp_path, student_path, capsys):
    src = _nnunet_folder(tmp_path / "in", ids=("a",))
    args = ["--ct", str(src / "a_0000.nii.gz"), "--input", str(src), "--output", str(tmp_path / "o")]
    assert main(["predict", *args, "--model", str(student_path)]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["predict", "--input", str(src), "--model", str(student_path)]) == 2
    assert "both --input and --output" in capsys.readouterr().err


def test_torchrun_processes_deal_the_cases_out_once_each(tmp_path, student_path, monkeypatch):
    """Under torchrun (RANK / WORLD_SIZE set) each process takes every world-th case: together they
    write each case exactly once, and the same bytes as one process."""
    src = _nnunet_folder(tmp_path / "in", ids=("a", "b", "c", "d", "e"))
    assert _folder(src, tmp_path / "alone", student_path) == 0
    written = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        out = tmp_path / f"rank{rank}"
        assert _folder(src, out, student_path) == 0
        written += [p.name for p in out.iterdir()]
        for p in out.iterdir():
            assert p.read_bytes() == (tmp_path / "alone" / p.name).read_bytes()
    assert sorted(written) == [f"{c}.nii.gz" for c in "abcde"]


def test_case_reader_hands_bad_cases_back_as_errors_in_order(tmp_path):
    src = _nnunet_folder(tmp_path / "in", ids=("a", "b"))
    cases = [*find_cases(src), CaseFiles("gone", tmp_path / "gone_0000.nii.gz", tmp_path / "gone_0001.nii.gz")]
    got = list(CaseReader(cases))
    assert [files.case_id for files, _ in got] == ["a", "b", "gone"]
    ct, pet = got[0][1]
    assert np.array_equal(ct.array, _volumes(0)[0].array) and np.array_equal(pet.array, _volumes(0)[1].array)
    assert isinstance(got[2][1], InputError) and "file not found" in str(got[2][1])
    with pytest.raises(ValueError, match="ahead"):
        CaseReader(cases, ahead=0)


def test_output_folder_checks(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "file").write_text("x")
    assert check_output_folder(tmp_path / "in", tmp_path / "out") == (tmp_path / "out").resolve()
    with pytest.raises(InputError, match="not a folder"):
        check_output_folder(tmp_path / "in", tmp_path / "file")
    with pytest.raises(InputError, match="inside the input"):
        check_output_folder(tmp_path / "in", tmp_path / "in" / "x" / "y")


def test_the_console_script_blocks_only_what_prediction_never_imports(tmp_path, student_path):
    """`muduo predict` (a dedicated process) runs with Ignite, matplotlib and scipy.signal blocked;
    the same command called in a process that goes on (main(), as here) blocks nothing."""
    src = _nnunet_folder(tmp_path / "in", ids=("a",))
    code = (
        "import sys; from mudo_app.cli import main; "
        f"rc = main(['predict', '--input', {str(src)!r}, '--output', {str(tmp_path / 'out')!r}, "
        f"'--model', {str(student_path)!r}, '--roi', '32', '32', '32', '--no-progress'], dedicated_process=True); "
        "print(rc, sorted(k for k in ('ignite', 'matplotlib', 'scipy.signal') if sys.modules.get(k, 0) is None))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split("\n")[-2] == "0 ['ignite', 'matplotlib', 'scipy.signal']"
    assert (tmp_path / "out" / "a.nii.gz").is_file()
    assert sys.modules.get("ignite", 0) is not None  # this test process blocked nothing


def test_the_console_script_ends_at_once_with_its_messages_and_exit_code(tmp_path, student_path):
    """`muduo predict` leaves without tearing down torch (exit_without_teardown): its stdout and
    stderr still arrive whole, the exit code is kept and the written labels are complete."""
    src = _nnunet_folder(tmp_path / "in", ids=("a", "b"))
    (src / "b_0001.nii.gz").write_bytes(b"\x1f\x8b broken")
    cmd = [sys.executable, "-m", "mudo_app.cli", "predict", "--input", str(src), "--output", str(tmp_path / "out")]
    cmd += ["--model", str(student_path), "--roi", "32", "32", "32"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 2
    assert "wrote 1 of 2 label files" in done.stdout
    assert "skipped b: case b PET: cannot read" in done.stderr and "1 of 2 cases skipped" in done.stderr
    assert load_volume(tmp_path / "out" / "a.nii.gz").shape == SHAPE


def test_torchrun_folder_prediction_writes_each_case_once(tmp_path, student_path):
    """Two real torchrun processes (no process group needed: RANK and WORLD_SIZE deal the cases)."""
    import socket

    src = _nnunet_folder(tmp_path / "in", ids=("a", "b", "c"))
    assert _folder(src, tmp_path / "alone", student_path) == 0
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port)]
    cmd += ["-m", "mudo_app.cli", "predict", "--input", str(src), "--output", str(tmp_path / "two")]
    cmd += ["--model", str(student_path), "--roi", "32", "32", "32", "--no-progress", "--threads", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "(process 0 of 2)" in done.stdout and "(process 1 of 2)" in done.stdout
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["a.nii.gz", "b.nii.gz", "c.nii.gz"]
    for p in (tmp_path / "two").iterdir():
        assert p.read_bytes() == (tmp_path / "alone" / p.name).read_bytes()
