"""What the machine can do, asked before any work: CPUs, memory, a GPU. Options beyond it are refused, naming the
option, what was asked and what the machine has (10,000 threads, a batch of a million clips, --device cuda on a
machine without one)."""

from __future__ import annotations

import os

from .errors import CfnsrError


def cpu_count() -> int:
    """CPUs this process may run on (its affinity mask: what a container or taskset allows)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_batch_memory(batch: int, bytes_per_item: int, option: str, available: int | None = None) -> None:
    """Refuse a batch whose input buffers alone exceed the memory available (the model's activations need more)."""
    available = available_memory() if available is None else available
    need = batch * bytes_per_item
    if available is not None and need > available:
        raise CfnsrError(f"{option} {batch}: the input buffers alone take {need / 1e9:.1f} GB "
                         f"({bytes_per_item / 1e6:.2f} MB per clip) and this machine has {available / 1e9:.1f} GB "
                         f"available; give at most {max(available // max(bytes_per_item, 1), 1)}")


def check_torch_device(device: str, option: str = "--device") -> None:
    """``cuda`` / ``cuda:N`` only where torch sees that GPU (asked before anything is written)."""
    if not str(device).startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else "no device visible"
        raise CfnsrError(f"{option} {device}: torch {torch.__version__} sees no CUDA GPU here ({build}); use "
                         f"{option} cpu or auto")
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise CfnsrError(f"{option} {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
