"""What a run did (kept tokens / heads / values, read from its trace) and what it would cost on SpAtten.

Both summaries are plain dicts so they sit side by side with the accuracy metric in one result.
"""

from __future__ import annotations

from typing import Any


class HardwareUnavailable(RuntimeError):
    """The simulator (spatten.hwsim) could not be imported or run."""


def kept_summary(trace) -> dict[str, Any]:
    """Measured keep ratios of a trace: keys fetched / KV length, kept heads / heads, values fetched / KV length.

    Work counts only for heads that ran (head_kept); ratios are weighted by KV length, so they read as
    "fraction of the dense attention traffic that remained".
    """
    rows = trace.rows
    if len(rows) == 0:
        raise ValueError("the trace is empty: the patched model recorded no attention work")
    kept = rows[rows["head_kept"]]
    kv_total = float(rows["kv_len"].sum())
    per_layer = (rows.assign(keys=rows["keys_fetched"].where(rows["head_kept"], 0))
                 .groupby("layer")[["keys", "kv_len"]].sum())
    return {
        "token_keep_measured": float(kept["keys_fetched"].sum()) / kv_total if kv_total else 1.0,
        "head_keep_measured": float(rows["head_kept"].mean()),
        "value_keep_measured": float(kept["values_fetched"].sum()) / kv_total if kv_total else 1.0,
        "lsb_refetch_rate": float(kept["lsb_refetch_rows"].sum()) / max(1.0, float(kept["query_rows"].sum())),
        "token_keep_per_layer": [float(k) / float(n) if n else 1.0
                                 for k, n in zip(per_layer["keys"], per_layer["kv_len"])],
        "trace_rows": int(len(rows)),
    }


def simulate(trace, preset: str = "spatten"):
    """Run the simulator with the dense baseline; returns the Report (see docs/contracts.md)."""
    try:
        from spatten import hwsim
    except Exception as err:  # ImportError, or a broken native module
        raise HardwareUnavailable(f"spatten.hwsim is not available ({type(err).__name__}: {err}); "
                                  "run without hardware simulation or rebuild with `make build`") from err
    return hwsim.simulate(trace, preset, dense_baseline=True)


HARDWARE_KEYS = ("cycles", "seconds", "dram_bytes", "energy_joules", "speedup_vs_dense", "dram_reduction_vs_dense",
                 "energy_reduction_vs_dense")


def hardware_summary(report, preset: str) -> dict[str, Any]:
    """The headline numbers of a Report, plus the preset name."""
    full = report.to_dict()
    missing = [k for k in HARDWARE_KEYS if k not in full]
    if missing:
        raise HardwareUnavailable(f"the simulator report lacks {missing} (contract: docs/contracts.md)")
    out = {k: full[k] for k in HARDWARE_KEYS}
    out["preset"] = preset
    return out
