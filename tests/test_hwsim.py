"""spatten.hwsim: the Python front end, the official workloads, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from spatten import hwsim
from spatten.hwsim import paper
from spatten.trace import Trace, TraceFormatError

SMALL = "summary-gpt2-small-wikitext2-per8.csv"
MEDIUM = "summary-gpt2-medium-wikitext2-per0-hp-step5+dedic+glob_p+local_p+hp+topk+quant.csv"
WORKLOADS = ["small.csv", "summary-gpt2-medium-ptb-per0.csv", MEDIUM,
             "summary-gpt2-small-wikitext2-per8-step1+dedic.csv", SMALL]


def tiny_trace(**changes) -> Trace:
    records = []
    for layer in range(2):
        for head in range(4):
            rec = dict(stage="generate", step=0, layer=layer, head=head, head_kept=True, d_head=64, query_rows=1,
                       kv_len=256, keys_fetched=128, values_fetched=32, k_msb_bits=8, k_lsb_bits=4, q_bits=-1,
                       v_bits=8, threshold=0.1, lsb_refetch_rows=head % 2, accumulate_importance=True,
                       rescale_importance=False, topk_kind="token" if head == 3 else "none",
                       topk_k=128 if head == 3 else -1)
            rec.update(changes)
            records.append(rec)
    return Trace.from_records(records, {"heads": 4})


def _tx_bytes(vectors: int, bits: int) -> int:
    return -(-vectors * bits // 256) * 32  # whole 32-byte transactions (6-bit pairs packed)


def _profile(bits: int) -> int:
    """The MatrixFetcher profile a width is stored in: 4, 6, 8, then whole bytes."""
    return 0 if bits == 0 else 4 if bits <= 4 else 6 if bits <= 6 else -(-bits // 8) * 8


def fetch_widths(k_msb: int, k_lsb: int, v: int) -> tuple[int, int, int, bool]:
    """TestSpAtten's request mapping (docs/hwsim.md): -1 is 12 bits; keys over 8 bits = 8-bit pass + forced LSB
    pass (4 bits up to 12); values of 9..12 bits at 8. Returns (K MSB bits, K LSB bits, V bits, LSB forced)."""
    k = 12 if k_msb < 0 else k_msb
    v = 12 if v < 0 else v
    v = 8 if 8 < v <= 12 else _profile(v)
    if k > 8:
        return 8, 4 if k <= 12 else _profile(k - 8), v, True
    return _profile(k), max(k_lsb, 0), v, False


def expected_bytes(frame: pd.DataFrame) -> tuple[int, int]:
    """(read, written) bytes computed here from the fetch counts with the 32-byte transaction rules."""
    read = written = 0
    for r in frame[frame["head_kept"]].itertuples():
        d = r.d_head
        kb, lsb, vb, forced = fetch_widths(r.k_msb_bits, r.k_lsb_bits, r.v_bits)
        read += _tx_bytes(r.keys_fetched * d, kb) + _tx_bytes(r.values_fetched * d, vb)
        if lsb and (forced or r.lsb_refetch_rows > 0):
            read += _tx_bytes(r.keys_fetched * d, lsb)
        if r.stage == "generate":  # the new token's K and V appended
            written += _tx_bytes(d, kb + lsb) + _tx_bytes(d, vb)
    return read, written


def test_presets_and_components_are_listed():
    assert {"spatten", "spatten-1/8", "dense"} <= set(hwsim.list_presets())
    names = dict(hwsim.components())
    for name in ("request-scheduler", "kv-fetcher", "crossbar", "hbm2-channel", "qk-unit", "softmax",
                 "requant-decision", "topk-engine", "pv-unit", "importance-accumulator", "energy-model"):
        assert names[name]


def test_report_contract():
    report = hwsim.simulate(tiny_trace())
    d = report.to_dict()
    for key in ("cycles", "seconds", "dram_bytes", "energy_joules", "flops", "speedup_vs_dense",
                "dram_reduction_vs_dense", "energy_reduction_vs_dense"):
        assert key in d
    assert d["seconds"] == pytest.approx(d["cycles"] / 1e9)
    # 8 heads x (128 keys x 2 tx + 32 values x 2 tx) + 4 refetching heads x 128 x 1 tx, 32 bytes each
    assert report.dram_bytes_read == 32 * (8 * (256 + 64) + 4 * 128)
    # each head appends its new K (12 bits: 3 tx) and V (8 bits: 2 tx)
    assert report.dram_bytes_written == 32 * 8 * (3 + 2)
    assert report.dram_bytes == report.dram_bytes_read + report.dram_bytes_written
    assert report.flops == 2 * 8 * (128 + 32) * 64
    assert isinstance(report.layers, pd.DataFrame) and list(report.layers["layer"]) == [0, 1]
    assert report.layers["cycles"].sum() == pytest.approx(report.cycles, rel=0.02)
    # dense: 256 keys at 8 + 4 bits (3 tx) and 256 values at 8 bits (2 tx) per head
    assert report.dense is not None and report.dense.dram_bytes_read == 8 * 256 * (3 + 2) * 32
    assert report.speedup_vs_dense == pytest.approx(report.dense.cycles / report.cycles)
    assert sum(report.energy_breakdown.values()) == pytest.approx(report.energy_joules)
    assert 0 < report.busy_fraction["hbm2-channel"] <= 1
    assert len(report.channels) == 16


def test_trace_and_file_give_the_same_report(workloads_dir, tmp_path):
    path = workloads_dir / SMALL
    from_file = hwsim.simulate(path, dense_baseline=False)
    from_trace = hwsim.simulate(Trace.from_official_csv(path), dense_baseline=False)
    native = tmp_path / "small.trace"
    Trace.from_official_csv(path).save(native)
    from_native = hwsim.simulate(native, dense_baseline=False)
    assert from_file.cycles == from_trace.cycles == from_native.cycles
    assert from_file.dram_bytes == from_trace.dram_bytes == from_native.dram_bytes


def test_deterministic_and_json_written_atomically(tmp_path):
    a, b = hwsim.simulate(tiny_trace()), hwsim.simulate(tiny_trace())
    assert a.to_dict() == b.to_dict()
    out = a.to_json(tmp_path / "r.json")
    assert json.loads(out.read_text())["cycles"] == a.cycles
    assert not list(tmp_path.glob(".*tmp"))


@pytest.mark.parametrize("name", WORKLOADS)
def test_official_workloads_match_their_fetch_counts(workloads_dir, name):
    trace = Trace.from_official_csv(workloads_dir / name)
    report = hwsim.simulate(trace)
    frame = trace.to_frame()
    assert (report.dram_bytes_read, report.dram_bytes_written) == expected_bytes(frame)
    assert report.dram_bytes_refetched == 0  # 1,024 tokens fit the buffers
    assert report.cycles > 0 and report.energy_joules > 0
    assert report.layers["requests"].sum() == len(frame)
    pruned = frame["keys_fetched"].sum() < frame["kv_len"].sum()
    if not pruned:  # the unpruned baselines run as their own dense twin
        assert report.dram_reduction_vs_dense == pytest.approx(1.0)
        assert report.speedup_vs_dense == pytest.approx(1.0)
    else:
        # dense = every head of every layer (pruned heads included), all kv_len tokens, unquantized: K as an
        # 8-bit pass plus a 4-bit LSB pass (3 tx), V at 8 bits (2 tx)
        heads = frame["head"].max() + 1
        groups = frame.groupby(["step", "layer"])["kv_len"].max()
        dense_bytes = int(sum((3 + 2) * kv * 32 for kv in groups) * heads)
        assert report.dense.dram_bytes_read == dense_bytes
        assert report.dense.dram_bytes_written == len(groups) * heads * (3 + 2) * 32
        assert report.dram_reduction_vs_dense == pytest.approx(report.dense.dram_bytes / report.dram_bytes)
        assert report.speedup_vs_dense > 2.0


def test_gpt2_small_dense_baseline_is_the_official_baseline_trace(workloads_dir):
    # 82.4 MB fetched (spatten-original.md 3.2). The dense baseline is what the official unpruned trace
    # (step1+dedic, all quant fields -1) fetches under TestSpAtten's mapping: 144 heads x sum(L = 993..1024)
    # tokens x (96 B of K + 64 B of V) = 743.5 MB.
    report = hwsim.simulate(workloads_dir / SMALL)
    assert report.dram_bytes_read == pytest.approx(82.44e6, rel=0.001)
    official_dense = 144 * sum(range(993, 1025)) * (96 + 64)
    assert official_dense == pytest.approx(743.5e6, rel=0.001)
    assert report.dense.dram_bytes_read == official_dense
    baseline = hwsim.simulate(workloads_dir / "summary-gpt2-small-wikitext2-per8-step1+dedic.csv",
                              dense_baseline=False)
    assert baseline.dram_bytes_read == official_dense and baseline.cycles == report.dense.cycles


def test_smaller_preset_and_overrides(workloads_dir):
    trace = tiny_trace()
    full = hwsim.simulate(trace, dense_baseline=False)
    eighth = hwsim.simulate(trace, "spatten-1/8", dense_baseline=False)
    assert eighth.dram_bytes == full.dram_bytes and eighth.cycles > full.cycles
    slow = hwsim.simulate(trace, dense_baseline=False, overrides={"hardware": {"topk_parallelism": 1}})
    assert slow.cycles > full.cycles


def test_bad_presets_raise_preset_error(tmp_path):
    with pytest.raises(hwsim.PresetError, match="unknown preset 'nope'"):
        hwsim.simulate(tiny_trace(), "nope")
    with pytest.raises(hwsim.PresetError, match="hardware.topk_parallelism"):
        hwsim.simulate(tiny_trace(), overrides={"hardware": {"topk_parallelism": -3}})
    broken = tmp_path / "p.yaml"
    broken.write_text("name: mine\nbase: spatten\nhardware: {clock_ghz: fast}\n")
    with pytest.raises(hwsim.PresetError, match="clock_ghz"):
        hwsim.simulate(tiny_trace(), preset_file=broken)


def test_bad_traces_raise_trace_errors(tmp_path):
    trace = tiny_trace()
    trace.rows.loc[3, "keys_fetched"] = 10**9
    with pytest.raises(TraceFormatError, match="trace row 3: keys_fetched"):
        hwsim.simulate(trace)
    trace = tiny_trace()
    trace.rows["kv_len"] = trace.rows["kv_len"].astype(float)
    trace.rows.loc[2, "kv_len"] = np.nan
    with pytest.raises(TraceFormatError, match="trace row 2: column kv_len"):
        hwsim.simulate(trace)
    trace = tiny_trace()
    trace.rows.loc[1, "stage"] = "decode"
    with pytest.raises(TraceFormatError, match="stage"):
        hwsim.simulate(trace)
    with pytest.raises(FileNotFoundError if False else TraceFormatError, match="not found"):
        hwsim.simulate(tmp_path / "missing.csv")
    with pytest.raises(TypeError):
        hwsim.simulate(42)


def test_topk_cycles_on_known_input():
    # 1..16, k = 4, P = 4: at least one pass of ceil(16/4) + 3 cycles, and a single comparator is slower
    cycles, passes = hwsim.topk_cycles(np.arange(1, 17), 4, 4)
    assert cycles >= 7 and passes >= 1
    assert hwsim.topk_cycles(np.arange(1, 17), 4, 1)[0] > cycles
    assert hwsim.topk_cycles([5, 5, 5, 5], 2, 4) == (4, 1)
    with pytest.raises(ValueError):
        hwsim.topk_cycles([-1, 2], 1, 4)


def test_bert_trace_follows_the_schedules():
    trace = paper.bert_trace(100)
    frame = trace.to_frame()
    per_layer = frame.groupby("layer").agg(tokens=("query_rows", "max"), heads=("head_kept", "sum"))
    assert list(per_layer["tokens"][:3]) == [100, 100, 100]  # first max(3, 15 %) layers unpruned
    assert per_layer["tokens"].is_monotonic_decreasing and per_layer["tokens"].iloc[-1] == 50
    assert list(per_layer["heads"][:4]) == [12] * 4  # first 30 % of layers keep every head
    assert per_layer["heads"].iloc[-1] == 10
    report = hwsim.simulate(trace)
    assert report.dram_reduction_vs_dense > 1.2 and report.speedup_vs_dense > 1.2


def run_cli(*args):
    return subprocess.run([sys.executable, "-c", "from spatten.hwsim.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=120)


def test_cli_table_json_and_errors(workloads_dir, tmp_path):
    out = run_cli(str(workloads_dir / "small.csv"), "--json", str(tmp_path / "r.json"))
    assert out.returncode == 0, out.stderr
    assert "speedup vs dense" in out.stdout and "hbm2-channel" in out.stdout
    assert json.loads((tmp_path / "r.json").read_text())["requests"] == 1
    listing = run_cli("--list")
    assert listing.returncode == 0 and "topk-engine" in listing.stdout
    bad = tmp_path / "bad.csv"
    bad.write_text((workloads_dir / "small.csv").read_text().replace("64.0", "sixty-four", 1))
    out = run_cli(str(bad))
    assert out.returncode == 2
    assert f"{bad}:2: column embedding_length_D" in out.stderr
    assert run_cli("--preset", "nope", str(workloads_dir / "small.csv")).returncode == 2
