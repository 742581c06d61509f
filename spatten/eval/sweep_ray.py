"""The Ray sweep engine: one Ray task per run, each with its CPU and memory request.

    spatten sweep s.yaml --engine ray --address auto          # a running cluster (`ray start --head` ...)

Tasks compute a run in a temporary directory on whichever node runs them and return the run's files; the
driver writes them into the sweep directory (atomically, result.json last), so the sweep directory need not
be shared between nodes and a crashed task leaves nothing behind. Every node needs spatten installed
(`pip install "spatten[ray]"`) and the data directory at the driver's $SPATTEN_DATA_DIR path.
"""

from __future__ import annotations

import logging
import os

from spatten.eval.sweep import Report, RunSpec, compute_run

# The driver's settings that a run depends on; `ray start` gave the workers their own environment.
FORWARDED_ENV = ("SPATTEN_DATA_DIR", "SPATTEN_CACHE_DIR", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def _ray_task(spec_dict: dict, env: dict[str, str]) -> dict[str, bytes]:
    os.environ.update(env)
    return compute_run(spec_dict)


def run_ray(todo: list[RunSpec], report: Report, *, address: str | None = None, progress: bool = True,
            cpus_per_run: float = 1, memory_per_run_gb: float = 1.0, retries: int = 1) -> None:
    """Run `todo` as Ray tasks on the cluster at `address` ("auto", "HOST:PORT"; None starts a local one).

    retries: how often Ray reruns a task whose worker process died; after that the run is reported failed.
    """
    try:
        import ray
    except ImportError:
        raise ImportError("the Ray engine needs Ray: pip install 'spatten[ray]'") from None
    if cpus_per_run <= 0 or memory_per_run_gb <= 0 or retries < 0:
        raise ValueError("cpus_per_run and memory_per_run_gb must be > 0 and retries >= 0, got "
                         f"{cpus_per_run}, {memory_per_run_gb}, {retries}")
    if not todo:
        return
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                 configure_logging=False)
    task = ray.remote(_ray_task).options(num_cpus=cpus_per_run, memory=int(memory_per_run_gb * 2**30),
                                         max_retries=retries, retry_exceptions=False)
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    pending = {task.remote(spec.to_dict(), env): spec for spec in todo}
    try:
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            spec = pending.pop(ref)
            try:
                files, err = ray.get(ref), None
            except ray.exceptions.RayError as raised:
                files, err = None, getattr(raised, "cause", None) or raised
            if not report(spec, files, err):
                break
    finally:
        for ref in pending:  # stopped early, interrupted or failed: nothing more should run
            ray.cancel(ref, force=True)
        if started_here:
            ray.shutdown()
