"""simulate(): hand a Trace (numpy columns) or a trace file to the C++ simulator and wrap its report."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import yaml

from spatten._native import load
from spatten.hwsim.report import Report
from spatten.trace import COLUMN_NAMES, Trace, TraceFormatError

_STAGE_CODES = {"summarize": 0, "generate": 1}
_TOPK_CODES = {"none": 0, "token": 1, "head": 2}
_FLOAT_COLUMNS = {"threshold"}
_CODED_COLUMNS = {"stage": _STAGE_CODES, "topk_kind": _TOPK_CODES}


class PresetError(ValueError):
    """A preset is unknown, malformed, or lacks a parameter (the message names it)."""


def _native():
    return load("_hwsim")


def _preset_dirs() -> list[str]:
    # Installed presets sit next to the compiled module; the module also knows the source tree's copy.
    here = Path(_native().__file__).parent / "presets"
    return [str(here)] if here.is_dir() else []


def list_presets() -> list[str]:
    """Names of the presets found ("dense", "spatten", "spatten-1/8", ...)."""
    return list(_native().list_presets(_preset_dirs()))


def components() -> list[tuple[str, str]]:
    """(name, one-line description) of every simulated component."""
    return [tuple(c) for c in _native().components()]


def topk_cycles(values, k: int, parallelism: int = 16) -> tuple[int, int]:
    """Cycles and passes of the quick-select top-k engine on given values (unsigned integers)."""
    arr = np.asarray(values)
    if arr.ndim != 1 or (arr.size and (arr.min() < 0 or not np.issubdtype(arr.dtype, np.integer))):
        raise ValueError("values must be a 1-D array of non-negative integers")
    if k < 0 or parallelism <= 0:
        raise ValueError("k must be >= 0 and parallelism > 0")
    return tuple(_native().topk_cycles(arr.astype(np.uint32).tolist(), int(k), int(parallelism)))


def _int_column(trace: Trace, name: str) -> np.ndarray:
    values = trace.rows[name].to_numpy()
    if values.dtype == bool or np.issubdtype(values.dtype, np.integer):
        return values.astype(np.int64)
    as_float = np.asarray(values, dtype=float)  # raises on strings
    bad = ~np.isfinite(as_float) | (as_float != np.round(as_float)) | (np.abs(as_float) > 2**53)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise TraceFormatError(f"trace row {row}: column {name} = {values[row]!r} is not an integer")
    return as_float.astype(np.int64)


def _columns(trace: Trace) -> dict[str, np.ndarray]:
    columns: dict[str, np.ndarray] = {}
    for name in COLUMN_NAMES:
        if name in _CODED_COLUMNS:
            codes = trace.rows[name].map(_CODED_COLUMNS[name])
            if codes.isna().any():
                row = int(np.flatnonzero(codes.isna().to_numpy())[0])
                raise TraceFormatError(f"trace row {row}: {name} = {trace.rows[name].iloc[row]!r} is not one of "
                                       f"{sorted(_CODED_COLUMNS[name])}")
            columns[name] = codes.to_numpy(dtype=np.int64)
        elif name in _FLOAT_COLUMNS:
            try:
                columns[name] = trace.rows[name].to_numpy(dtype=np.float64)
            except (TypeError, ValueError) as err:
                raise TraceFormatError(f"column {name} is not numeric ({err})") from None
        else:
            try:
                columns[name] = _int_column(trace, name)
            except (TypeError, ValueError) as err:
                if isinstance(err, TraceFormatError):
                    raise
                raise TraceFormatError(f"column {name} is not numeric ({err})") from None
    return columns


def simulate(trace: Trace | str | os.PathLike, preset: str = "spatten", *, dense_baseline: bool = True,
             preset_file: str | os.PathLike | None = None,
             overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Report:
    """Replay `trace` on the accelerator described by `preset` and return a Report.

    trace: a spatten.Trace, or the path of a native trace file or an official SpAtten workload CSV.
    preset: a preset name (see list_presets()); preset_file: a YAML preset file instead.
    overrides: fields merged over the preset, e.g. {"hardware": {"topk_parallelism": 1}}.
    dense_baseline: also run the trace unpruned on the same hardware (Report.dense, speedup_vs_dense, ...).
    Raises TraceFormatError for a malformed trace and PresetError for a bad preset (both ValueError).
    """
    native = _native()
    dirs = _preset_dirs()
    file_arg = os.fspath(preset_file) if preset_file is not None else ""
    override_text = yaml.safe_dump(dict(overrides)) if overrides else ""
    try:
        if isinstance(trace, Trace):
            meta = json.dumps(trace.meta, sort_keys=True, default=str)
            text = native.simulate_columns(_columns(trace), len(trace), meta, preset, file_arg, dirs, override_text,
                                           dense_baseline)
        elif isinstance(trace, (str, os.PathLike)):
            text = native.simulate_file(os.fspath(trace), preset, file_arg, dirs, override_text, dense_baseline)
        else:
            raise TypeError(f"trace must be a spatten.Trace or a path, not {type(trace).__name__}")
    except native.TraceError as err:
        raise TraceFormatError(str(err)) from None
    except native.ConfigError as err:
        raise PresetError(str(err)) from None
    return Report(json.loads(text))
