"""A3 and MNNFast next to SpAtten-1/8: the range of cycles each baseline must fall in.

docs/hwsim.md "A3 and MNNFast" has the sources. They give the two baselines' *mechanisms* but not the numbers
a cycle model needs (A3's candidates per query, MNNFast's skipped fraction, either datapath width), so neither
is simulated as a point. What they support is a range on SpAtten-1/8's resources (the 1/8 configuration was
built for the comparison with A3 and MNNFast: ../shared/notes/spatten-original.md section 7 [S]):

- **lower end**: the baseline's keys alone at the peak DRAM rate. Both read every key: MNNFast's zero-skipping
  needs every score to know which probabilities are small, and A3's candidate search runs over the whole key
  matrix; both save *computation* (abstracts: A3 approximation, MNNFast skipped output computation), not key
  reads. No schedule beats this, whatever compute or values it skips.
- **K+V** (printed, not a bound): every key and value the dense run reads, at the peak DRAM rate, all compute
  hidden: a baseline that saves compute only.
- **upper end**: the presets `a3` / `mnnfast`, i.e. SpAtten-1/8 running the trace dense: every key and value
  fetched and every product computed, the baseline with its saving off. ASSUMED: neither design overlaps
  fetch and compute worse than SpAtten's dense mode.

So SpAtten-1/8's speedup over each lies in [lower, upper] / SpAtten-1/8's cycles; the same for energy, with
the keys' DRAM read energy as the lower end. Keys count at the dense baseline's widths (8 + 4 bits,
docs/hwsim.md "Bit widths"): ASSUMED for both baselines.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spatten.hwsim.report import Report
from spatten.hwsim.runner import simulate
from spatten.trace import Trace

# The dense baseline fetches keys as an 8-bit pass plus a 4-bit LSB pass (docs/hwsim.md, "Bit widths").
DENSE_KEY_BITS = 12
SPATTEN_1_8 = "spatten-1/8"


@dataclass(frozen=True)
class Baseline:
    name: str
    preset: str
    paper_speedup: float  # SpAtten-1/8 over it (SpAtten abstract, arXiv 2012.09852)
    paper_energy_saving: float
    saves: str
    source: str


BASELINES = (
    Baseline("A3", "a3", 1.6, 1.4,
             "Q.K work outside its approximate candidates (and their softmax and P.V)",
             "Ham et al., HPCA 2020, arXiv 2002.10941 (abstract)"),
    Baseline("MNNFast", "mnnfast", 3.0, 3.2,
             "P.V work for probabilities below its zero-skipping threshold",
             "Jang et al., ISCA 2019 (abstract)"),
)


@dataclass(frozen=True)
class Comparison:
    """SpAtten-1/8 against one baseline on one workload (sums over the workload's traces)."""

    baseline: Baseline
    workload: str
    spatten_cycles: int
    low_cycles: float  # the baseline's keys alone at the peak DRAM rate
    all_kv_cycles: float  # every key and value the dense run reads, at the peak DRAM rate
    high_cycles: int  # the baseline with its saving off (its preset)
    spatten_joules: float
    low_joules: float  # the keys' DRAM read energy
    high_joules: float

    @property
    def speedup_range(self) -> tuple[float, float]:
        return self.low_cycles / self.spatten_cycles, self.high_cycles / self.spatten_cycles

    @property
    def speedup_if_values_fetched(self) -> float:
        """SpAtten's speedup over a baseline that reads every value too and hides all its compute."""
        return self.all_kv_cycles / self.spatten_cycles

    @property
    def energy_saving_range(self) -> tuple[float, float]:
        return self.low_joules / self.spatten_joules, self.high_joules / self.spatten_joules

    @property
    def paper_within(self) -> bool:
        low, high = self.speedup_range
        return low <= self.baseline.paper_speedup <= high


def key_bytes(trace: Trace) -> int:
    """Bytes of every key the dense run reads: all kv_len keys of every K/V head of every layer, 12-bit.

    One K fetch per (sequence, stage, step, layer, K/V head), as the simulator fetches them (GQA: shared).
    """
    rows = trace.rows
    heads = max(int(trace.meta.get("heads") or 0), int(rows["head"].max()) + 1)
    kv_heads = int(trace.meta.get("kv_heads") or 0)
    kv_heads = kv_heads if kv_heads and heads % kv_heads == 0 else heads
    groups = rows.groupby(["sequence", "stage", "step", "layer"], sort=False).agg(
        kv_len=("kv_len", "max"), d_head=("d_head", "max"))
    bits = groups["kv_len"].to_numpy(np.int64) * groups["d_head"].to_numpy(np.int64) * DENSE_KEY_BITS
    return int(kv_heads * int(np.sum(bits)) // 8)


def _cycles_at_peak(nbytes: float, report: Report) -> float:
    return nbytes / (report["peak_dram_bytes_per_second"] / report["clock_hz"])


def _read_joules(dense: Report, nbytes: int) -> float:
    """DRAM read energy of `nbytes` at the per-byte read energy the dense run paid (activations excluded)."""
    return dense.energy_breakdown["dram_read"] / dense.dram_bytes_read * nbytes


def compare(workload: str, traces: list[Trace], baselines=BASELINES,
            preset: str = SPATTEN_1_8) -> list[Comparison]:
    """SpAtten (`preset`, on the pruned traces) against each baseline's range on the same traces."""
    spatten = [simulate(t, preset, dense_baseline=True) for t in traces]
    keys = [key_bytes(t) for t in traces]
    low_cycles = sum(_cycles_at_peak(k, r) for k, r in zip(keys, spatten))
    all_kv_cycles = sum(_cycles_at_peak(r.dense.dram_bytes_read, r) for r in spatten)
    low_joules = sum(_read_joules(r.dense, k) for k, r in zip(keys, spatten))
    out = []
    for b in baselines:
        runs = [simulate(t, b.preset, dense_baseline=False) for t in traces]
        out.append(Comparison(b, workload, sum(r.cycles for r in spatten), low_cycles, all_kv_cycles,
                              sum(r.cycles for r in runs), sum(r.energy_joules for r in spatten), low_joules,
                              sum(r.energy_joules for r in runs)))
    return out
