import subprocess
import sys

import pytest

from mudo_app.cli import main
from mudo_app.io.datastore import PetCtDatastore


def test_sample_data_datastore(tmp_path, capsys):
    out = tmp_path / "demo"
    assert (
        main(
            [
                "sample-data",
                "--out",
                str(out),
                "--cases",
                "3",
                "--labelled",
                "1",
                "--seed",
                "4",
                "--spacing",
                "8",
                "8",
                "8",
                "--quiet",
            ]
        )
        == 0
    )
    assert "wrote 3 synthetic case(s)" in capsys.readouterr().out
    ds = PetCtDatastore(out)
    assert ds.case_ids() == ["syn000", "syn001", "syn002"] and ds.labelled_ids() == ["syn000"]
    assert ds.load_case("syn001").ct.shape == (60, 40, 100)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--cases", "0"], "--cases must be at least 1"),
        (["--cases", "2", "--labelled", "3"], "--labelled must be in 0..2"),
        (["--spacing", "0", "1", "1"], "--spacing"),
    ],
)
def test_sample_data_bad_arguments(tmp_path, capsys, args, message):
    assert main(["sample-data", "--out", str(tmp_path / "o"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_sample_data_refuses_non_empty_folder(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("precious")
    assert main(["sample-data", "--out", str(tmp_path), "--cases", "1"]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text() == "precious"


def test_console_script_usage_error_exits_2():
    proc = subprocess.run([sys.executable, "-m", "mudo_app.cli", "sample-data"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--out" in proc.stderr
