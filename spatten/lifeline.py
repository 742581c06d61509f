"""Worker processes that never outlive the process that started them.

A spawned sweep worker runs this module's initializer first thing; the module imports nothing heavy, so the
window in which the driver could die unnoticed is the interpreter's start-up, not an import of torch.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def init_sweep_worker(parent_pid: int) -> None:
    """Initializer of the local sweep engine's workers (see spatten.eval.sweep_local)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the driver stops us
    die_with_parent(parent_pid)
    import torch

    torch.set_num_threads(1)  # each worker single-threaded; see spatten.threads


def die_with_parent(parent_pid: int) -> None:
    """Make this process exit as soon as `parent_pid` (its parent) does, even if the parent is SIGKILLed.

    Linux's PR_SET_PDEATHSIG has the kernel send SIGKILL at once; a thread watching getppid() covers
    systems without it. A parent that died before either took effect is caught by the getppid() check.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="watch-parent", daemon=True).start()


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os._exit(1)
