"""Report: what one simulation produced (a thin view over the simulator's JSON)."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from spatten.atomic import atomic_write_text


class Report:
    """Cycles, DRAM traffic, energy and per-layer / per-channel statistics of one simulation.

    `dense` is the report of the same hardware running the trace unpruned (None if that was not run).
    """

    def __init__(self, data: dict[str, Any]):
        self._data = data
        self.dense: Report | None = Report(data["dense"]) if "dense" in data else None

    # ---- headline numbers -------------------------------------------------------------------------------
    @property
    def preset(self) -> str:
        return self._data["preset"]

    @property
    def cycles(self) -> int:
        return int(self._data["cycles"])

    @property
    def seconds(self) -> float:
        return float(self._data["seconds"])

    @property
    def dram_bytes(self) -> int:
        return int(self._data["dram_bytes"])

    @property
    def dram_bytes_read(self) -> int:
        return int(self._data["dram_bytes_read"])

    @property
    def dram_bytes_written(self) -> int:
        """Attention outputs of summarization and the K/V each generation step appends."""
        return int(self._data["dram_bytes_written"])

    @property
    def dram_bytes_refetched(self) -> int:
        """Bytes read again because K/V exceeded the on-chip buffers (part of dram_bytes; docs/hwsim.md)."""
        return int(self._data["dram_bytes_refetched"])

    @property
    def energy_joules(self) -> float:
        return float(self._data["energy_joules"])

    @property
    def power_watts(self) -> float:
        return float(self._data["power_watts"])

    @property
    def flops(self) -> float:
        """FLOPs of the attention executed (2 x Q.K and P.V multiply-accumulates, recomputation excluded)."""
        return float(self._data["flops"])

    @property
    def flops_per_second(self) -> float:
        return float(self._data["flops_per_second"])

    @property
    def speedup_vs_dense(self) -> float | None:
        return self._data.get("speedup_vs_dense")

    @property
    def dram_reduction_vs_dense(self) -> float | None:
        return self._data.get("dram_reduction_vs_dense")

    @property
    def energy_reduction_vs_dense(self) -> float | None:
        return self._data.get("energy_reduction_vs_dense")

    @property
    def energy_breakdown(self) -> dict[str, float]:
        """Joules per part (mac, softmax, topk, kv_buffer_*, fetch_fifo, dram_*, leakage)."""
        return dict(self._data["energy_breakdown_joules"])

    @property
    def busy_fraction(self) -> dict[str, float]:
        """Fraction of the run each module was busy (DRAM: data bus; units: cycles doing work)."""
        return dict(self._data["busy_fraction"])

    # ---- tables ----------------------------------------------------------------------------------------
    @property
    def layers(self) -> pd.DataFrame:
        """One row per layer: cycles (its share of the total), requests, keys/values fetched, DRAM bytes, MACs."""
        return pd.DataFrame(self._data["layers"]).set_index("layer", drop=False)

    @property
    def sequences(self) -> pd.DataFrame:
        """One row per sequence of a batch (trace v2): cycles when its last layer finished, requests, DRAM bytes."""
        return pd.DataFrame(self._data["sequences"]).set_index("sequence", drop=False)

    @property
    def channels(self) -> pd.DataFrame:
        """One row per DRAM channel: bytes read, transactions, row hits/misses/conflicts, activates, refreshes."""
        frame = pd.DataFrame(self._data["channels"])
        frame.index.name = "channel"
        return frame

    def to_dict(self) -> dict[str, Any]:
        """Everything, as plain Python data (a deep copy)."""
        return copy.deepcopy(self._data)

    def to_json(self, path: str | os.PathLike) -> Path:
        """Write the report as JSON, atomically."""
        return atomic_write_text(Path(path), json.dumps(self._data, indent=1, sort_keys=True) + "\n")

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __repr__(self) -> str:
        text = (f"Report(preset={self.preset!r}, cycles={self.cycles}, seconds={self.seconds:.4g}, "
                f"dram_bytes={self.dram_bytes}, energy_joules={self.energy_joules:.4g}, "
                f"TFLOP/s={self.flops_per_second / 1e12:.3g}")
        if self.speedup_vs_dense is not None:
            text += f", speedup_vs_dense={self.speedup_vs_dense:.3g}, dram_reduction={self.dram_reduction_vs_dense:.3g}"
        return text + ")"
