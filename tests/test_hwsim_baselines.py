"""A3 and MNNFast as cycle ranges at SpAtten-1/8's resources (spatten.hwsim.baselines, docs/hwsim.md)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from spatten import hwsim
from spatten.hwsim import baselines
from spatten.trace import Trace

ROOT = Path(__file__).resolve().parents[1]
D = 64


def one_row_trace(kv_len: int, keys: int, values: int, *, heads: int = 1, kv_heads: int | None = None,
                  stage: str = "generate", bits: int = 8) -> Trace:
    """`heads` heads of one layer; each reads `keys` of kv_len keys and `values` values at `bits`."""
    query_rows = 1 if stage == "generate" else kv_len
    records = [dict(stage=stage, step=0, layer=0, head=h, head_kept=True, d_head=D,
                    query_rows=query_rows, kv_len=kv_len, keys_fetched=keys, values_fetched=values,
                    k_msb_bits=bits, k_lsb_bits=-1, q_bits=bits, v_bits=bits, threshold=-1.0,
                    lsb_refetch_rows=0, accumulate_importance=False, rescale_importance=False,
                    topk_kind="none", topk_k=-1) for h in range(heads)]
    meta = {"heads": heads, "kv_heads": kv_heads or heads}
    return Trace.from_records(records, meta)


@pytest.mark.parametrize("preset", ["a3", "mnnfast"])
def test_baseline_presets_fetch_and_compute_everything_from_first_principles(preset):
    # One generation row over 100 keys of d = 64, whatever the pruned row kept. The baseline with its saving
    # off reads every key as 8 + 4 bits (1.5 B an element) and every value at 8 bits, appends one K and V:
    kv_len = 100
    report = hwsim.simulate(one_row_trace(kv_len, keys=50, values=25), preset, dense_baseline=False)
    assert report.dram_bytes_read == kv_len * D * 3 // 2 + kv_len * D
    assert report.dram_bytes_written == D * 3 // 2 + D
    # Q.K over every key, again for the 4-bit LSB pass, and P.V over every value: 3 x 100 x 64 MACs.
    assert report["macs"] == 3 * kv_len * D
    assert report["useful_macs"] == 2 * kv_len * D
    # SpAtten-1/8's resources: 2 HBM2 channels x 32 B per cycle, 2 x 64 multipliers.
    assert report["peak_dram_bytes_per_second"] / report["clock_hz"] == 64
    assert report["peak_macs_per_second"] / report["clock_hz"] == 128


def test_key_bytes_counts_every_key_once_per_kv_head():
    assert baselines.key_bytes(one_row_trace(100, 50, 25)) == 100 * D * 3 // 2
    mha = one_row_trace(100, 50, 25, heads=4)
    gqa = one_row_trace(100, 50, 25, heads=4, kv_heads=2)
    assert baselines.key_bytes(mha) == 4 * 100 * D * 3 // 2
    assert baselines.key_bytes(gqa) == baselines.key_bytes(mha) // 2


def test_range_is_ordered_and_its_ends_are_what_the_docs_say():
    trace = one_row_trace(512, 256, 128, heads=2, stage="summarize")
    for c in baselines.compare("tiny", [trace]):
        spatten = hwsim.simulate(trace, "spatten-1/8")
        assert c.spatten_cycles == spatten.cycles
        assert c.high_cycles == spatten.dense.cycles  # the preset is SpAtten-1/8's own dense run
        assert c.low_cycles == pytest.approx(baselines.key_bytes(trace) / 64)
        assert c.low_cycles <= c.all_kv_cycles <= c.high_cycles
        lo, hi = c.speedup_range
        assert 0 < lo < hi
        elo, ehi = c.energy_saving_range
        assert 0 < elo < ehi


def test_a_trace_that_neither_prunes_nor_quantizes_is_the_baselines_upper_end():
    # Unquantized (-1) and every key and value kept: SpAtten-1/8 runs exactly what the presets run.
    trace = one_row_trace(256, 256, 256, heads=2, stage="summarize", bits=-1)
    for c in baselines.compare("unpruned", [trace]):
        assert c.speedup_range[1] == pytest.approx(1.0, abs=0.01)


def test_paper_comparison_script_prints_the_papers_numbers_and_sources(data_dir, tmp_path):
    env = {**os.environ, "SPATTEN_DATA_DIR": str(data_dir)}
    csv = tmp_path / "comparison.csv"
    script = ROOT / "experiments" / "paper_comparison.py"
    out = subprocess.run([sys.executable, str(script), "--quick", "--csv", str(csv)], capture_output=True,
                         text=True, check=True, timeout=120, env=env).stdout
    rows = [line for line in out.splitlines() if line.startswith("| GPT-2-small")]
    assert len(rows) == 2
    assert "| A3 |" in rows[0] and "| 1.6 |" in rows[0]
    assert "| MNNFast |" in rows[1] and "| 3.0 |" in rows[1]
    for source in ("arXiv 2012.09852", "arXiv 2002.10941", "ISCA 2019", "assumed"):
        assert source in out
    assert csv.read_text().startswith("workload,baseline,speedup_low")
