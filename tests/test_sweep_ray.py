"""The Ray engine on a real two-node Ray cluster (head + worker node on loopback, one CPU each): a worker
process killed mid-run is reported (no retries) or retried, nothing of it is written, a rerun resumes, and the
table equals the local engine's for the same spec (wall time aside)."""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
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


@dataclass
class LocalCluster:
    address: str
    temp_dir: str  # every process of this cluster descends from one whose command line names it


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A head node and a second node on 127.0.0.1, one CPU each, in a temp dir of their own; afterwards only
    this cluster's processes are stopped (`ray stop` would stop every Ray cluster of the machine's users)."""
    port = _free_port()
    cluster = LocalCluster(f"127.0.0.1:{port}", str(tmp_path_factory.mktemp("ray")))
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats"]
    try:
        _ray("start", "--head", "--port", str(port), "--include-dashboard=false", "--temp-dir", cluster.temp_dir,
             *common)
        _ray("start", "--address", cluster.address, *common)
        yield cluster
    finally:
        _stop(cluster)


def _processes() -> dict[int, tuple[int, bytes]]:
    """pid -> (parent pid, command line) of every process we can read."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            table[int(stat.parent.name)] = (parent, (stat.parent / "cmdline").read_bytes())
        except (OSError, ValueError, IndexError):
            continue
    return table


def _cluster_processes(cluster: LocalCluster) -> dict[int, bytes]:
    """The cluster's processes: those naming its temp dir (GCS, raylets, monitors) and all their descendants
    (agents and workers, which Ray retitles ray::<name>)."""
    table = _processes()
    marker = cluster.temp_dir.encode()
    members = {pid for pid, (_, cmdline) in table.items() if marker in cmdline}
    grew = True
    while grew:
        children = {pid for pid, (parent, _) in table.items() if parent in members} - members
        members |= children
        grew = bool(children)
    return {pid: table[pid][1] for pid in members}


def _stop(cluster: LocalCluster) -> None:
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        pids = list(_cluster_processes(cluster))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.time() + wait
        while time.time() < deadline and any(_alive(pid) for pid in pids):
            time.sleep(0.1)


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _task_processes(cluster: LocalCluster) -> list[int]:
    """This cluster's worker processes executing a sweep run (Ray titles them ray::<function>)."""
    return [pid for pid, cmdline in _cluster_processes(cluster).items() if cmdline.startswith(b"ray::_ray_task")]


def _kill_a_running_task(cluster: LocalCluster, driver: subprocess.Popen) -> None:
    deadline = time.time() + 90
    while time.time() < deadline and not _task_processes(cluster) and driver.poll() is None:
        time.sleep(0.05)
    victims = _task_processes(cluster)
    assert victims, "no Ray task started"
    os.kill(victims[0], signal.SIGKILL)  # mid-run: the worker is still loading or running its model


@pytest.mark.slow
def test_ray_sweep_survives_a_killed_worker_and_matches_the_local_engine(ray_cluster, tmp_path, data_dir):
    run_sweep(load_sweep(SPEC, out=tmp_path / "local"), progress=False)

    spec_file = tmp_path / "sweep.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))
    out = tmp_path / "ray"
    cmd = [sys.executable, "-m", "spatten", "sweep", str(spec_file), "--out", str(out), "--engine", "ray",
           "--address", ray_cluster.address, "--memory-per-run", "0.5", "--no-progress"]
    # first pass: no retries, so the run whose worker is killed is reported failed and nothing of it written
    first = subprocess.Popen(cmd + ["--retries", "0", "--keep-going"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    _kill_a_running_task(ray_cluster, first)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 1, err
    assert "1 sweep run(s) failed" in err and "Traceback" not in err
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("result.json")}
    assert len(stamps) == 5  # the killed run left nothing; every other run is whole
    assert not list(out.rglob(".*.tmp"))

    # resume, with the default retry: the missing run's worker is killed too, and Ray reruns it
    again = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _kill_a_running_task(ray_cluster, again)
    _, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # only the missing run was done

    remote = pd.read_csv(out / "results.csv").sort_values("run_id").reset_index(drop=True)
    local = pd.read_csv(tmp_path / "local" / "results.csv").sort_values("run_id").reset_index(drop=True)
    assert len(remote) == 6
    pd.testing.assert_frame_equal(remote.drop(columns="wall_seconds"), local.drop(columns="wall_seconds"))


def test_stopping_the_test_cluster_spares_other_processes(tmp_path):
    """_stop ends the processes naming the cluster's temp dir and their descendants, and nothing else (a user's
    own Ray cluster on the same machine keeps running)."""
    marker = tmp_path / "cluster-temp"
    marker.mkdir()
    # A stand-in for a raylet: names the temp dir and has a child, as raylets have workers.
    member = subprocess.Popen([sys.executable, "-c", f"import subprocess, sys; subprocess.run(['sleep', '60']); "
                               f"sys.argv.append({str(marker)!r})", str(marker)])
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        cluster = LocalCluster("127.0.0.1:0", str(marker))
        deadline = time.time() + 10
        while time.time() < deadline and len(_cluster_processes(cluster)) < 2:
            time.sleep(0.05)
        members = set(_cluster_processes(cluster))
        assert member.pid in members and len(members) == 2 and bystander.pid not in members
        _stop(cluster)
        assert member.wait(timeout=10) != 0
        assert not any(_alive(pid) for pid in members - {member.pid})  # its child too
        assert bystander.poll() is None
    finally:
        for process in (member, bystander):
            process.kill()
            process.wait()
