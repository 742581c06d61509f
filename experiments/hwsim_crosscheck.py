"""The simulator against its analytical reference on the official workloads (docs/hwsim.md, "Cross-check").

    SPATTEN_DATA_DIR=../shared/data python experiments/hwsim_crosscheck.py [--preset spatten]

Prints the markdown table of docs/hwsim.md section 7: max(DRAM, MAC) lower bound, simulated cycles and the
bert.cpp additive model, per official trace.
"""

from __future__ import annotations

import argparse

from spatten import hwsim
from spatten.hwsim import paper
from spatten.hwsim.crosscheck import cross_check
from spatten.trace import Trace

OFFICIAL = ("small.csv", "summary-gpt2-medium-ptb-per0.csv",
            "summary-gpt2-medium-wikitext2-per0-hp-step5+dedic+glob_p+local_p+hp+topk+quant.csv",
            "summary-gpt2-small-wikitext2-per8-step1+dedic.csv", "summary-gpt2-small-wikitext2-per8.csv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="spatten")
    args = parser.parse_args()
    print("| trace | rows | max(DRAM, MAC) | simulated | additive (bert.cpp) | sim / bound | sim / additive |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in OFFICIAL:
        trace = Trace.from_official_csv(paper.workloads_dir() / name)
        check = cross_check(trace, hwsim.simulate(trace, args.preset, dense_baseline=False))
        shown = name.replace("per0-hp-step5+dedic+glob_p+local_p+hp", "...")
        print(f"| {shown} | {len(trace.to_frame()):,} | {check.lower_bound:,.0f} | {check.simulated:,} | "
              f"{check.additive_cycles:,.0f} | {check.simulated / check.lower_bound:.2f} | "
              f"{check.simulated / check.additive_cycles:.2f} |")


if __name__ == "__main__":
    main()
