"""The local sweep engine: runs in this process (one worker) or in spawned worker processes that never
outlive the driver, whether it exits, is interrupted, or is killed with SIGKILL."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os

from spatten.eval.sweep import Report, RunSpec, compute_run
from spatten.lifeline import init_sweep_worker


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
    pool = cf.ProcessPoolExecutor(min(workers, len(todo)) or 1, mp_context=ctx, initializer=init_sweep_worker,
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
