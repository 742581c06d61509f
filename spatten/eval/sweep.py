"""Sweeps: a YAML grid over tasks x models x SpAttenConfig fields, run resumably on local processes or Ray.

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

The whole file is checked before any model loads: keys, tasks, models, options against the runners'
signatures, the preset, every grid point through SpAttenConfig, and duplicates after normalisation.

Each run gets its own directory holding config.yaml, trace.csv, hardware.json and, written last,
result.json (which embeds the run's spec). Runs compute in a private temporary directory (on a worker
process or a Ray node) and hand their files back; only the driver writes into the sweep directory, each file
atomically, so a killed worker or driver leaves no half-written run. A run whose result.json exists with the
same spec is skipped, so rerunning an interrupted sweep only does the missing runs. One sweep at a time may
use a directory (an advisory lock). results.csv holds exactly the runs of the current spec.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import json
import os
import re
import signal
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd

from spatten.atomic import atomic_write_bytes, atomic_write_text, check_writable_dir

KNOWN_KEYS = {"out", "preset", "simulate", "tasks", "models", "grid", "options", "seed"}
DEFAULT_MODELS = {"encoder": ["minilm"], "decoder": ["stories260K"]}
MODEL_ALIASES = {"minilm": "minilm", "all-minilm-l6-v2": "minilm", "stories260k": "stories260K",
                 "stories260k-llama2c": "stories260K"}
RUN_FILES = ("config.yaml", "trace.csv", "hardware.json", "result.json")  # result.json last: it marks done
LOCK_NAME = ".sweep.lock"
ENGINES = ("local", "ray")


class SweepError(ValueError):
    """The sweep file is malformed; the message names the key."""


class SweepLocked(RuntimeError):
    """Another sweep holds the directory's lock."""


class SweepRunsFailed(RuntimeError):
    """Some runs of a sweep raised; the finished ones are kept and a rerun retries the rest."""


class SweepInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the sweep; finished runs and results.csv were written first."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class SweepWarning(UserWarning):
    """A file of the sweep directory was unreadable and is treated as missing."""


def task_kind(task: str) -> str:
    """'glue' for GLUE tasks, 'lm' for language-modelling corpora (and 'stories')."""
    return _normalise_task(task)[0]


def _normalise_task(task: str) -> tuple[str, str]:
    """(kind, canonical name) of a task, so 'STS-B' and 'sts-b' are one task."""
    from spatten.eval.runners import STORIES_CORPUS
    from spatten.eval.tasks import LM_CORPORA, glue_task

    if task.lower() == STORIES_CORPUS:
        return "lm", STORIES_CORPUS
    if task.lower() in LM_CORPORA:
        return "lm", LM_CORPORA[task.lower()].name
    try:
        return "glue", glue_task(task).name
    except KeyError:
        raise SweepError(f"tasks: {task!r} is neither a GLUE task, an LM corpus nor 'stories'") from None


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
    """Parse and fully check a sweep file (or an already-loaded dict); SweepError names the first problem."""
    doc, default_out = _read_doc(source)
    unknown = set(doc) - KNOWN_KEYS
    if unknown:
        raise SweepError(f"unknown sweep keys {sorted(unknown)}; known: {sorted(KNOWN_KEYS)}")
    preset, simulate, seed = doc.get("preset", "spatten"), doc.get("simulate", True), doc.get("seed", 0)
    if not isinstance(simulate, bool):
        raise SweepError(f"`simulate` must be true or false, got {simulate!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SweepError(f"`seed` must be an integer, got {seed!r}")
    if simulate:
        from spatten.eval.checks import check_preset

        try:
            check_preset(str(preset))
        except ValueError as err:
            raise SweepError(f"preset: {err}") from None
    tasks = _tasks(doc.get("tasks"))
    configs = _grid_configs(doc.get("grid"))
    options = _options(doc.get("options"))
    models = doc.get("models", DEFAULT_MODELS)
    runs = []
    for kind, task in tasks:
        for model in _models_for(models, "encoder" if kind == "glue" else "decoder"):
            for config in configs:
                runs.append(RunSpec(kind, task, model, config, dict(options.get(kind) or {}), str(preset),
                                    simulate, seed))
    out_dir = out if out is not None else doc.get("out", default_out)
    if not isinstance(out_dir, (str, os.PathLike)):
        raise SweepError(f"`out` must be a directory path, got {out_dir!r}")
    return Sweep(Path(out_dir), runs)


def _read_doc(source) -> tuple[dict, Path]:
    import yaml

    if isinstance(source, dict):
        doc, default_out = source, Path("results/sweeps/sweep")
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"sweep file {path} not found")
        try:
            doc = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise SweepError(f"{path} is not valid YAML: {' '.join(str(err).split())}") from None
        default_out = Path("results/sweeps") / path.stem
    if not isinstance(doc, dict):
        raise SweepError("a sweep file must be a YAML mapping with at least `tasks` and `grid`")
    return doc, default_out


def _tasks(tasks) -> list[tuple[str, str]]:
    if not tasks or not isinstance(tasks, list):
        raise SweepError("`tasks` must be a non-empty list of task names")
    seen: dict[tuple[str, str], Any] = {}
    for task in tasks:
        key = _normalise_task(str(task))
        if key in seen:
            raise SweepError(f"tasks: {seen[key]!r} and {task!r} are the same task")
        seen[key] = task
    return list(seen)


def _grid_configs(grid) -> list[dict]:
    """Every grid point as the SpAttenConfig-normalised values of the grid's fields (1 and 1.0 are one point)."""
    from spatten import SpAttenConfig

    if not isinstance(grid, dict) or not grid:
        raise SweepError("`grid` must map at least one SpAttenConfig field to a value or a list of values "
                         "(e.g. token_keep: [1.0, 0.5])")
    fields = set(SpAttenConfig().to_dict())
    unknown = set(grid) - fields
    if unknown:
        raise SweepError(f"grid: {sorted(unknown)} are not SpAttenConfig fields (fields: {sorted(fields)})")
    keys = sorted(grid)
    axes = [grid[k] if isinstance(grid[k], list) else [grid[k]] for k in keys]
    for key, axis in zip(keys, axes):
        if not axis:
            raise SweepError(f"grid: {key} has an empty list of values")
    configs: dict[str, dict] = {}
    for values in itertools.product(*axes):
        point = dict(zip(keys, values))
        try:
            full = SpAttenConfig.from_dict(point).to_dict()
        except (ValueError, TypeError) as err:
            raise SweepError(f"grid point {point}: {err}") from None
        config = {k: full[k] for k in keys}
        key = json.dumps(config, sort_keys=True)
        if key in configs:
            raise SweepError(f"grid: {configs[key]} and {point} are the same configuration")
        configs[key] = point
    return [json.loads(k) for k in configs]


def _options(options) -> dict:
    from spatten.eval.checks import check_run_options

    options = options or {}
    if not isinstance(options, dict) or set(options) - {"glue", "lm"}:
        raise SweepError("`options` must be a mapping with keys 'glue' and/or 'lm'")
    for kind, opts in options.items():
        if not isinstance(opts or {}, dict):
            raise SweepError(f"options.{kind} must be a mapping of runner arguments")
        try:
            check_run_options(kind, opts or {}, where=f"options.{kind}")
        except ValueError as err:
            raise SweepError(str(err)) from None
    return options


def _models_for(models, kind: str) -> list[str]:
    if isinstance(models, dict):
        unknown = set(models) - {"encoder", "decoder"}
        if unknown:
            raise SweepError(f"models: unknown keys {sorted(unknown)}; use encoder and decoder")
        names = models.get(kind) or DEFAULT_MODELS[kind]
    elif isinstance(models, list) and models:
        names = models
    else:
        raise SweepError("`models` must be a non-empty list or a mapping {encoder: [...], decoder: [...]}")
    if not isinstance(names, list):
        names = [names]
    from spatten.models import check_model

    out = []
    for name in map(str, names):
        try:
            check_model(name, kind)
        except (FileNotFoundError, ValueError) as err:
            raise SweepError(f"models: {err}") from None
        canonical = MODEL_ALIASES.get(name.lower()) or str(Path(name).expanduser().resolve())
        if canonical in out:
            raise SweepError(f"models: {name!r} is listed twice")
        out.append(canonical)
    return out


# ---- the run directory ----------------------------------------------------------------------------------

def read_result(path: Path) -> dict | None:
    """A result.json as a dict; None (with a SweepWarning naming the file) if it is missing or corrupt."""
    try:
        result = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        warnings.warn(f"{path}: unreadable ({type(err).__name__}); the run counts as not done", SweepWarning,
                      stacklevel=2)
        return None
    if not isinstance(result, dict) or "spec" not in result:
        warnings.warn(f"{path}: not a run result; the run counts as not done", SweepWarning, stacklevel=2)
        return None
    return result


def library_versions() -> dict[str, str]:
    """The libraries whose code decides a run's numbers; a run made under others is not reused."""
    import torch
    import transformers

    import spatten

    return {"spatten": spatten.__version__, "torch": torch.__version__, "transformers": transformers.__version__}


def _finished(run_dir: Path, spec: RunSpec) -> dict | None:
    result = read_result(Path(run_dir) / "result.json")
    if result is None or result.get("spec") != json.loads(json.dumps(spec.to_dict())):
        return None
    return result if result.get("versions") == library_versions() else None


def is_done(run_dir: Path, spec: RunSpec) -> bool:
    """A run is finished when its result.json exists, parses and was made from the same spec by the same versions
    of spatten, torch and transformers (a result from other code is recomputed, not mixed into the table)."""
    return _finished(run_dir, spec) is not None


def _clean_stale_temp_files(run_dir: Path) -> None:
    # temp files of atomic writes whose driver was killed before the rename; only called under the lock
    for tmp in run_dir.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def sweep_lock(out: Path):
    """Hold the directory's advisory lock for the duration; SweepLocked names the holder if it is taken."""
    path = out / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise SweepLocked(f"another sweep (pid {holder}) is running in {out}; wait for it to finish or "
                              "use another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


# ---- running ------------------------------------------------------------------------------------------

_MODEL_CACHE: dict[tuple[str, str], Any] = {}


def compute_run(spec_dict: dict) -> dict[str, bytes]:
    """Run one spec in this process (models are cached per process); returns its files by name.

    The runner writes into a private temporary directory, so nothing lands in the sweep directory until the
    driver writes the returned files; this is what the local workers and the Ray tasks execute.
    """
    from spatten.eval.checks import runner
    from spatten.models import load_model

    spec = RunSpec(**spec_dict)
    kind = "encoder" if spec.kind == "glue" else "decoder"
    key = (spec.model, kind)
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = load_model(spec.model, kind=kind)
    with tempfile.TemporaryDirectory(prefix="spatten-run-") as tmp:
        runner(spec.kind)(spec.task, _MODEL_CACHE[key], spec.config, preset=spec.preset, simulate=spec.simulate,
                          out_dir=tmp, seed=spec.seed,
                          annotate={"spec": spec.to_dict(), "run_id": spec.run_id, "versions": library_versions()},
                          **spec.options)
        return {name: (Path(tmp) / name).read_bytes() for name in RUN_FILES if (Path(tmp) / name).is_file()}


def write_run_files(run_dir: Path, files: dict[str, bytes]) -> None:
    """Write a run's files atomically, result.json last."""
    for name in sorted(files, key=lambda n: n == "result.json"):
        atomic_write_bytes(run_dir / name, files[name])


# An engine runs specs and calls report(spec, files, error) for each; report returns False to stop the
# engine from starting more runs (the running ones still report).
Report = Callable[["RunSpec", "dict[str, bytes] | None", "BaseException | None"], bool]


@contextlib.contextmanager
def _stop_signals():
    """SIGTERM (and SIGINT) raise SweepInterrupted in the main thread, so the driver flushes before exiting."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise SweepInterrupted(signum)

    before = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def run_sweep(sweep: Sweep | str | os.PathLike | dict, *, workers: int = 1, progress: bool = True,
              out: str | os.PathLike | None = None, keep_going: bool = False, engine: str = "local",
              address: str | None = None, **engine_options) -> pd.DataFrame:
    """Run every unfinished run of the sweep, then return (and write) the table of the spec's runs.

    engine "local": workers > 1 spreads runs over that many spawned processes (one torch thread each),
    which die with this process; workers == 1 runs in this process. engine "ray": one Ray task per run on
    the cluster at `address` (None starts a local one); engine_options go to spatten.eval.sweep_ray.
    The first failed run stops the sweep (runs already going finish and are kept) unless keep_going;
    either way SweepRunsFailed lists the failures at the end.
    """
    from tqdm.auto import tqdm

    if not isinstance(sweep, Sweep):
        sweep = load_sweep(sweep, out)
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    check_writable_dir(sweep.out)
    errors: list[str] = []
    with sweep_lock(sweep.out), _stop_signals():
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

        def report(spec: RunSpec, files, error) -> bool:
            if error is None:
                write_run_files(sweep.run_dir(spec), files)
                bar.update()
                return True
            errors.append(f"{spec.run_id}: {type(error).__name__}: {' '.join(str(error).split())}")
            return keep_going

        try:
            if engine == "local":
                from spatten.eval.sweep_local import run_local

                run_local(todo, report, workers)
            else:
                from spatten.eval.sweep_ray import run_ray

                run_ray(todo, report, address=address, progress=progress, **engine_options)
        finally:
            bar.close()
            table = collect(sweep.out, runs=sweep.runs)  # flush what is done, also when interrupted
    if errors:
        not_run = len(sweep.runs) - len(table) - len(errors)
        raise SweepRunsFailed(f"{len(errors)} sweep run(s) failed" + (f", {not_run} not started" if not_run else "")
                              + " (finished runs are kept; rerun to retry):\n" + "\n".join(errors))
    return table


# ---- the table ----------------------------------------------------------------------------------------

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
    row["wall_seconds"] = result.get("wall_seconds", result.get("seconds"))  # "seconds" before 0.1.1
    row["spatten_version"] = (result.get("versions") or {}).get("spatten")
    return row


def _spec_runs(out: Path) -> list[RunSpec] | None:
    """The runs of the spec last run in `out` (its sweep.json), or None without one."""
    try:
        return [RunSpec(**d) for d in json.loads((out / "sweep.json").read_text())]
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as err:
        raise SweepError(f"{out / 'sweep.json'} is unreadable ({type(err).__name__}: {err})") from None


def collect(out: str | os.PathLike, write: bool = True, runs: Iterable[RunSpec] | None = None) -> pd.DataFrame:
    """The table of the finished runs of `runs` (default: the spec in out/sweep.json; without one, every
    result.json under `out`). With write, also results.csv (and .parquet with pyarrow) in `out`."""
    out = Path(out)
    runs = list(runs) if runs is not None else _spec_runs(out)
    if runs is None:
        results = [read_result(p) for p in sorted(out.rglob("result.json"))]
    else:
        results = [_finished(out / r.run_id, r) for r in runs]
    rows = [result_row(r) for r in results if r is not None]
    table = pd.DataFrame(rows)
    if write and not rows:
        for stale in ("results.csv", "results.parquet"):  # they described runs that are not in this spec
            (out / stale).unlink(missing_ok=True)
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
