"""The Ray engine on a real two-node Ray cluster (head + worker node on loopback, one CPU each): a worker
process killed mid-run is reported (no retries) or retried, nothing of it is written, a rerun resumes, and the
table equals the local engine's for the same spec (wall time aside)."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from spatten.eval.sweep import load_sweep, run_sweep

pytest.importorskip("ray")

SPEC = {"simulate": False, "tasks": ["stories"], "grid": {"token_keep": [1.0, 0.8, 0.6, 0.5, 0.4, 0.3]},
        "options": {"lm": {"max_tokens": 24, "window": 16, "stride": 8}}}


def _free_port() -> int:
    # outside Ray's default worker-port range (10002-19999) and below the ephemeral range
    for port in range(26000 + os.getpid() % 2000, 30000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def _ray(*args: str) -> None:
    """The `ray` command of this interpreter's installation."""
    beside = Path(sys.executable).parent / "ray"
    exe = str(beside) if beside.is_file() else shutil.which("ray")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run([exe, *args], check=True, env=env, timeout=120, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """Address of a head node and a second node on 127.0.0.1, one CPU each; stopped afterwards."""
    port = _free_port()
    address = f"127.0.0.1:{port}"
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats"]
    try:
        _ray("start", "--head", "--port", str(port), "--include-dashboard=false",
             "--temp-dir", str(tmp_path_factory.mktemp("ray")), *common)
        _ray("start", "--address", address, *common)
        yield address
    finally:
        _ray("stop", "--force")


def _task_processes() -> list[int]:
    """Ray worker processes executing a sweep run (Ray titles them ray::<function>)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if cmdline.read_bytes().startswith(b"ray::_ray_task"):
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue
    return pids


def _kill_a_running_task(driver: subprocess.Popen) -> None:
    deadline = time.time() + 90
    while time.time() < deadline and not _task_processes() and driver.poll() is None:
        time.sleep(0.05)
    victims = _task_processes()
    assert victims, "no Ray task started"
    os.kill(victims[0], signal.SIGKILL)  # mid-run: the worker is still loading or running its model


@pytest.mark.slow
def test_ray_sweep_survives_a_killed_worker_and_matches_the_local_engine(ray_cluster, tmp_path, data_dir):
    run_sweep(load_sweep(SPEC, out=tmp_path / "local"), progress=False)

    spec_file = tmp_path / "sweep.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))
    out = tmp_path / "ray"
    cmd = [sys.executable, "-m", "spatten", "sweep", str(spec_file), "--out", str(out), "--engine", "ray",
           "--address", ray_cluster, "--memory-per-run", "0.5", "--no-progress"]
    # first pass: no retries, so the run whose worker is killed is reported failed and nothing of it written
    first = subprocess.Popen(cmd + ["--retries", "0", "--keep-going"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    _kill_a_running_task(first)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 1, err
    assert "1 sweep run(s) failed" in err and "Traceback" not in err
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("result.json")}
    assert len(stamps) == 5  # the killed run left nothing; every other run is whole
    assert not list(out.rglob(".*.tmp"))

    # resume, with the default retry: the missing run's worker is killed too, and Ray reruns it
    again = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _kill_a_running_task(again)
    _, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # only the missing run was done

    remote = pd.read_csv(out / "results.csv").sort_values("run_id").reset_index(drop=True)
    local = pd.read_csv(tmp_path / "local" / "results.csv").sort_values("run_id").reset_index(drop=True)
    assert len(remote) == 6
    pd.testing.assert_frame_equal(remote.drop(columns="wall_seconds"), local.drop(columns="wall_seconds"))
