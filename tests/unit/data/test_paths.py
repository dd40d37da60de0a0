"""Output paths checked before any work (preftune.data.paths): collisions with inputs and other outputs,
through symlinks and hard links, existing outputs, files where folders are expected, unwritable folders."""

import os
import subprocess
import tempfile

import pytest

from preftune.data.paths import Output, check_outputs, check_writable, rows_output


@pytest.fixture
def src(tmp_path):
    p = tmp_path / "in.jsonl"
    p.write_text("{}\n")
    return p


def test_an_output_equal_to_an_input_is_refused_even_with_force(src, tmp_path):
    with pytest.raises(ValueError, match=r"-o is the same file as the input IN .*--force does not allow this"):
        check_outputs([("-o", src)], [("IN", src)], force=True)
    (tmp_path / "link.jsonl").symlink_to(src)
    with pytest.raises(ValueError, match="same file as the input IN"):
        check_outputs([("-o", tmp_path / "link.jsonl")], [("IN", src)], force=True)
    os.link(src, tmp_path / "hard.jsonl")  # another name of the same file: resolve() cannot see it
    with pytest.raises(ValueError, match="same file as the input IN"):
        check_outputs([("-o", tmp_path / "hard.jsonl")], [("IN", src)], force=True)
    with pytest.raises(ValueError, match="same file as the input IN"):  # a path through ..
        check_outputs([("-o", tmp_path / "sub" / ".." / "in.jsonl")], [("IN", src)], force=True)


def test_two_outputs_on_one_path_and_the_temporary_sibling(src, tmp_path):
    out = tmp_path / "out.jsonl"
    with pytest.raises(ValueError, match=r"-o and --report are the same path"):
        check_outputs([("-o", out), ("--report", out)], [("IN", src)])
    tmp_in = tmp_path / "out.jsonl.tmp"
    tmp_in.write_text("{}\n")
    with pytest.raises(ValueError, match=r"goes through .*out.jsonl.tmp, which is the input IN"):
        check_outputs([("-o", out)], [("IN", tmp_in)])


def test_an_input_inside_an_output_folder_is_refused(tmp_path):
    run = tmp_path / "ds"
    run.mkdir()
    (run / "data.jsonl").write_text("{}\n")
    with pytest.raises(ValueError, match="is a folder that holds the input --data"):
        check_outputs([Output("-o", run, folder=True)], [("--data", run / "data.jsonl")], force=True)
    # an output file inside an input folder is fine (RUN/eval/x.json next to RUN's model)
    check_outputs([("--json", run / "x.json")], [("RUN", run)])


def test_existing_outputs_need_force_and_clean_ones_pass(src, tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")
    with pytest.raises(ValueError, match=rf"^{out} already exists; pass --force"):
        check_outputs([("-o", out)], [("IN", src)])
    check_outputs([("-o", out)], [("IN", src)], force=True)
    check_outputs([("-o", tmp_path / "new" / "deeper" / "o.jsonl")], [("IN", src)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl"]  # the checks wrote nothing


def test_files_and_folders_where_the_other_is_expected(src, tmp_path):
    with pytest.raises(ValueError, match=rf"{src}/o.jsonl: -o cannot be created: {src} is a file, not a folder"):
        check_writable(Output("-o", src / "o.jsonl"))
    with pytest.raises(ValueError, match="-o exists and is a file, not a folder"):
        check_writable(Output("-o", src, folder=True))
    (tmp_path / "d.jsonl").mkdir()
    with pytest.raises(ValueError, match="-o is a folder; give a file name"):
        check_writable(Output("-o", tmp_path / "d.jsonl"))


def test_rows_output_tells_folders_from_files_and_checks_the_name(tmp_path):
    assert rows_output("-o", tmp_path / "ds").folder and not rows_output("-o", tmp_path / "x.parquet").folder
    with pytest.raises(ValueError, match="cannot tell the format from the name"):
        rows_output("-o", tmp_path / "x.txt")


def _probe(folder) -> bool:
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def test_a_folder_that_refuses_new_files_is_found_before_any_work(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    immutable = False
    if _probe(ro):  # root: modes do not stop it; the immutable attribute does
        immutable = subprocess.run(["chattr", "+i", str(ro)], capture_output=True, check=False).returncode == 0
    try:
        if _probe(ro):
            pytest.skip("cannot make a read-only folder here (root without chattr +i)")
        with pytest.raises(ValueError, match=rf"{ro}/sub/o.jsonl: -o cannot be written: the folder {ro} refuses"):
            check_outputs([("-o", ro / "sub" / "o.jsonl")])
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(ro)], check=False)
        ro.chmod(0o755)
