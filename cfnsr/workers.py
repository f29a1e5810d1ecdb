"""Worker processes that die with their parent.

``pool(n)`` is a ``ProcessPoolExecutor`` whose workers ask the kernel to kill them when the process that started
them dies (Linux ``PR_SET_PDEATHSIG``; elsewhere they notice their parent changed when they start), ignore Ctrl-C
(the parent handles it and stops them), and are stopped at once, queued work cancelled, when the parent leaves the
``with`` block on an error, Ctrl-C or SIGTERM. So a killed ``preprocess`` leaves no orphans holding its cache lock.
"""

from __future__ import annotations

import contextlib
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from typing import Iterator

PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Run in each worker as it starts."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the parent check below still catches a parent already gone
        pass
    if os.getppid() != parent:  # the parent died before the prctl took effect
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the CLI's handler, inherited through fork


@contextlib.contextmanager
def pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    ex = ProcessPoolExecutor(workers, initializer=die_with_parent, initargs=(os.getpid(),))
    try:
        yield ex
    except BaseException:
        processes = list((getattr(ex, "_processes", None) or {}).values())
        ex.shutdown(wait=False, cancel_futures=True)
        for p in processes:
            with contextlib.suppress(Exception):
                p.kill()
        raise
    else:
        ex.shutdown(wait=True)
