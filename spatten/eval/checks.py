"""Checks that run before any model loads: runner options, simulator presets, output directories.

A typo or an impossible value should cost a second, not a model load or a whole evaluation; the runners,
the sweep loader and the CLI all call these, so the three agree on what is valid.
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping

# Runner arguments a sweep sets itself (from its own keys), so they are not `options`.
SWEEP_CONTROLLED = frozenset({"task", "data", "model", "config", "preset", "simulate", "out_dir", "seed",
                              "annotate", "windows", "progress"})

# Integer options and their smallest valid value; None is allowed where the runner documents it.
MINIMUM = {"n_examples": 1, "batch_size": 1, "max_length": 2, "head_train": 2, "max_tokens": 2, "window": 2,
           "stride": 1, "threads": 1}
NONE_ALLOWED = {"n_examples", "threads"}


def runner(kind: str):
    from spatten.eval.runners import run_glue, run_lm

    if kind not in ("glue", "lm"):
        raise ValueError(f"kind must be 'glue' or 'lm', got {kind!r}")
    return run_glue if kind == "glue" else run_lm


def runner_defaults(kind: str) -> dict[str, Any]:
    """Keyword arguments a sweep may set for runs of `kind`, with the runner's defaults."""
    params = inspect.signature(runner(kind)).parameters.values()
    return {p.name: p.default for p in params if p.name not in SWEEP_CONTROLLED and p.default is not p.empty}


def check_run_options(kind: str, options: Mapping[str, Any], where: str = "options") -> None:
    """ValueError naming the first unknown option or out-of-range value of a `kind` ("glue"/"lm") run."""
    known = runner_defaults(kind)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown {kind} option(s) {unknown}; known: {sorted(known)}")
    merged = {**known, **options}
    for name, minimum in MINIMUM.items():
        if name not in merged:
            continue
        value = merged[name]
        if value is None and name in NONE_ALLOWED:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{where}: {name} must be an integer >= {minimum}, got {value!r}")
    if kind == "lm" and merged["stride"] >= merged["window"]:
        raise ValueError(f"{where}: stride must be smaller than window ({merged['window']}), got {merged['stride']}")


def check_preset(preset: str) -> str:
    """The preset name if the simulator knows it; ValueError listing the known ones otherwise."""
    from spatten.eval.hardware import HardwareUnavailable

    try:
        from spatten import hwsim

        known = hwsim.list_presets()
    except Exception as err:  # ImportError, or a broken native module
        raise HardwareUnavailable(f"spatten.hwsim is not available ({type(err).__name__}: {err}); "
                                  "run without hardware simulation or rebuild with `make build`") from err
    if preset not in known:
        raise ValueError(f"unknown simulator preset {preset!r}; known: {sorted(known)}")
    return preset
