"""Sweeps: a YAML grid over tasks x models x SpAttenConfig fields, run resumably over worker processes.

Sweep file (every key but `tasks` and `grid` is optional):

    out: results/sweeps/example      # run directories go here (relative to the current directory)
    preset: spatten                  # simulator preset; `simulate: false` skips the hardware model
    tasks: [sts-b, sst-2, stories, wikitext-2]      # GLUE tasks, LM corpora, or "stories"
    models: {encoder: [minilm], decoder: [stories260K]}   # or one list used for every task
    grid:                            # SpAttenConfig fields; lists are crossed, scalars are fixed
      token_keep: [1.0, 0.5, 0.3]
    options:                         # runner keyword arguments by kind (see run_glue / run_lm)
      glue: {n_examples: 200}
      lm: {max_tokens: 512}

Each run gets its own directory holding config.yaml, trace.csv, hardware.json and, written last,
result.json (which embeds the run's spec). A run whose result.json exists with the same spec is skipped, so
rerunning an interrupted sweep only does the missing runs; every file is written atomically, so a killed
worker leaves no half-written result. `collect` gathers every result into one tidy table.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import itertools
import json
import multiprocessing
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from spatten.atomic import atomic_write_bytes, atomic_write_text

KNOWN_KEYS = {"out", "preset", "simulate", "tasks", "models", "grid", "options", "seed"}
DEFAULT_MODELS = {"encoder": ["minilm"], "decoder": ["stories260K"]}


class SweepError(ValueError):
    """The sweep file is malformed; the message names the key."""


class SweepRunsFailed(RuntimeError):
    """Some runs of a sweep raised; the finished ones are kept and a rerun retries the rest."""


def task_kind(task: str) -> str:
    """'glue' for GLUE tasks, 'lm' for language-modelling corpora (and 'stories')."""
    from spatten.eval.runners import STORIES_CORPUS
    from spatten.eval.tasks import LM_CORPORA, glue_task

    if task == STORIES_CORPUS or task.lower() in LM_CORPORA:
        return "lm"
    try:
        glue_task(task)
    except KeyError:
        raise SweepError(f"tasks: {task!r} is neither a GLUE task, an LM corpus nor 'stories'") from None
    return "glue"


@dataclass(frozen=True)
class RunSpec:
    kind: str
    task: str
    model: str
    config: dict
    options: dict
    preset: str
    simulate: bool
    seed: int

    def to_dict(self) -> dict:
        return {"kind": self.kind, "task": self.task, "model": self.model, "config": self.config,
                "options": self.options, "preset": self.preset, "simulate": self.simulate, "seed": self.seed}

    @property
    def run_id(self) -> str:
        digest = hashlib.sha1(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:8]
        fields = "_".join(f"{k}={_short(v)}" for k, v in sorted(self.config.items())) or "dense"
        return "/".join(_slug(p) for p in (self.task, Path(self.model).name, f"{fields}-{digest}"))


def _short(value: Any) -> str:
    return "-".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "-", text).strip("-") or "x"


@dataclass
class Sweep:
    out: Path
    runs: list[RunSpec]

    def run_dir(self, spec: RunSpec) -> Path:
        return self.out / spec.run_id


def load_sweep(source: str | os.PathLike | dict, out: str | os.PathLike | None = None) -> Sweep:
    """Parse a sweep file (or an already-loaded dict) into its list of runs."""
    import yaml

    if isinstance(source, dict):
        doc, default_out = source, Path("results/sweeps/sweep")
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"sweep file {path} not found")
        doc = yaml.safe_load(path.read_text())
        default_out = Path("results/sweeps") / path.stem
    if not isinstance(doc, dict):
        raise SweepError("a sweep file must be a YAML mapping with at least `tasks` and `grid`")
    unknown = set(doc) - KNOWN_KEYS
    if unknown:
        raise SweepError(f"unknown sweep keys {sorted(unknown)}; known: {sorted(KNOWN_KEYS)}")
    tasks = doc.get("tasks")
    if not tasks or not isinstance(tasks, list):
        raise SweepError("`tasks` must be a non-empty list of task names")
    grid = doc.get("grid") or {}
    if not isinstance(grid, dict):
        raise SweepError("`grid` must map SpAttenConfig field names to values or lists of values")
    _check_grid_fields(grid)
    models = doc.get("models", DEFAULT_MODELS)
    options = doc.get("options") or {}
    if not isinstance(options, dict) or set(options) - {"glue", "lm"}:
        raise SweepError("`options` must be a mapping with keys 'glue' and/or 'lm'")
    keys = sorted(grid)
    axes = [grid[k] if isinstance(grid[k], list) else [grid[k]] for k in keys]
    runs = []
    for task in tasks:
        kind = task_kind(str(task))
        for model in _models_for(models, "encoder" if kind == "glue" else "decoder"):
            for values in itertools.product(*axes):
                runs.append(RunSpec(kind, str(task), str(model), dict(zip(keys, values)),
                                    dict(options.get(kind) or {}), str(doc.get("preset", "spatten")),
                                    bool(doc.get("simulate", True)), int(doc.get("seed", 0))))
    ids = [r.run_id for r in runs]
    if len(set(ids)) != len(ids):
        raise SweepError("the grid produces duplicate runs (a value listed twice?)")
    return Sweep(Path(out) if out is not None else Path(doc.get("out", default_out)), runs)


def _check_grid_fields(grid: dict) -> None:
    import dataclasses

    from spatten import SpAttenConfig

    fields = {f.name for f in dataclasses.fields(SpAttenConfig)}
    unknown = set(grid) - fields
    if unknown:
        raise SweepError(f"grid: {sorted(unknown)} are not SpAttenConfig fields (fields: {sorted(fields)})")


def _models_for(models, kind: str) -> list:
    if isinstance(models, list):
        return models
    if isinstance(models, dict):
        return list(models.get(kind) or DEFAULT_MODELS[kind])
    raise SweepError("`models` must be a list or a mapping {encoder: [...], decoder: [...]}")


def is_done(run_dir: Path, spec: RunSpec) -> bool:
    """A run is finished when its result.json exists, parses and was made from the same spec."""
    try:
        result = json.loads((run_dir / "result.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return result.get("spec") == json.loads(json.dumps(spec.to_dict()))


def _clean_stale_temp_files(run_dir: Path) -> None:
    # temp files of atomic writes whose process was killed before the rename
    for tmp in run_dir.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


_MODEL_CACHE: dict[tuple[str, str], Any] = {}


def execute_run(spec_dict: dict, run_dir: str) -> str:
    """Run one spec in this process (models are cached per process) and write its directory."""
    from spatten.eval.runners import run_glue, run_lm
    from spatten.models import load_model

    spec = RunSpec(**spec_dict)
    kind = "encoder" if spec.kind == "glue" else "decoder"
    key = (spec.model, kind)
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = load_model(spec.model, kind=kind)
    runner = run_glue if spec.kind == "glue" else run_lm
    runner(spec.task, _MODEL_CACHE[key], spec.config, preset=spec.preset, simulate=spec.simulate, out_dir=run_dir,
           seed=spec.seed, annotate={"spec": spec.to_dict(), "run_id": spec.run_id}, **spec.options)
    return spec.run_id


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def run_sweep(sweep: Sweep | str | os.PathLike, *, workers: int = 1, progress: bool = True,
              out: str | os.PathLike | None = None) -> pd.DataFrame:
    """Run every unfinished run of the sweep, then return (and write) the gathered table.

    workers > 1 spreads runs over that many spawned processes (one torch thread each).
    """
    from tqdm.auto import tqdm

    if not isinstance(sweep, Sweep):
        sweep = load_sweep(sweep, out)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    sweep.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(sweep.out / "sweep.json", json.dumps([r.to_dict() for r in sweep.runs], indent=1))
    todo = []
    for spec in sweep.runs:
        run_dir = sweep.run_dir(spec)
        if run_dir.is_dir():
            _clean_stale_temp_files(run_dir)
        if not is_done(run_dir, spec):
            todo.append(spec)
    bar = tqdm(total=len(sweep.runs), initial=len(sweep.runs) - len(todo), desc="sweep", unit="run",
               disable=not progress)
    errors = []
    if workers == 1:
        for spec in todo:
            execute_run(spec.to_dict(), str(sweep.run_dir(spec)))
            bar.update()
    else:
        threads = 1  # each worker single-threaded; see runners.torch_threads
        ctx = multiprocessing.get_context("spawn")  # fork after torch threads start is unsafe
        with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                    initargs=(threads,)) as pool:
            futures = {pool.submit(execute_run, s.to_dict(), str(sweep.run_dir(s))): s for s in todo}
            for fut in cf.as_completed(futures):
                try:
                    fut.result()
                except Exception as err:  # keep the other runs going; report at the end
                    errors.append(f"{futures[fut].run_id}: {type(err).__name__}: {err}")
                bar.update()
    bar.close()
    table = collect(sweep.out)
    if errors:
        raise SweepRunsFailed(f"{len(errors)} sweep run(s) failed (finished runs are kept; rerun to retry):\n"
                           + "\n".join(errors))
    return table


def result_row(result: dict) -> dict:
    """One tidy row: identifiers, config fields, metrics, measured keep ratios, hardware numbers."""
    row = {"run_id": result.get("run_id"), "kind": result["kind"], "task": result["task"], "model": result["model"],
           "n_examples": result.get("n_examples"), "subset": result.get("subset"),
           "metric": result["headline"]["name"], "value": result["headline"]["value"]}
    for k, v in result["config"].items():
        row[f"config.{k}"] = json.dumps(v) if isinstance(v, (list, dict)) else v
    for k, v in result["metrics"].items():
        row[f"metric.{k}"] = v
    for k, v in result["kept"].items():
        row[f"kept.{k}"] = json.dumps(v) if isinstance(v, list) else v
    for k, v in (result.get("hardware") or {}).items():
        row[f"hw.{k}"] = v
    row["seconds"] = result.get("seconds")
    return row


def collect(out: str | os.PathLike, write: bool = True) -> pd.DataFrame:
    """Gather every result.json under `out` into one table; writes results.csv (and .parquet with pyarrow)."""
    out = Path(out)
    rows = [result_row(json.loads(p.read_text())) for p in sorted(out.rglob("result.json"))]
    table = pd.DataFrame(rows)
    if write and rows:
        atomic_write_text(out / "results.csv", table.to_csv(index=False))
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            pass
        else:
            import io

            buf = io.BytesIO()
            table.to_parquet(buf, index=False)
            atomic_write_bytes(out / "results.parquet", buf.getvalue())
    return table
