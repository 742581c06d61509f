"""The SpAtten accelerator simulator, from Python.

    report = spatten.hwsim.simulate(trace, preset="spatten")     # trace: spatten.Trace, or a trace/CSV path
    report.cycles, report.seconds, report.dram_bytes, report.energy_joules, report.flops
    report.speedup_vs_dense, report.dram_reduction_vs_dense      # same hardware running the trace unpruned
    report.layers                                                # pandas DataFrame, one row per layer

The simulation runs in C++ (`spatten._hwsim`, no torch); a Trace's columns are handed over as numpy arrays.
"""

from __future__ import annotations

from spatten.hwsim.report import Report
from spatten.hwsim.runner import PresetError, components, list_presets, simulate, topk_cycles

__all__ = ["Report", "PresetError", "components", "list_presets", "simulate", "topk_cycles"]
