import pytest

from mudo_app.io.atomic import TEMP_PREFIX, atomic_write


def test_replaces_the_target_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "sub" / "a.json"
    with atomic_write(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(TEMP_PREFIX) and not target.exists()
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["a.json"]


def test_an_error_leaves_the_old_file_and_removes_the_temporary_one(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_write(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_concurrent_writers_of_one_target_get_their_own_temporary_files(tmp_path):
    target = tmp_path / "state.pt"
    with atomic_write(target) as first, atomic_write(target) as second:
        assert first != second
        first.write_text("first")
        second.write_text("second")
    assert target.read_text() == "first"  # the outer block ends last: the last rename wins


def test_the_temporary_file_keeps_the_double_suffix_a_writer_reads(tmp_path):
    with atomic_write(tmp_path / "ct.nii.gz") as tmp:
        assert tmp.name.endswith(".nii.gz")
        tmp.write_bytes(b"")
    with atomic_write(tmp_path / "label", suffix=".nii") as tmp:
        assert tmp.suffix == ".nii"
        tmp.write_bytes(b"")
