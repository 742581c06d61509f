"""The local sweep engine: runs in this process (one worker) or in spawned worker processes that never
outlive the driver, whether it exits, is interrupted, or is killed with SIGKILL."""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import multiprocessing
import os
import signal
import threading
import time

from spatten.eval.sweep import Report, RunSpec, compute_run

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def run_local(todo: list[RunSpec], report: Report, workers: int) -> None:
    """Run `todo`, reporting each run as it ends; stops starting runs once report returns False."""
    if workers == 1:
        for spec in todo:
            try:
                files = compute_run(spec.to_dict())
            except Exception as err:  # reported; the driver decides whether to go on
                if not report(spec, None, err):
                    return
            else:
                report(spec, files, None)
        return
    ctx = multiprocessing.get_context("spawn")  # fork after torch threads start is unsafe
    pool = cf.ProcessPoolExecutor(min(workers, len(todo)) or 1, mp_context=ctx, initializer=_init_worker,
                                  initargs=(os.getpid(),))
    futures = {pool.submit(compute_run, spec.to_dict()): spec for spec in todo}
    try:
        for fut in cf.as_completed(futures):
            if fut.cancelled():
                continue
            err = fut.exception()
            if not report(futures[fut], None if err else fut.result(), err):
                for other in futures:
                    other.cancel()  # runs already going finish and are kept
    except BaseException:
        # interrupted or the driver failed: the running runs cannot be saved, so do not let them go on
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.kill()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _init_worker(parent_pid: int) -> None:
    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the driver stops us
    die_with_parent(parent_pid)
    torch.set_num_threads(1)  # each worker single-threaded; see spatten.threads


def die_with_parent(parent_pid: int) -> None:
    """Make this process exit as soon as `parent_pid` (its parent) does, even if the parent is SIGKILLed.

    Linux's PR_SET_PDEATHSIG has the kernel send SIGKILL at once; a thread watching getppid() covers
    systems without it (and the window before prctl took effect).
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
