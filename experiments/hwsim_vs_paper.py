"""Ours vs the SpAtten paper: throughput, power, DRAM reduction and the speedup breakdown.

    SPATTEN_DATA_DIR=../shared/data python experiments/hwsim_vs_paper.py [--preset spatten] [--csv out.csv]
"""

from __future__ import annotations

import argparse

import pandas as pd

from spatten.atomic import atomic_write_text
from spatten.hwsim import paper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="spatten")
    parser.add_argument("--csv", help="also write the table here (atomically)")
    args = parser.parse_args()
    table = paper.paper_table(args.preset)
    with pd.option_context("display.max_colwidth", 200, "display.width", 250):
        print("| target | ours | paper | unit | ours/paper | within 15 % | why we differ |")
        print("|---|---:|---:|---|---:|---|---|")
        for r in table.itertuples():
            print(f"| {r.target} | {r.ours:.3g} | {r.paper:.3g} | {r.unit} | {r.ratio:.2f} | "
                  f"{'yes' if r.within_15pct else 'no'} | {'' if r.within_15pct else r.note} |")
    if args.csv:
        atomic_write_text(args.csv, table.to_csv(index=False))


if __name__ == "__main__":
    main()
