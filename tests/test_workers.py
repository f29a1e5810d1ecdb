"""Worker processes die with their parent; options are bounded by the machine before any work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cfnsr.bounds import check_batch_memory, check_torch_device, cpu_count
from cfnsr.errors import CfnsrError

ROOT = Path(__file__).resolve().parent.parent


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"
    except OSError:
        return False


def _pids_of_workers(pid_dir: Path, n: int, timeout: float = 60) -> list[int]:
    end = time.time() + timeout
    while time.time() < end:
        pids = [int(p.name) for p in pid_dir.iterdir()]
        if len(pids) >= n:
            return pids
        time.sleep(0.1)
    raise AssertionError("the workers did not start")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_pool_workers_die_with_their_parent(tmp_path, sig):
    code = f"""
import os, time
from cfnsr.workers import pool
def work(i):
    open(os.path.join({str(tmp_path)!r}, str(os.getpid())), "w").close()
    time.sleep(120)
from cfnsr.cli import _terminate_as_exit
with _terminate_as_exit(), pool(2) as p:
    list(p.map(work, range(8)))
"""
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stderr=subprocess.PIPE)
    workers = _pids_of_workers(tmp_path, 2)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    end = time.time() + 20
    while any(alive(p) for p in workers) and time.time() < end:
        time.sleep(0.1)
    assert not [p for p in workers if alive(p)], "orphaned workers outlived their parent"


def test_a_lock_whose_owner_is_dead_is_taken_over_and_said(tmp_path):
    from cfnsr.data.cache import _cache_lock

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / ".lock").write_text(dead.stdout.strip())
    notes = []
    with _cache_lock(tmp_path, notes.append):
        assert (tmp_path / ".lock").read_text() == str(os.getpid())
    assert len(notes) == 1 and f"pid {dead.stdout.strip()}" in notes[0] and "no longer running" in notes[0]
    assert (tmp_path / ".lock").read_text() == ""  # a clean exit leaves a free lock: the next run says nothing
    notes.clear()
    with _cache_lock(tmp_path, notes.append):
        pass
    assert notes == []


def test_batch_buffers_beyond_memory_are_refused_with_the_numbers():
    with pytest.raises(CfnsrError, match=r"--batch 1000000: the input buffers alone take 1000.0 GB .* 8.0 GB "
                                         r"available; give at most 8000"):
        check_batch_memory(1_000_000, 1_000_000, "--batch", available=8_000_000_000)
    check_batch_memory(8000, 1_000_000, "--batch", available=8_000_000_000)


def test_cuda_without_a_gpu_is_refused():
    import torch

    if torch.cuda.is_available():
        with pytest.raises(CfnsrError, match="CUDA device"):
            check_torch_device(f"cuda:{torch.cuda.device_count()}")
    else:
        with pytest.raises(CfnsrError, match="--device cuda: torch .* sees no CUDA GPU"):
            check_torch_device("cuda")
    check_torch_device("cpu")


def test_cpu_count_is_the_affinity_mask():
    assert 1 <= cpu_count() <= (os.cpu_count() or 1)
