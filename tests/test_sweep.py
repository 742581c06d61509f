"""Sweeps: grid expansion, atomic per-run results, resume after a kill, the gathered table."""

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

from spatten.eval.sweep import SweepError, collect, is_done, load_sweep, run_sweep

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


def test_killed_sweep_resumes_without_lost_or_torn_results(tmp_path, data_dir):
    out = tmp_path / "killed"
    spec_file = tmp_path / "sweep.yaml"
    spec = tiny_sweep(out, keeps=(1.0, 0.75, 0.5, 0.25))
    spec["options"]["lm"]["max_tokens"] = 40  # a few seconds per run, so the kill lands mid-sweep
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
