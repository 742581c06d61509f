"""Sweeps: grid expansion and validation, atomic per-run results, resume after a kill, the gathered table,
one failure policy, the directory lock, workers that die with the driver."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

import spatten
from spatten.atomic import atomic_write_text
from spatten.eval.sweep import (
    SweepError,
    SweepLocked,
    SweepRunsFailed,
    SweepWarning,
    collect,
    is_done,
    load_sweep,
    run_sweep,
    sweep_lock,
)

TINY_LM = {"max_tokens": 24, "window": 16, "stride": 8}


def tiny_sweep(out: Path, keeps=(1.0, 0.5), **extra) -> dict:
    return {"out": str(out), "simulate": False, "tasks": ["stories"], "grid": {"token_keep": list(keeps)},
            "options": {"lm": dict(TINY_LM)}, **extra}


def test_grid_expansion_and_validation(tmp_path):
    sweep = load_sweep({"tasks": ["sts-b", "stories"], "grid": {"token_keep": [1.0, 0.5], "head_keep": 0.9,
                                                                 "k_bits": [[6, 4], None]},
                        "models": {"encoder": ["minilm"], "decoder": ["stories260K"]}}, out=tmp_path)
    assert len(sweep.runs) == 2 * 2 * 2
    assert {r.kind for r in sweep.runs} == {"glue", "lm"}
    assert {r.model for r in sweep.runs if r.kind == "glue"} == {"minilm"}
    assert all(r.config["head_keep"] == 0.9 for r in sweep.runs)
    assert len({r.run_id for r in sweep.runs}) == len(sweep.runs)
    with pytest.raises(SweepError, match="not SpAttenConfig fields"):
        load_sweep({"tasks": ["sts-b"], "grid": {"token_kep": [0.5]}})
    with pytest.raises(SweepError, match="neither a GLUE task"):
        load_sweep({"tasks": ["imagenet"], "grid": {}})
    with pytest.raises(SweepError, match="unknown sweep keys"):
        load_sweep({"tasks": ["sts-b"], "grid": {}, "worker": 2})
    with pytest.raises(FileNotFoundError, match="sweep file"):
        load_sweep(tmp_path / "missing.yaml")


def test_sweep_writes_runs_resumes_and_gathers(tmp_path, data_dir):
    sweep = load_sweep(tiny_sweep(tmp_path / "s"))
    table = run_sweep(sweep, progress=False)
    assert len(table) == 2 and set(table["config.token_keep"]) == {1.0, 0.5}
    for spec in sweep.runs:
        run_dir = sweep.run_dir(spec)
        assert {"result.json", "config.yaml", "trace.csv"} <= {p.name for p in run_dir.iterdir()}
        assert is_done(run_dir, spec)
        assert yaml.safe_load((run_dir / "config.yaml").read_text())["token_keep"] == spec.config["token_keep"]
    dense = table[table["config.token_keep"] == 1.0].iloc[0]
    # the unpruned run reproduces the dense model exactly
    assert dense["metric.perplexity"] == pytest.approx(dense["metric.perplexity_dense"], rel=1e-5)
    assert dense["metric.agreement_vs_dense"] == 1.0
    pruned = table[table["config.token_keep"] == 0.5].iloc[0]
    assert pruned["kept.token_keep_measured"] < 1.0
    csv = pd.read_csv(tmp_path / "s" / "results.csv")
    assert len(csv) == 2 and "metric.kl_vs_dense" in csv.columns

    # rerun: nothing is recomputed
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "s").rglob("result.json")}
    run_sweep(load_sweep(tiny_sweep(tmp_path / "s")), progress=False)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    # a changed grid only adds the new run
    table = run_sweep(load_sweep(tiny_sweep(tmp_path / "s", keeps=(1.0, 0.5, 0.3))), progress=False)
    assert len(table) == 3
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_run_made_by_other_library_versions_is_redone(tmp_path, data_dir):
    """A finished run is reused only under the spatten, torch and transformers that made it."""
    sweep = load_sweep(tiny_sweep(tmp_path / "s", keeps=(0.5,)))
    run_sweep(sweep, progress=False)
    run_dir = sweep.run_dir(sweep.runs[0])
    path = run_dir / "result.json"
    result = json.loads(path.read_text())
    assert result["versions"]["spatten"] == spatten.__version__
    result["versions"]["spatten"] = "0.0.0-older"
    path.write_text(json.dumps(result))
    assert not is_done(run_dir, sweep.runs[0])
    table = run_sweep(load_sweep(tiny_sweep(tmp_path / "s", keeps=(0.5,))), progress=False)
    assert is_done(run_dir, sweep.runs[0]) and list(table["spatten_version"]) == [spatten.__version__]


def test_half_written_run_is_redone(tmp_path, data_dir):
    sweep = load_sweep(tiny_sweep(tmp_path / "s", keeps=(0.5,)))
    run_dir = sweep.run_dir(sweep.runs[0])
    run_dir.mkdir(parents=True)
    (run_dir / "trace.csv").write_text("partial")           # a killed run: files but no result.json
    (run_dir / ".result.json.abc.tmp").write_text("{\"half")  # and a temp file of an interrupted write
    assert not is_done(run_dir, sweep.runs[0])
    run_sweep(sweep, progress=False)
    assert is_done(run_dir, sweep.runs[0])
    assert not list(run_dir.glob(".*.tmp"))
    assert (run_dir / "trace.csv").read_text().startswith("# spatten-trace")


@pytest.mark.slow
def test_killed_sweep_resumes_without_lost_or_torn_results(tmp_path, data_dir):
    out = tmp_path / "killed"
    spec_file = tmp_path / "sweep.yaml"
    spec = tiny_sweep(out, keeps=(1.0, 0.75, 0.5, 0.25))
    spec["options"]["lm"]["max_tokens"] = 600  # ~2 s per run (40 tokens took 0.1 s): the kill lands mid-sweep
    spec_file.write_text(yaml.safe_dump(spec))
    env = {**os.environ, "SPATTEN_DATA_DIR": str(data_dir)}
    cmd = [sys.executable, "-m", "spatten", "sweep", str(spec_file), "--workers", "2", "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    try:
        while time.time() < deadline and not list(out.rglob("result.json")):
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its workers, mid-run
        proc.wait()
    finished = {p: p.read_bytes() for p in out.rglob("result.json")}
    assert 1 <= len(finished) < 4, "the kill should land after the first run and before the last"
    for content in finished.values():
        json.loads(content)  # every result on disk is whole
    done = subprocess.run(cmd[:-3] + ["--workers", "1", "--no-progress"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    results = sorted(out.rglob("result.json"))
    assert len(results) == 4
    assert {p: p.read_bytes() for p in finished} == finished  # finished runs were not redone
    assert not list(out.rglob(".*.tmp"))
    assert len(collect(out, write=False)) == 4


BAD_SPECS = [  # (what the spec changes, the message that names the problem)
    ({"options": {"glue": {"n_exampels": 10}}}, "unknown glue option(s) ['n_exampels']"),
    ({"options": {"lm": {"max_tokens": -10}}}, "max_tokens must be an integer >= 2"),
    ({"options": {"lm": {"window": 16, "stride": 16}}}, "stride must be smaller than window"),
    ({"options": {"lm": [1]}}, "options.lm must be a mapping"),
    ({"preset": "nope"}, "unknown simulator preset 'nope'"),
    ({"grid": {"token_keep": [1.5]}}, "token_keep must be a number in (0, 1]"),
    ({"grid": {"k_bits": [[6, 4, 2]]}}, "k_bits must be None or a pair"),
    ({"grid": {"token_keep": [1.0, 1]}}, "are the same configuration"),
    ({"grid": []}, "`grid` must map at least one SpAttenConfig field"),
    ({"grid": {}}, "`grid` must map at least one SpAttenConfig field"),
    ({"grid": {"token_keep": []}}, "token_keep has an empty list"),
    ({"grid": {"token_kep": [0.5]}}, "not SpAttenConfig fields"),
    ({"tasks": ["sts-b", "STS-B"]}, "are the same task"),
    ({"tasks": ["wikitext-2", "WikiText-2"]}, "are the same task"),
    ({"tasks": []}, "`tasks` must be a non-empty list"),
    ({"tasks": ["imagenet"]}, "neither a GLUE task"),
    ({"models": ["/no/such/model"]}, "neither a known name"),
    ({"models": ["minilm", "all-MiniLM-L6-v2"]}, "listed twice"),
    ({"models": {"decoder": ["minilm"]}}, "is a encoder model; this evaluation needs a decoder"),
    ({"simulate": "yes"}, "`simulate` must be true or false"),
    ({"seed": 1.5}, "`seed` must be an integer"),
    ({"worker": 2}, "unknown sweep keys"),
]


@pytest.mark.parametrize("change, message", BAD_SPECS, ids=[m for _, m in BAD_SPECS])
def test_bad_spec_is_named_before_anything_runs(change, message, tmp_path, data_dir):
    spec = {"tasks": ["sts-b", "stories"], "grid": {"token_keep": [1.0, 0.5]}, "simulate": True, **change}
    with pytest.raises(SweepError) as raised:
        load_sweep(spec, out=tmp_path)
    assert message in str(raised.value)


def test_malformed_yaml_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks: [sts-b\ngrid: {token_keep: [1.0]}\n")
    with pytest.raises(SweepError, match="bad.yaml is not valid YAML"):
        load_sweep(bad)


def test_grid_values_are_normalised_through_spattenconfig(tmp_path):
    sweep = load_sweep({"tasks": ["STS-B"], "grid": {"token_keep": [1, 0.5]}, "simulate": False}, out=tmp_path)
    assert [r.config["token_keep"] for r in sweep.runs] == [1.0, 0.5]
    assert {r.task for r in sweep.runs} == {"sts-b"}


def test_results_csv_holds_exactly_the_current_spec(tmp_path, data_dir):
    out = tmp_path / "s"
    run_sweep(load_sweep(tiny_sweep(out, keeps=(1.0, 0.5))), progress=False)
    table = run_sweep(load_sweep(tiny_sweep(out, keeps=(0.5,))), progress=False)
    assert list(table["config.token_keep"]) == [0.5]
    assert list(pd.read_csv(out / "results.csv")["config.token_keep"]) == [0.5]
    assert len(list(out.rglob("result.json"))) == 2  # the older run stays on disk, outside the table
    assert "wall_seconds" in table.columns and "seconds" not in table.columns


@pytest.mark.parametrize("garbage", [b"\x00\xff\x13random", b"[]", b"{\"half"])
def test_corrupt_result_is_not_done_and_named(garbage, tmp_path, data_dir):
    sweep = load_sweep(tiny_sweep(tmp_path / "s", keeps=(0.5,)))
    run_sweep(sweep, progress=False)
    result = sweep.run_dir(sweep.runs[0]) / "result.json"
    result.write_bytes(garbage)
    with pytest.warns(SweepWarning, match=str(result)):
        assert not is_done(result.parent, sweep.runs[0])
    with pytest.warns(SweepWarning, match=str(result)):
        table = run_sweep(sweep, progress=False)  # redone, not a decode error
    assert len(table) == 1 and is_done(result.parent, sweep.runs[0])


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_get_the_umask_mode(umask, mode, tmp_path):
    before = os.umask(umask)
    try:
        path = atomic_write_text(tmp_path / "f.txt", "x")
    finally:
        os.umask(before)
    assert path.stat().st_mode & 0o777 == mode


def test_a_locked_directory_is_refused_and_its_temp_files_kept(tmp_path, data_dir):
    sweep = load_sweep(tiny_sweep(tmp_path / "s", keeps=(0.5,)))
    run_dir = sweep.run_dir(sweep.runs[0])
    run_dir.mkdir(parents=True)
    other_sweeps_tmp = run_dir / ".result.json.abc.tmp"
    other_sweeps_tmp.write_text("{}")
    with sweep_lock(sweep.out):  # another sweep is running here
        with pytest.raises(SweepLocked, match=f"pid {os.getpid()}.* is running in"):
            run_sweep(sweep, progress=False)
    assert other_sweeps_tmp.exists() and not (run_dir / "result.json").exists()
    run_sweep(sweep, progress=False)  # once released, it runs
    assert is_done(run_dir, sweep.runs[0])


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_one_failure_policy_for_every_worker_count(workers, tmp_path, data_dir, monkeypatch):
    # a data directory with the model but without WikiText: the wikitext-2 runs fail, the stories runs work
    partial = tmp_path / "data"
    (partial / "models").mkdir(parents=True)
    (partial / "models" / "stories260K-llama2c").symlink_to(data_dir / "models" / "stories260K-llama2c")
    monkeypatch.setenv("SPATTEN_DATA_DIR", str(partial))
    spec = tiny_sweep(tmp_path / "s")
    spec["tasks"] = ["wikitext-2", "stories"]
    with pytest.raises(SweepRunsFailed, match="wiki.test.raw") as stopped:
        run_sweep(load_sweep(spec), progress=False, workers=workers)
    if workers == 1:  # the first run failed: nothing else started
        assert "1 sweep run(s) failed, 3 not started" in str(stopped.value)
    with pytest.raises(SweepRunsFailed, match="2 sweep run") as kept_going:
        run_sweep(load_sweep(spec), progress=False, workers=workers, keep_going=True)
    assert "not started" not in str(kept_going.value)
    assert len(pd.read_csv(tmp_path / "s" / "results.csv")) == 2


def _session_members(sid: int) -> list[int]:
    """Live processes of session `sid` (zombies excluded)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_no_worker_outlives_a_killed_sweep(sig, tmp_path, data_dir):
    out = tmp_path / "s"
    spec = tiny_sweep(out, keeps=(1.0, 0.75, 0.5, 0.25))
    spec["options"]["lm"]["max_tokens"] = 40
    spec_file = tmp_path / "sweep.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    err_file = tmp_path / "stderr.txt"
    with err_file.open("w") as err_out:  # a file, not a pipe: survivors would hold a pipe open
        proc = subprocess.Popen([sys.executable, "-m", "spatten", "sweep", str(spec_file), "--workers", "2",
                                 "--no-progress"], start_new_session=True, stdout=subprocess.DEVNULL,
                                stderr=err_out)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(_session_members(proc.pid)) < 3:  # driver + 2 workers
            time.sleep(0.1)
        time.sleep(1.0)  # the workers are importing torch or running
        os.kill(proc.pid, sig)  # the driver only, as a shell's `kill` would
        proc.wait(timeout=60)
        deadline = time.time() + 5
        while time.time() < deadline and _session_members(proc.pid):
            time.sleep(0.1)
        survivors = _session_members(proc.pid)
    finally:
        for pid in _session_members(proc.pid):
            os.kill(pid, signal.SIGKILL)
    assert not survivors, f"processes outlived the sweep: {survivors}"
    if sig != signal.SIGKILL:  # a clean stop: finished runs flushed, one message, no traceback
        err = err_file.read_text()
        assert proc.returncode == 128 + sig
        assert f"stopped by {signal.Signals(sig).name}" in err and "Traceback" not in err
    assert not list(out.rglob(".*.tmp"))
    for result in out.rglob("result.json"):
        json.loads(result.read_text())
