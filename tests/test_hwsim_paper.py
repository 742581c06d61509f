"""Paper targets (HPCA 2021) that the simulator reproduces within 15 %, and the ones it does not, pinned to
their documented direction (README.md, "The accelerator simulator" explains each)."""

from __future__ import annotations

import pytest

from spatten import hwsim
from spatten.hwsim import paper


@pytest.fixture(scope="module")
def bert_reports():
    return [hwsim.simulate(paper.bert_trace(n)) for n in paper.GLUE_LIKE_LENGTHS]


def test_bert_throughput_within_15_percent_of_1_61_tflops(bert_reports):
    tflops = sum(r.flops_per_second for r in bert_reports) / len(bert_reports) / 1e12
    assert tflops == pytest.approx(paper.PAPER["bert_tflops"], rel=0.15)
    # and never above the 2.048 TFLOP/s peak of 1,024 multipliers at 1 GHz
    assert all(r.flops_per_second <= 2.048e12 for r in bert_reports)


def test_gpt2_small_dram_reduction_within_15_percent_of_10x(workloads_dir):
    report = hwsim.simulate(workloads_dir / paper.OFFICIAL_PRUNED["gpt2-small"])
    assert report.dram_reduction_vs_dense == pytest.approx(paper.PAPER["dram_reduction"], rel=0.15)
    # reads alone: the official baseline trace's 743.5 MB over the pruned trace's 82.4 MB, the quoted 9.0x
    reads = report.dense.dram_bytes_read / report.dram_bytes_read
    assert reads == pytest.approx(paper.PAPER["dram_reduction_gpt2_small_fetch_counts"], rel=0.01)


def test_gpt2_throughput_and_power(workloads_dir):
    # With every layer waiting for the previous one's outputs (docs/hwsim.md) both official traces land within
    # 15 % of 0.43 TFLOP/s; before, the small trace ran ~1.3x faster because its layers overlapped.
    small = hwsim.simulate(workloads_dir / paper.OFFICIAL_PRUNED["gpt2-small"], dense_baseline=False)
    assert small.power_watts == pytest.approx(paper.PAPER["power_w"], rel=0.15)
    assert small.flops_per_second / 1e12 == pytest.approx(paper.PAPER["gpt2_tflops"], rel=0.15)
    medium = hwsim.simulate(workloads_dir / paper.OFFICIAL_PRUNED["gpt2-medium"], dense_baseline=False)
    assert medium.flops_per_second / 1e12 == pytest.approx(paper.PAPER["gpt2_tflops"], rel=0.15)


def test_more_than_16_comparators_give_little_further_gain(workloads_dir):
    # Paper: the 16-comparator engine matches the Q.K rate; more comparators do not help. Ours gains a little
    # (under 15 %) because each layer waits for its last head, whose local top-k is then on the critical path.
    trace = paper.Trace.from_official_csv(workloads_dir / paper.OFFICIAL_PRUNED["gpt2-small"])
    p16 = hwsim.simulate(trace, dense_baseline=False)
    p64 = hwsim.simulate(trace, dense_baseline=False, overrides={"hardware": {"topk_parallelism": 64}})
    assert 0.85 * p16.cycles <= p64.cycles <= p16.cycles
    # ... whereas the RTL's one-row-at-a-time QuickSelect would be the bottleneck
    serial = hwsim.simulate(trace, dense_baseline=False, overrides={"hardware": {"topk_pipelined": False}})
    assert serial.cycles > 1.5 * p16.cycles


def test_speedup_breakdown_within_15_percent(workloads_dir):
    # The old expectations (top-k > 3x, quantization < 1.5x) encoded two modelling errors: rows serialized on
    # the top-k engine, and quantization was measured against 12-bit K/V although the paper's "further 5.1x
    # fewer DRAM accesses by quantization" implies 32-bit.
    small = paper.Trace.from_official_csv(workloads_dir / paper.OFFICIAL_PRUNED["gpt2-small"])
    b = paper.speedup_breakdown(small)
    assert b.quantization_dram_reduction == pytest.approx(paper.PAPER["quantization_dram_reduction"], rel=0.15)
    # 2.2x, not 2.8x: a 32-bit key is fetched as an 8-bit pass plus a 24-bit LSB pass with a Q.K recompute,
    # as every key wider than 8 bits is (docs/hwsim.md "Bit widths"); pinned to that direction.
    assert 1.5 < b.quantization_speedup < paper.PAPER["progressive_quantization_speedup"]
    assert b.topk_engine_speedup == pytest.approx(paper.PAPER["topk_engine_speedup"], rel=0.15)
