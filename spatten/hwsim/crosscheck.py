"""An analytical reference for the simulator: bounds that any schedule must respect, and bert.cpp's additive model.

- lower bound: max(DRAM time, MAC time) -- the simulator's own bytes at the peak DRAM rate, its own MACs
  (recomputation included) at the peak MAC rate; no schedule beats the busier of the two.
- additive model: the official `bert.cpp` "fast behavior model" (spatten-original.md section 4.1), which charges
  every layer DRAM + Fill + Drain + TopK with no overlap at all, computed on the simulator's own bytes and
  adapted to what the traces hold:
    * one query per generation row (Fill = query rows x ceil(keys / p), p = multipliers / d keys per cycle);
    * rows whose keys take an LSB pass recompute Q.K (Fill again for those rows);
    * local value pruning runs the quick-select per query row (bert.cpp has none);
    * a cascade top-k that keeps every entry costs nothing (as in the simulator).
  bert.cpp's constants are kept: drain = 103 + b cycles once per layer, top-k = b + passes + ceil(k / p).
A simulator that overlaps DRAM and compute must land between the two (docs/hwsim.md, "Cross-check").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from spatten.hwsim.report import Report
from spatten.hwsim.runner import topk_cycles
from spatten.trace import Trace

# bert.cpp: drain = (1 + 1 + 9) K-mat + (7 + 21 + 23 + 29 + 7) softmax + 1 requant + 1 top-k + (1 + 1 + 1) V-mat
BERT_CPP_DRAIN = 103


@dataclass(frozen=True)
class CrossCheck:
    simulated: int
    dram_cycles: float
    mac_cycles: float
    additive_cycles: float

    @property
    def lower_bound(self) -> float:
        return max(self.dram_cycles, self.mac_cycles)

    @property
    def within(self) -> bool:
        return self.lower_bound <= self.simulated <= self.additive_cycles


@lru_cache(maxsize=None)
def _quickselect(n: int, k: int, parallelism: int, seed: int) -> int:
    # bert.cpp draws random integers (mt19937 seeded by the head); we draw ours with NumPy the same way.
    values = np.random.default_rng(seed).integers(0, 1 << 20, size=n)
    return topk_cycles(values, k, parallelism)[0]


def _key_passes(k_msb: int) -> bool:
    """Keys wider than 8 bits (and -1) take a forced LSB pass (docs/hwsim.md, "Bit widths")."""
    return k_msb < 0 or k_msb > 8


def additive_cycles(trace: Trace, report: Report, *, multipliers: int = 512, topk_parallelism: int = 16) -> float:
    """bert.cpp's per-layer sum DRAM + Fill + Drain + TopK over the trace, DRAM from the report's own bytes."""
    rows = trace.rows[trace.rows["head_kept"]]
    total = report.dram_bytes / (report["peak_dram_bytes_per_second"] / report["clock_hz"])
    for _, group in rows.groupby(["sequence", "stage", "step", "layer"], sort=False):
        p = max(1, multipliers // int(group["d_head"].iloc[0]))
        b = np.ceil(group["keys_fetched"].to_numpy() / p)
        q = group["query_rows"].to_numpy()
        refetch = np.where(group["k_msb_bits"].map(_key_passes), q,
                           np.where(group["k_lsb_bits"] > 0, group["lsb_refetch_rows"], 0))
        total += float(np.sum(q * b + refetch * b))  # Fill (+ the LSB recompute)
        total += BERT_CPP_DRAIN + float(b[-1])  # Drain, once per layer
        for rec in group.itertuples():
            if 0 < rec.values_fetched < rec.keys_fetched:  # local value pruning, per query row
                total += rec.query_rows * _quickselect(int(rec.keys_fetched), int(rec.values_fetched),
                                                       topk_parallelism, int(rec.head))
            if rec.topk_kind != "none":
                n = int(rec.kv_len if rec.stage == "generate" else rec.keys_fetched)
                if rec.topk_kind == "head":
                    n = int(group["head"].max() + 1)
                if 0 <= rec.topk_k < n:
                    total += (math.ceil(rec.keys_fetched / p) + _quickselect(n, int(rec.topk_k), topk_parallelism,
                                                                             int(rec.head))
                              + math.ceil(rec.topk_k / p))
    return total


def cross_check(trace: Trace, report: Report, *, multipliers: int = 512, topk_parallelism: int = 16) -> CrossCheck:
    """The simulated cycles of `report` (a run of `trace`) against the bounds and the additive model."""
    clock = report["clock_hz"]
    dram_cycles = report.dram_bytes / (report["peak_dram_bytes_per_second"] / clock)
    mac_cycles = report["macs"] / (report["peak_macs_per_second"] / clock)
    return CrossCheck(report.cycles, dram_cycles, mac_cycles,
                      additive_cycles(trace, report, multipliers=multipliers, topk_parallelism=topk_parallelism))
