"""The output writer (cfnsr.fileio): every refusal names the user's path and the reason; nothing is half-written."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cfnsr.errors import CfnsrError
from cfnsr.fileio import Outputs, atomic_path, check_file, temp_dir, write_json, write_text


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "256k", ro: bool = False):
    """A small tmpfs at ``path`` (root only; the test is skipped elsewhere)."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if ro else "")
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a tmpfs")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path) -> None:
    """Fill the file system of ``folder`` to the last byte."""
    for name, block in (("filler", 65536), ("filler2", 512)):
        with contextlib.suppress(OSError), open(folder / name, "wb", buffering=0) as f:
            while True:
                f.write(b"\0" * block)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith((".cfnsr-", "cfnsr-")))


def test_two_outputs_on_one_path_are_refused(tmp_path):
    outs = Outputs()
    outs.file(tmp_path / "x", "--jsonl", text=True)
    outs.file(tmp_path / "sub" / ".." / "x", "--csv", text=True)
    with pytest.raises(CfnsrError, match="--jsonl and --csv both write"):
        outs.check()
    assert not (tmp_path / "x").exists()


def test_an_output_that_is_an_input_is_refused_through_a_link(tmp_path):
    src = tmp_path / "model.onnx"
    src.write_text("weights")
    (tmp_path / "alias.json").symlink_to(src)
    o = Outputs([src])
    o.file(tmp_path / "alias.json", "--json")
    with pytest.raises(CfnsrError, match="would overwrite the input"):
        o.check()
    assert src.read_text() == "weights"


@pytest.mark.parametrize("target", ["/dev/null", "fifo", "/dev/stdout", "folder"])
def test_an_existing_path_that_is_not_a_regular_file_is_never_replaced(tmp_path, target):
    if target == "fifo":
        target = tmp_path / "fifo"
        os.mkfifo(target)
    elif target == "folder":
        target = tmp_path / "folder"
        target.mkdir()
    before = os.lstat(target)
    with pytest.raises(CfnsrError, match=r"not a regular file|is a link to"):
        check_file(target, True, "--json")
    with pytest.raises(CfnsrError, match=r"not a regular file|is a link to"):
        write_json(target, {"a": 1})
    after = os.lstat(target)
    assert (before.st_mode, before.st_ino) == (after.st_mode, after.st_ino)


def test_a_symlink_to_a_regular_file_is_written_through_and_stays_a_link(tmp_path):
    real = tmp_path / "real.json"
    real.write_text("{}")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    write_json(link, {"a": 1})
    assert link.is_symlink() and '"a": 1' in real.read_text()


def test_stdout_is_dash_for_text_outputs_only(capfd):
    o = Outputs()
    assert o.file("-", "--jsonl", text=True).items[0].path is None
    with pytest.raises(CfnsrError, match="only text outputs"):
        o.file("-", "--png")
    o2 = Outputs()
    o2.file("-", "--jsonl", text=True)
    o2.file("-", "--csv", text=True)
    with pytest.raises(CfnsrError, match="both write to stdout"):
        o2.check()
    write_text("-", "hello\n")
    assert capfd.readouterr().out == "hello\n"


def test_a_path_under_a_file_names_the_file(tmp_path):
    (tmp_path / "best.pt").write_text("ckpt")
    with pytest.raises(CfnsrError, match=r"cannot write -o .*best.pt/m.onnx: .*best.pt is a file, not a folder"):
        _check_one(tmp_path / "best.pt" / "m.onnx")


def _check_one(path):
    o = Outputs()
    o.file(path, "-o")
    o.check()


def test_a_name_too_long_is_refused_before_work_with_its_length(tmp_path):
    name = "n" * 251 + ".FAILED.onnx"
    with pytest.raises(CfnsrError, match=r"is 263 bytes long and the file system allows 255"):
        _check_one(tmp_path / name)
    assert leftovers(tmp_path) == []


def test_a_missing_parent_is_made_and_a_read_only_folder_is_named(tmp_path):
    _check_one(tmp_path / "a" / "b" / "out.json")
    assert (tmp_path / "a" / "b").is_dir() and leftovers(tmp_path / "a" / "b") == []
    with tmpfs(tmp_path / "ro", ro=True) as ro:
        with pytest.raises(CfnsrError, match=r"cannot write -o .*ro/out.json: the file system is read-only"):
            _check_one(ro / "out.json")


def test_a_full_disk_is_reported_before_work_and_a_write_that_fills_it_leaves_nothing(tmp_path):
    with tmpfs(tmp_path / "full", "256k") as full:
        (full / "keep.json").write_text("old")
        fill(full)
        with pytest.raises(CfnsrError, match=r"cannot write -o .*full/out.json: no space left .*disk is full"):
            _check_one(full / "out.json")
        with pytest.raises(CfnsrError, match=r"cannot write .*keep.json: no space left on the device"):
            write_text(full / "keep.json", "x" * 100_000)
        assert (full / "keep.json").read_text() == "old" and leftovers(full) == []


def test_an_os_error_while_writing_names_the_users_path_not_the_temp_file(tmp_path):
    target = tmp_path / "report.md"
    target.write_text("old")
    with pytest.raises(CfnsrError) as e, atomic_path(target) as tmp:
        raise OSError(28, "No space left on device", str(tmp))
    assert str(target) in str(e.value) and ".tmp" not in str(e.value)
    assert target.read_text() == "old" and leftovers(tmp_path) == []


def test_names_that_are_not_utf8_are_written_as_their_bytes(tmp_path):
    name = os.fsdecode(b"clip-\xff\xfe.csv")
    write_text(tmp_path / name, f"video\n{name}\n")
    raw = os.fsencode(tmp_path)
    assert b"clip-\xff\xfe.csv" in os.listdir(raw)
    with open(os.path.join(raw, b"clip-\xff\xfe.csv"), "rb") as f:
        assert f.read() == b"video\nclip-\xff\xfe.csv\n"


def test_temp_dir_is_removed_on_error_and_leftovers_of_dead_processes_are_swept(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"cfnsr-{dead.stdout.strip()}-export-abc"
    stale.mkdir()
    mine = tmp_path / "cfnsr-notes"  # not ours: no pid
    mine.mkdir()
    with pytest.raises(ValueError), temp_dir("export") as d:
        assert d.is_dir() and not stale.exists()
        raise ValueError
    assert not d.exists() and mine.is_dir()


def test_a_full_tmpdir_is_reported_as_such(tmp_path, monkeypatch):
    import tempfile

    with tmpfs(tmp_path / "tmp", "128k") as full:
        fill(full)
        monkeypatch.setattr(tempfile, "tempdir", str(full))
        with pytest.raises(CfnsrError, match=r"temporary folder .*tmp \(TMPDIR\).*set TMPDIR"), temp_dir("x") as d:
            (d / "big").write_bytes(b"\0" * 1_000_000)


def test_sigterm_removes_temp_files_and_folders(tmp_path):
    """The CLI turns SIGTERM into an exception, so ``temp_dir`` and ``atomic_path`` clean up on that path too."""
    code = f"""
import os, signal, tempfile
tempfile.tempdir = {str(tmp_path)!r}
from cfnsr.cli import _terminate_as_exit
from cfnsr.fileio import atomic_path, temp_dir
with _terminate_as_exit(), temp_dir("export") as d, atomic_path({str(tmp_path / 'out.onnx')!r}) as tmp:
    tmp.write_text("half")
    os.kill(os.getpid(), signal.SIGTERM)
    import time; time.sleep(5)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert done.returncode == 143, done.stderr
    assert os.listdir(tmp_path) == []


def test_bench_report_siblings_replace_only_the_last_suffix():
    from cfnsr.engines.bench import report_paths

    p = report_paths("o/notes.v2.json")
    assert (p["markdown"], p["png"]) == (Path("o/notes.v2.md"), Path("o/notes.v2.png"))
