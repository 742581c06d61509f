"""Ours vs the SpAtten paper: throughput, power, DRAM reduction and the speedup breakdown.

    SPATTEN_DATA_DIR=../shared/data python experiments/hwsim_vs_paper.py [--preset spatten] [--csv out.csv]

The BERT rows of the table replay synthetic traces (spatten.hwsim.paper.bert_trace); the rows printed after it
replay traces recorded from a BERT-base-sized model patched with spatten.patch (random weights: the simulator
needs only what was kept, not what it means), at the same GLUE-like sentence lengths.
"""

from __future__ import annotations

import argparse

import statistics

import pandas as pd
import torch

import spatten
from spatten import hwsim
from spatten.atomic import atomic_write_text
from spatten.hwsim import paper
from spatten.testing import tiny_model


def patched_bert_reports(preset: str) -> list:
    """Simulated reports of traces recorded from a patched BERT-base-sized encoder, one per sentence length."""
    torch.manual_seed(0)
    model = tiny_model("bert", head="Model", layers=12, heads=12, hidden=768, intermediate_size=3072,
                       max_position_embeddings=512)
    # as the synthetic traces assume: token keep 0.5, head keep 10/12, static 8-bit K/V (paper.BERT_STATIC_BITS)
    config = spatten.SpAttenConfig(token_keep=0.5, head_keep=10 / 12, k_bits=(paper.BERT_STATIC_BITS, 0),
                                   v_bits=paper.BERT_STATIC_BITS)
    reports = []
    for length in paper.GLUE_LIKE_LENGTHS:
        ids = torch.randint(1, model.config.vocab_size, (1, length))
        with torch.no_grad(), spatten.patch(model, config) as handle:
            model(input_ids=ids)
        reports.append(hwsim.simulate(handle.trace, preset))
    return reports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="spatten")
    parser.add_argument("--csv", help="also write the table here (atomically)")
    args = parser.parse_args()
    table = paper.paper_table(args.preset)
    with pd.option_context("display.max_colwidth", 200, "display.width", 250):
        print("| target | ours | paper | unit | ours/paper | within 15 % | notes (why we differ, assumptions) |")
        print("|---|---:|---:|---|---:|---|---|")
        for r in table.itertuples():
            print(f"| {r.target} | {r.ours:.3g} | {r.paper:.3g} | {r.unit} | {r.ratio:.2f} | "
                  f"{'yes' if r.within_15pct else 'no'} | {r.note} |")
    reports = patched_bert_reports(args.preset)
    tflops = statistics.mean(r.flops_per_second for r in reports) / 1e12
    watts = statistics.mean(r.power_watts for r in reports)
    reduction = statistics.mean(r.dram_reduction_vs_dense for r in reports)
    print("\nTraces recorded from a patched BERT-base-sized model (token keep 0.5, head keep 10/12, "
          "GLUE-like lengths):\n")
    print("| target | ours | paper | ours/paper |")
    print("|---|---:|---:|---:|")
    print(f"| BERT summarization throughput (TFLOP/s) | {tflops:.3g} | {paper.PAPER['bert_tflops']} | "
          f"{tflops / paper.PAPER['bert_tflops']:.2f} |")
    print(f"| total power with DRAM (W) | {watts:.3g} | {paper.PAPER['power_w']} | {watts / paper.PAPER['power_w']:.2f} |")
    print(f"| DRAM reduction vs dense (x) | {reduction:.3g} | - | - |")
    if args.csv:
        atomic_write_text(args.csv, table.to_csv(index=False))


if __name__ == "__main__":
    main()
